"""An object store on one S3 bucket (boto3), with SSE-KMS on every write.

boto3 is imported lazily so that the domain package imports on machines without it (the device).
Errors are translated into dicomflow's: :class:`TransientStorageError` for what is worth retrying
(the workflow's Retry matches on that name), :class:`ObjectNotFoundError`, else :class:`StorageError`.
Keys appear in messages as fingerprints only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

from dicomflow.errors import InvalidInputError, ObjectNotFoundError, StorageError, TransientStorageError
from dicomflow.privacy import fingerprint
from dicomflow.storage.base import MIN_PART_SIZE

if TYPE_CHECKING:
    from botocore.client import BaseClient

_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
}


class S3ObjectStore:
    """Objects in ``bucket``. The client is created on first use (cheap Lambda cold starts).

    Parameters
    ----------
    bucket
        The bucket name.
    kms_key_id
        If given, every write asks for SSE-KMS with this key (the bucket default covers the rest).
    client
        A boto3 S3 client to use instead of creating one.
    endpoint_url, region
        Where to create the client (the embedded moto server locally).
    """

    def __init__(
        self,
        bucket: str,
        *,
        kms_key_id: str | None = None,
        client: BaseClient | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.kms_key_id = kms_key_id
        self._client = client
        self._endpoint_url = endpoint_url
        self._region = region

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self._endpoint_url,
                region_name=self._region,
                config=Config(retries={"mode": "standard", "max_attempts": 5}),
            )
        return self._client

    @property
    def _sse(self) -> dict[str, str]:
        if self.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        return {}

    def size(self, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except Exception as exc:  # noqa: BLE001 - translated below
            _raise(exc, "head", key)

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFoundError:
            return False
        return True

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise InvalidInputError(f"byte range [{start}, {end}) is not valid")
        if end == start:
            return b""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
            return bytes(response["Body"].read())
        except Exception as exc:  # noqa: BLE001
            if _code(exc) == "InvalidRange":  # start at or past the end: S3 says 416
                return b""
            _raise(exc, "get", key)

    def open_read(self, key: str) -> BinaryIO:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "get", key)

    def iter_chunks(self, key: str, chunk_size: int = 8 * 1024 * 1024) -> Iterator[bytes]:
        body = self.open_read(key)
        try:
            while chunk := body.read(chunk_size):
                yield chunk
        finally:
            body.close()

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str | None = None) -> None:
        extra: dict[str, str] = dict(self._sse)
        if content_type:
            extra["ContentType"] = content_type
        try:
            if isinstance(data, bytes | bytearray | memoryview):
                self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data), **extra)
            else:
                self.client.upload_fileobj(data, self.bucket, key, ExtraArgs=extra or None)
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "put", key)

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                for item in page.get("Contents", []):
                    yield item["Key"]
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "list", prefix)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "delete", key)

    def can_copy_from(self, other: object) -> bool:
        """Whether :meth:`_S3MultipartWriter.copy_part` may read ``other``'s objects server side
        (UploadPartCopy from another bucket): ``other`` is an S3 store on the same endpoint. The
        caller's credentials must be allowed to read it (in AWS: the function's role)."""
        if not isinstance(other, S3ObjectStore):
            return False
        return other is self or other.client.meta.endpoint_url == self.client.meta.endpoint_url

    def sha256(self, key: str) -> str:
        """The object's SHA-256 (hex), computed by S3, not by this process: the object is copied
        onto itself with ``ChecksumAlgorithm=SHA256`` (CopyObject, server side, up to 5 GiB), which
        gives a full-object checksum even when the object was assembled from parts."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
            extra: dict[str, str] = dict(self._sse)
            if head.get("ContentType"):
                extra["ContentType"] = head["ContentType"]
            response = self.client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                MetadataDirective="REPLACE",
                Metadata=head.get("Metadata", {}),
                ChecksumAlgorithm="SHA256",
                **extra,
            )
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "checksum", key)
        value = response.get("CopyObjectResult", {}).get("ChecksumSHA256")
        if not value or "-" in value:
            raise StorageError(f"S3 gave no full-object SHA-256 for object {fingerprint(key)}")
        import base64

        return base64.b64decode(value).hex()

    def tags(self, key: str) -> dict[str, str]:
        """The object's tags."""
        try:
            response = self.client.get_object_tagging(Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "get tags", key)
        return {t["Key"]: t["Value"] for t in response.get("TagSet", [])}

    def add_tags(self, key: str, tags: dict[str, str]) -> None:
        """Set ``tags`` on the object, keeping its other tags (S3 replaces the whole set)."""
        merged = {**self.tags(key), **tags}
        try:
            self.client.put_object_tagging(
                Bucket=self.bucket,
                Key=key,
                Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in sorted(merged.items())]},
            )
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "put tags", key)

    @contextmanager
    def multipart_put(self, key: str) -> Iterator[_S3MultipartWriter]:
        try:
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **self._sse)[
                "UploadId"
            ]
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "create multipart upload", key)
        writer = _S3MultipartWriter(self, key, upload_id)
        try:
            yield writer
            writer.complete()
        except BaseException:
            # If abort fails too, the bucket's lifecycle rule cleans the incomplete upload.
            with suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise


