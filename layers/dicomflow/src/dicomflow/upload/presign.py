"""The only place that talks S3 multipart and presigns URLs for the device.

Every URL carries the part's SHA-256 as a signed ``x-amz-checksum-sha256`` header: S3 in AWS
rejects a part whose bytes do not hash to it (``BadDigest``), so corruption in transit cannot land.
Multipart uploads are created with ``ChecksumAlgorithm=SHA256`` and SSE-KMS, so the storage computes
a composite SHA-256 of the parts it stored; moto computes it but does not check the per-part headers,
so :mod:`dicomflow.upload.service` compares that composite with the device's (see its docstring).

Single-PUT URLs also sign ``If-None-Match: *`` (S3's conditional write): once an object is at the
key, a replay of the URL is refused (412 ``PreconditionFailed``), so a completed file cannot be
overwritten; :meth:`S3Uploads.tombstone` closes the keys of an aborted scan the same way.

Errors come back as dicomflow's: :class:`TransientStorageError` (worth retrying),
:class:`ObjectNotFoundError` (no such upload or key) or :class:`StorageError`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

from dicomflow.errors import ObjectNotFoundError, StorageError, TransientStorageError
from dicomflow.privacy import fingerprint

_NOT_FOUND = {"NoSuchUpload", "NoSuchKey", "404", "NotFound"}
#: The tag on the empty object left at each single-PUT key of an aborted scan (a lifecycle rule may
#: expire such objects once every URL signed for them has expired: at most 7 days, SigV4's limit).
TOMBSTONE_TAG = ("dicomflow-tombstone", "aborted")
_TRANSIENT = {"SlowDown", "Throttling", "RequestTimeout", "InternalError", "ServiceUnavailable", "500", "503"}


def sha256_hex_to_b64(hex_digest: str) -> str:
    """S3's checksum header wants base64 of the digest; manifests carry hex.

    Examples
    --------
    >>> sha256_hex_to_b64("00" * 32)
    'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='
    """
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


@dataclass(frozen=True)
class PresignedRequest:
    """A URL and the headers the device must send with it (the signed ones)."""

    url: str
    headers: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "headers": self.headers}


@dataclass(frozen=True)
class UploadedPart:
    part_number: int
    size: int
    etag: str
    checksum_sha256: str | None = None


class S3Uploads:
    """Multipart uploads and presigned URLs in one bucket.

    Parameters
    ----------
    client
        A boto3 S3 client (SigV4). It also signs the URLs, so its endpoint is the one the device
        reaches: S3 in AWS, the embedded moto server (or a proxy in front of it) locally.
    bucket
        The ingest bucket.
    kms_key_id
        The SSE-KMS key for new uploads (None: the bucket's default encryption applies).
    """

    def __init__(self, client: Any, bucket: str, *, kms_key_id: str | None = None) -> None:
        self.client = client
        self.bucket = bucket
        self.kms_key_id = kms_key_id

    @property
    def _sse(self) -> dict[str, str]:
        if self.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        return {"ServerSideEncryption": "aws:kms"}

    def create(self, key: str) -> str:
        """Start a multipart upload (SHA-256 part checksums, SSE-KMS) and return its id."""
        try:
            response = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256", **self._sse
            )
        except Exception as exc:  # noqa: BLE001 - translated
            _raise(exc, "create multipart upload", key)
        return str(response["UploadId"])

    def presign_part(
        self, key: str, upload_id: str, part_number: int, sha256_hex: str, expires_s: int
    ) -> PresignedRequest:
        checksum = sha256_hex_to_b64(sha256_hex)
        url = self.client.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "UploadId": upload_id,
                "PartNumber": part_number,
                "ChecksumSHA256": checksum,
            },
            ExpiresIn=expires_s,
        )
        return PresignedRequest(url, _signed_headers(url, {"x-amz-checksum-sha256": checksum}))

    def presign_put(self, key: str, sha256_hex: str, expires_s: int) -> PresignedRequest:
        """A PutObject URL that only creates: it signs ``If-None-Match: *``, so S3 refuses it once an
        object is at the key (a completed file, or an aborted scan's tombstone)."""
        checksum = sha256_hex_to_b64(sha256_hex)
        headers = {
            "x-amz-checksum-sha256": checksum,
            "x-amz-server-side-encryption": "aws:kms",
            "if-none-match": "*",
        }
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "ChecksumSHA256": checksum,
            "IfNoneMatch": "*",
            **self._sse,
        }
        if self.kms_key_id:
            headers["x-amz-server-side-encryption-aws-kms-key-id"] = self.kms_key_id
        url = self.client.generate_presigned_url("put_object", Params=params, ExpiresIn=expires_s)
        return PresignedRequest(url, _signed_headers(url, headers))

    def list_parts(self, key: str, upload_id: str) -> list[UploadedPart]:
        parts: list[UploadedPart] = []
        marker = 0
        try:
            while True:
                response = self.client.list_parts(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
                )
                for item in response.get("Parts", []):
                    parts.append(
                        UploadedPart(
                            part_number=int(item["PartNumber"]),
                            size=int(item["Size"]),
                            etag=str(item["ETag"]),
                            checksum_sha256=item.get("ChecksumSHA256"),
                        )
                    )
                if not response.get("IsTruncated"):
                    return parts
                marker = int(response["NextPartNumberMarker"])
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "list parts", key)

    def complete(self, key: str, upload_id: str, parts: list[UploadedPart]) -> str:
        """Complete the upload from ``parts`` (as ListParts reported them); returns the ETag."""
        body = []
        for part in sorted(parts, key=lambda p: p.part_number):
            entry: dict[str, Any] = {"PartNumber": part.part_number, "ETag": part.etag}
            if part.checksum_sha256:  # S3 requires them when the upload has a checksum algorithm
                entry["ChecksumSHA256"] = part.checksum_sha256
            body.append(entry)
        try:
            # Creates only, like the single-PUT URLs: a completed file is never replaced.
            response = self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": body},
                IfNoneMatch="*",
            )
        except Exception as exc:  # noqa: BLE001
            if _code(exc) == "PreconditionFailed":
                # An object is already at the key (a concurrent completion won): that one stands and
                # is what the caller verifies; this upload is closed so nothing more lands in it.
                self.abort(key, upload_id)
                return ""
            _raise(exc, "complete multipart upload", key)
        return str(response.get("ETag", ""))

    def object_checksum(self, key: str) -> str | None:
        """The SHA-256 checksum S3 holds for the object (``<base64>-<parts>`` for a multipart one,
        computed by the storage from the bytes it stored), or None if it has none."""
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "head", key)
        value = response.get("ChecksumSHA256")
        return str(value) if value else None

    def sizes(self, prefix: str, *, start_after: str = "", last: str | None = None) -> dict[str, int]:
        """The size of every object under ``prefix`` whose key sorts after ``start_after`` and not
        after ``last`` (a file's keys sort by its position): one ListObjectsV2 page per 1000 keys,
        where a HEAD per object would cost a round trip each."""
        out: dict[str, int] = {}
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        try:
            while True:
                response = self.client.list_objects_v2(**kwargs)
                for item in response.get("Contents", []):
                    if last is not None and str(item["Key"]) > last:
                        return out
                    out[str(item["Key"])] = int(item["Size"])
                if not response.get("IsTruncated"):
                    return out
                kwargs["ContinuationToken"] = response["NextContinuationToken"]
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "list objects", prefix)

    def tombstone(self, key: str) -> None:
        """Leave an empty, tagged object at ``key`` in place of whatever is there: a single-PUT URL
        signed for it, which creates only, is then refused. The tombstone is itself a conditional
        create (a bucket policy may require ``If-None-Match`` on every PutObject under the files'
        prefix): what is there is deleted first, and a PUT that lands in between is deleted too."""
        for _ in range(5):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=b"",
                    IfNoneMatch="*",
                    Tagging=f"{TOMBSTONE_TAG[0]}={TOMBSTONE_TAG[1]}",
                    **self._sse,
                )
                return
            except Exception as exc:  # noqa: BLE001
                if _code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict"):
                    _raise(exc, "put tombstone", key)
        raise TransientStorageError(f"put tombstone on key {fingerprint(key)}: writes keep landing; retry")

    def abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:  # noqa: BLE001
            if _code(exc) in _NOT_FOUND:
                return  # already completed or aborted: nothing left to abort
            _raise(exc, "abort multipart upload", key)


def _signed_headers(url: str, candidates: dict[str, str]) -> dict[str, str]:
    """The headers among ``candidates`` that the URL's signature covers: the device must send
    exactly these (S3 refuses a request that lacks a signed header)."""
    query = parse_qs(urlsplit(url).query)
    signed = set(query.get("X-Amz-SignedHeaders", [""])[0].split(";"))
    return {name: value for name, value in candidates.items() if name in signed}


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _raise(exc: Exception, action: str, key: str) -> NoReturn:
    code = _code(exc)
    where = f"{action} on key {fingerprint(key)}"
    if code in _NOT_FOUND:
        raise ObjectNotFoundError(f"{where}: not found ({code})") from exc
    if code in _TRANSIENT or (code == "" and isinstance(exc, OSError | ConnectionError)):
        raise TransientStorageError(f"{where} failed ({code or type(exc).__name__}); retry") from exc
    if code == "":
        from botocore.exceptions import BotoCoreError  # connection errors, timeouts

        if isinstance(exc, BotoCoreError):
            raise TransientStorageError(f"{where} failed ({type(exc).__name__}); retry") from exc
    raise StorageError(f"{where} failed ({code or type(exc).__name__})") from exc