class _S3MultipartWriter:
    def __init__(self, store: S3ObjectStore, key: str, upload_id: str) -> None:
        self._store = store
        self._key = key
        self._upload_id = upload_id
        self._parts: list[dict[str, Any]] = []
        self._last_part_size: int | None = None

    def _next(self, size: int) -> int:
        # S3 (unlike moto before complete) rejects small non-last parts; fail early and alike.
        if self._last_part_size is not None and self._last_part_size < MIN_PART_SIZE:
            raise StorageError(
                f"a part of {self._last_part_size} bytes is not the last one; S3 needs every part "
                f"but the last to be at least {MIN_PART_SIZE} bytes"
            )
        self._last_part_size = size
        return len(self._parts) + 1

    def upload_part(self, data: bytes) -> None:
        number = self._next(len(data))
        client = self._store.client
        try:
            response = client.upload_part(
                Bucket=self._store.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=data,
            )
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "upload part", self._key)
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})

    def copy_part(self, source_key: str, start: int, end: int, *, source_bucket: str | None = None) -> None:
        """Append bytes ``[start, end)`` of ``source_key`` (in ``source_bucket``, by default this
        store's bucket: UploadPartCopy reads any bucket the caller may read) as the next part."""
        if start < 0 or end <= start:
            raise InvalidInputError(f"copy range [{start}, {end}) is not valid")
        number = self._next(end - start)
        client = self._store.client
        try:
            response = client.upload_part_copy(
                Bucket=self._store.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                CopySource={"Bucket": source_bucket or self._store.bucket, "Key": source_key},
                CopySourceRange=f"bytes={start}-{end - 1}",
            )
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "copy part", source_key)
        self._parts.append({"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]})

    def complete(self) -> None:
        if not self._parts:
            raise StorageError("a multipart object needs at least one part")
        try:
            self._store.client.complete_multipart_upload(
                Bucket=self._store.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "complete multipart upload", self._key)


def _code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        code = error.get("Code")
        if code is None:
            code = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return str(code)
    return None


def _raise(exc: Exception, action: str, key: str) -> NoReturn:
    """Translate a boto3/botocore exception into dicomflow's hierarchy, keeping the key out."""
    from botocore.exceptions import BotoCoreError, ConnectionError, ReadTimeoutError

    ref = fingerprint(key)
    code = _code(exc)
    if code in _NOT_FOUND:
        raise ObjectNotFoundError(f"S3 {action}: object {ref} does not exist") from exc
    if code in _TRANSIENT or isinstance(exc, ConnectionError | ReadTimeoutError):
        raise TransientStorageError(
            f"S3 {action} of object {ref} failed ({code or type(exc).__name__}); retry"
        ) from exc
    if code is not None or isinstance(exc, BotoCoreError):
        raise StorageError(f"S3 {action} of object {ref} failed ({code or type(exc).__name__})") from exc
    raise exc
