"""The upload API's logic: plan a scan's upload, hand out part URLs, complete files and the scan,
report progress, abort.

The handler parses HTTP and calls one method here; this module orchestrates the scans table
(:mod:`~dicomflow.upload.scans_table`), S3 multipart (:mod:`~dicomflow.upload.presign`), the object
store and the processing hand-off (:mod:`~dicomflow.upload.processing`). Files are addressed by their
position in the manifest, never by name in a URL: a device's file names can carry patient data and
URLs end up in access logs. For the same reason object keys carry no name either
(:meth:`UploadService.object_key`: the scan id, the position and a prefix of the file's SHA-256); the
manifest written at completion (KMS-encrypted, next to the data) maps each name to its ``key``.

Once a file is complete its object is immutable, and an aborted scan accepts nothing:

- Part URLs are presigned only while the scan uploads and the file is not complete. A part URL
  handed out earlier dies with its multipart upload: S3 answers ``NoSuchUpload`` to an UploadPart
  on an upload that was completed or aborted (the local S3 proxy does the same; moto alone answers
  500).
- A single-PUT URL signs ``If-None-Match: *``: S3 refuses it (412) once an object is at the key, so
  a replay cannot overwrite a completed file. Aborting a scan leaves an empty, tagged tombstone at
  each single-PUT key (``TOMBSTONE_TAG``) so that URLs still within their expiry cannot land either.

Integrity, end to end (moto checks no checksum, so the pipeline must):

1. Every presigned URL signs the part's SHA-256 (``x-amz-checksum-sha256``): S3 in AWS refuses a
   part whose bytes differ (the local S3 proxy does the same in tests; moto alone does not).
2. Completing a file checks every part is there with the size the plan expects, then compares the
   storage's own SHA-256 of what it holds with the device's: with ``verify="parts"`` (the default)
   the object's composite checksum, which S3 (and moto) compute from the stored part bytes at
   CompleteMultipartUpload, against the composite of the part SHA-256s the device sends (hashed in
   the same read as the manifest's SHA-256); single-PUT files (at most one part) are streamed and
   compared with the manifest's SHA-256 outright. With ``verify="sha256"`` every object is streamed
   and compared with the manifest (costs a read of the object: fine locally, too slow for a 5 GiB
   file within API Gateway's 29 s). With ``verify="storage"``, for a storage that enforces the
   signed checksum (S3; locally, moto behind the S3 proxy, never moto alone), multipart files are
   checked as with ``"parts"`` and single-PUT files are not read back: one listing of their keys
   shows each is there with the manifest's size, which, since every URL for the key signs the
   manifest's SHA-256 and creates only, means it holds the manifest's bytes (a wrong body was
   refused at the PUT). A mismatch discards the object, restarts the file's upload and answers
   409 ``checksum_mismatch``: the device sends that file again; nothing wrong is accepted.
3. The validator (workflow) re-checks every file's SHA-256 against the manifest.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dicomflow.errors import InvalidInputError, ManifestError, ObjectNotFoundError, TransientStorageError
from dicomflow.manifest import ManifestLimits, ScanManifest, check_identifier
from dicomflow.status import ScanStatus
from dicomflow.storage.base import ObjectStore
from dicomflow.upload.parts import (
    DEFAULT_PART_SIZE,
    choose_part_size,
    is_single_put,
    part_count,
    part_range,
    part_size_is_valid,
)
from dicomflow.upload.presign import S3Uploads, UploadedPart
from dicomflow.upload.processing import ScanProcessor
from dicomflow.upload.scans_table import ScansTable

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
ABORT_REASON = "aborted by the device"
#: Hex digits of a file's SHA-256 in its object key: enough to tell instances apart at a glance,
#: while the position keeps keys unique within a scan.
KEY_HASH_CHARS = 16
#: A claim on starting processing older than this, with no start recorded, is retried (a crash).
PROCESSING_RETRY_AFTER_S = 60


class ScanNotFoundError(InvalidInputError):
    """No such scan or file (HTTP 404)."""

    http_status = 404
    code = "not_found"


class UploadConflictError(InvalidInputError):
    """The request does not fit the scan's state (HTTP 409); the message says what to do."""

    http_status = 409
    code = "conflict"


class ChecksumMismatchError(UploadConflictError):
    """The uploaded bytes do not hash to the manifest's SHA-256; the file must be uploaded again."""

    code = "checksum_mismatch"


class PayloadTooLargeError(InvalidInputError):
    """A request or manifest over a limit (HTTP 413)."""

    http_status = 413
    code = "too_large"


@dataclass(frozen=True)
class UploadConfig:
    """The API's limits and choices (from :class:`~dicomflow.settings.Settings`)."""

    prefix: str = "scans/"
    url_expiry_s: int = 900
    part_size: int = DEFAULT_PART_SIZE
    limits: ManifestLimits = field(default_factory=ManifestLimits)
    max_plan_urls: int = 10_000  # URLs in one POST /scans answer; the rest via .../parts
    max_plan_bytes: int = 5 * 1024 * 1024  # the answer's size, under Lambda's 6 MB response limit
    max_urls_per_request: int = 100
    max_files_per_complete: int = 100  # files in one POST /scans/{id}/files/complete
    max_files_per_status: int = 2_000  # files in one GET /scans/{id}?files_from=N answer
    max_body_bytes: int = 6 * 1024 * 1024  # Lambda's synchronous payload limit
    verify: str = "parts"  # or "sha256": see the module docstring
    verify_workers: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.url_expiry_s <= 7 * 24 * 3600:
            raise InvalidInputError("presigned URL expiry must be 1 s to 7 days (SigV4's limit)")
        if self.verify not in ("parts", "sha256", "storage"):
            raise InvalidInputError("upload verify must be 'parts', 'sha256' or 'storage'")


class UploadService:
    """Everything behind the upload API's routes.

    Parameters
    ----------
    table, uploads, store
        The scans table, S3 multipart of the ingest bucket, and an object store on the same bucket.
    processor
        Who processes a scan once it is uploaded.
    config
        Limits and choices.
    """

    def __init__(
        self,
        *,
        table: ScansTable,
        uploads: S3Uploads,
        store: ObjectStore,
        processor: ScanProcessor,
        config: UploadConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.uploads = uploads
        self.store = store
        self.processor = processor
        self.config = config or UploadConfig()
        self.clock = clock

    # -- POST /scans --------------------------------------------------------------------------------

    def create_scan(self, body: bytes | str) -> dict[str, Any]:
        """Validate the manifest, record the scan (UPLOADING), start one upload per file, plan it.

        The body is the manifest, or ``{"manifest": ..., "part_size": N, "part_sha256": [[hex, ...],
        ...]}`` where a device proposes its part size and gives the SHA-256 of the first parts of each
        file it hashed while building the manifest: those get their URLs in this answer.
        """
        if len(body) > self.config.max_body_bytes:
            raise PayloadTooLargeError(
                f"the request body is {len(body)} bytes, over the limit of {self.config.max_body_bytes}; "
                "split the scan into several scans"
            )
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"the request body is not valid JSON ({exc.__class__.__name__})") from None
        envelope = isinstance(data, dict) and "manifest" in data
        if envelope:
            unknown = set(data) - {"manifest", "part_size", "part_sha256"}
            if unknown:
                raise ManifestError(
                    f"the request has unknown fields: {', '.join(sorted(map(str, unknown)))}; "
                    "allowed: manifest, part_size, part_sha256"
                )
        manifest_data = data["manifest"] if envelope else data
        if isinstance(manifest_data, dict) and manifest_data.get("scan_id") is not None:
            raise ManifestError("scan_id is assigned by the server; leave it out of the request")
        manifest = self._parse_manifest(manifest_data)
        proposed = data.get("part_size") if envelope else None
        if proposed is not None and (not isinstance(proposed, int) or isinstance(proposed, bool)):
            raise ManifestError("part_size must be a whole number of bytes")
        hashes = self._parse_part_hashes(data.get("part_sha256") if envelope else None, len(manifest.files))

        scan_id = _new_scan_id(self.clock())
        manifest = manifest.with_scan_id(scan_id)
        now = _iso(self.clock())
        files: list[dict[str, Any]] = []
        for index, item in enumerate(manifest.files):
            size = self._part_size_for(item.size, proposed)
            single = is_single_put(item.size, size)
            key = self.object_key(scan_id, index, item.sha256)
            files.append(
                {
                    "item": f"file#{index:05d}",
                    "index": index,
                    "name": item.name,
                    "size": item.size,
                    "sha256": item.sha256,
                    "part_size": item.size if single else size,
                    "part_count": 1 if single else part_count(item.size, size),
                    "method": "single" if single else "multipart",
                    "key": key,
                    "state": "uploading",
                    "upload_id": "single" if single else self.uploads.create(key),
                }
            )
        scan = {
            "item": "scan",
            "status": str(ScanStatus.UPLOADING),
            "device_id": manifest.device_id,
            "scan_type": manifest.scan_type.value,
            "file_count": len(files),
            "total_size": manifest.total_size,
            "created_at": now,
            "updated_at": now,
            "device_settings": json.dumps(manifest.device_settings.to_dict()),
        }
        self.table.create_scan({"scan_id": scan_id, **scan}, files)

        # URLs for as many parts as fit the answer: Lambda's 6 MB response limit bounds it (in bytes,
        # since a URL's length depends on the key and, in AWS, the role's session token), and so does
        # the count; what does not fit is asked for later (.../parts).
        budget = self.config.max_plan_urls
        room = self.config.max_plan_bytes - len(json.dumps([_file_view(r) for r in files]))
        planned = []
        for record in files:
            urls: list[dict[str, Any]] = []
            if record["method"] == "single":
                wanted = [(1, record["sha256"])]
            else:
                known = hashes[record["index"]] if hashes else []
                if record["part_size"] != proposed or len(known) > record["part_count"]:
                    known = []  # hashed with another part size: the device asks for URLs later
                wanted = list(enumerate(known, start=1))
            for number, sha in wanted[:budget]:
                url = self._presign(record, number, sha)
                room -= len(json.dumps(url)) + 2
                if room < 0:
                    budget = 0
                    break
                urls.append(url)
            budget -= len(urls)
            planned.append(_file_view(record) | {"urls": urls})
        return {
            "scan_id": scan_id,
            "status": str(ScanStatus.UPLOADING),
            "url_expiry_s": self.config.url_expiry_s,
            "files": planned,
        }

    # -- POST /scans/{id}/files/{index}/parts ------------------------------------------------------

    def part_urls(self, scan_id: str, index: str | int, body: bytes | str) -> dict[str, Any]:
        """Fresh presigned URLs for the parts asked for, each with its SHA-256 signed in.

        Body: ``{"parts": [{"part_number": 1, "sha256": "<hex>"}, ...]}``.
        """
        scan = self._scan(scan_id)
        self._require_uploading(scan)
        record = self._file(scan_id, index)
        if record["state"] == "complete":
            raise UploadConflictError(f"files[{record['index']}] is already complete; nothing to upload")
        data = _json_body(body)
        parts = data.get("parts") if isinstance(data, dict) else None
        if not isinstance(parts, list) or not parts:
            raise InvalidInputError('the body must be {"parts": [{"part_number": n, "sha256": hex}, ...]}')
        if len(parts) > self.config.max_urls_per_request:
            raise PayloadTooLargeError(
                f"{len(parts)} parts asked for, over the limit of "
                f"{self.config.max_urls_per_request} a request"
            )
        urls = []
        for i, part in enumerate(parts):
            if not isinstance(part, dict):
                raise InvalidInputError(f"parts[{i}] must be an object with part_number and sha256")
            number, sha = part.get("part_number"), part.get("sha256")
            if (
                not isinstance(number, int)
                or isinstance(number, bool)
                or not 1 <= number <= record["part_count"]
            ):
                raise InvalidInputError(f"parts[{i}].part_number must be 1..{record['part_count']}")
            if not isinstance(sha, str) or not _HEX64.match(sha):
                raise InvalidInputError(f"parts[{i}].sha256 must be 64 lowercase hexadecimal characters")
            if record["method"] == "single" and sha != record["sha256"]:
                raise ChecksumMismatchError(
                    f"files[{record['index']}]: this SHA-256 is not the manifest's; the file changed on "
                    "the device since the manifest was built: start a new scan"
                )
            urls.append(self._presign(record, number, sha))
        return {
            "scan_id": scan_id,
            "file": _file_view(record),
            "url_expiry_s": self.config.url_expiry_s,
            "urls": urls,
        }

    # -- GET /scans/{id}/files/{index} --------------------------------------------------------------

    def file_status(self, scan_id: str, index: str | int) -> dict[str, Any]:
        """A file's state and, while it uploads, the parts S3 has (what a resuming device skips)."""
        self._scan(scan_id)
        record = self._file(scan_id, index)
        view = _file_view(record)
        parts: list[dict[str, Any]] = []
        if record["state"] != "complete" and record["method"] == "multipart":
            try:
                listed = self.uploads.list_parts(record["key"], record["upload_id"])
            except ObjectNotFoundError:
                listed = []
            parts = [{"part_number": p.part_number, "size": p.size, "etag": p.etag} for p in listed]
        return view | {"parts": parts}

    # -- POST /scans/{id}/files/{index}/complete ---------------------------------------------------

    def complete_file(self, scan_id: str, index: str | int, body: bytes | str = b"") -> dict[str, Any]:
        """Complete a file's upload and verify it. Idempotent: a complete file is answered as is.

        Body (multipart files): ``{"part_sha256": ["<hex>", ...]}``, every part's SHA-256 in order.
        """
        scan = self._scan(scan_id)
        record = self._file(scan_id, index)
        if record["state"] == "complete":
            return _file_view(record)
        self._require_uploading(scan)
        hashes = None
        if record["method"] == "multipart" and self.config.verify != "sha256":
            data = _json_body(body)
            hashes = data.get("part_sha256") if isinstance(data, dict) else None
            if (
                not isinstance(hashes, list)
                or len(hashes) != record["part_count"]
                or not all(isinstance(h, str) and _HEX64.match(h) for h in hashes)
            ):
                raise InvalidInputError(
                    f'the body must be {{"part_sha256": [...]}} with the SHA-256 (hex) of each of the '
                    f"{record['part_count']} parts, in order"
                )
        if record["method"] == "single" and self.config.verify == "storage":
            result = self._complete_many(scan_id, [record])[0]
            if isinstance(result, Exception):
                raise result
            return result
        return self._complete_file(scan_id, record, hashes)

    # -- POST /scans/{id}/files/complete ------------------------------------------------------------

    def complete_files(self, scan_id: str, body: bytes | str) -> dict[str, Any]:
        """Complete and verify many files in one request (a scan of many small files would otherwise
        cost a request, two reads and a write per file). Each file is answered on its own: its view
        once complete, else ``{"index", "error", "message"}`` with the code and reason
        :meth:`complete_file` would have given (a ``checksum_mismatch`` file was discarded and its
        upload restarted: send it again). Idempotent, as :meth:`complete_file` is.

        Body: ``{"files": [{"index": 0}, {"index": 3, "part_sha256": ["<hex>", ...]}, ...]}`` (at most
        ``max_files_per_complete``; ``part_sha256`` as for :meth:`complete_file`, for multipart files).
        """
        data = _json_body(body)
        entries = data.get("files") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not entries:
            raise InvalidInputError('the body must be {"files": [{"index": n}, ...]}')
        limit = self.config.max_files_per_complete
        if len(entries) > limit:
            raise PayloadTooLargeError(
                f"{len(entries)} files to complete, over the limit of {limit} a request"
            )
        wanted: dict[int, list[str] | None] = {}
        for i, entry in enumerate(entries):
            index = entry.get("index") if isinstance(entry, dict) else None
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 100_000:
                raise InvalidInputError(f"files[{i}] must be an object whose index is a file's position")
            if index in wanted:
                raise InvalidInputError(f"files[{i}]: index {index} is listed twice")
            hashes = entry.get("part_sha256")
            if hashes is not None and (
                not isinstance(hashes, list)
                or not all(isinstance(h, str) and _HEX64.match(h) for h in hashes)
            ):
                raise InvalidInputError(f"files[{i}].part_sha256 must be a list of SHA-256 (hex)")
            wanted[index] = hashes
        scan = self._scan(scan_id)
        records = self.table.get_files(scan_id, wanted)
        missing = sorted(set(wanted) - set(records))
        if missing:
            raise ScanNotFoundError(f"scan {scan_id} has no files[{missing[0]}]")
        if any(r["state"] != "complete" for r in records.values()):
            self._require_uploading(scan)
        results = self._complete_many(scan_id, [records[i] for i in wanted], wanted)
        return {
            "scan_id": scan_id,
            "files": [_result_view(i, r) for i, r in zip(wanted, results, strict=True)],
        }

    def _complete_many(
        self,
        scan_id: str,
        records: Sequence[dict[str, Any]],
        part_hashes: Mapping[int, list[str] | None] | None = None,
    ) -> list[dict[str, Any] | Exception]:
        """Complete and verify the files in parallel; returns, in order, each file's view or the
        exception that refused it. (Each file keeps its own conditional write: a DynamoDB transaction
        of 100 would save round trips in AWS, but moto copies the whole table for every one.)"""
        hashes = part_hashes or {}
        out: dict[int, dict[str, Any] | Exception] = {}
        if self.config.verify == "storage":
            singles = [r for r in records if r["method"] == "single" and r["state"] != "complete"]
            out.update(self._complete_stored_singles(scan_id, singles))

        def one(record: dict[str, Any]) -> dict[str, Any] | Exception:
            if record["index"] in out:
                return out[record["index"]]
            if record["state"] == "complete":
                return _file_view(record)
            given = hashes.get(record["index"])
            if (
                record["method"] == "multipart"
                and self.config.verify != "sha256"
                and (given is None or len(given) != record["part_count"])
            ):
                return InvalidInputError(
                    f"files[{record['index']}] needs part_sha256: the SHA-256 (hex) of each of its "
                    f"{record['part_count']} parts, in order"
                )
            return _capture(lambda: self._complete_file(scan_id, record, given))

        rest = [r for r in records if r["index"] not in out]
        if len(rest) <= 1:
            return [one(r) for r in records]
        workers = max(1, min(self.config.verify_workers, len(rest)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, records))

    def _complete_stored_singles(
        self, scan_id: str, records: Sequence[dict[str, Any]]
    ) -> dict[int, dict[str, Any] | Exception]:
        """``verify="storage"``: complete single-PUT files from one listing of their keys, with no
        read-back. Sound only where storage refuses a body that does not hash to the signed
        ``x-amz-checksum-sha256`` (S3; locally, the S3 proxy): every URL for a file's key signs the
        manifest's SHA-256 and creates only, so an object there of the manifest's size holds the
        manifest's bytes. Each file gets its view, or the error its own completion would get; the
        complete ones are written in batches (an object at the key never changes, so no condition
        is needed: nothing can race the write but an abort, after which the scan accepts nothing)."""
        if not records:
            return {}
        files_prefix = f"{self._scan_prefix(scan_id)}files/"
        first = min(r["index"] for r in records)
        last = max(r["index"] for r in records)
        sizes = self.uploads.sizes(
            files_prefix, start_after=f"{files_prefix}{first:05d}", last=f"{files_prefix}{last:05d}~"
        )
        out: dict[int, dict[str, Any] | Exception] = {}
        done: list[dict[str, Any]] = []
        now = _iso(self.clock())
        for record in records:
            where = f"files[{record['index']}]"
            size = sizes.get(record["key"])
            if size is None:
                out[record["index"]] = UploadConflictError(
                    f"{where} has not been uploaded yet: PUT it to its presigned URL, then complete it"
                )
            elif size != record["size"]:
                try:
                    self._restart_file(scan_id, record)
                    out[record["index"]] = ChecksumMismatchError(
                        f"{where}: the uploaded object has {size} bytes, the manifest says "
                        f"{record['size']}; it was discarded: upload the file again"
                    )
                except Exception as exc:  # noqa: BLE001 - answered for this file alone
                    out[record["index"]] = exc
            else:
                complete = record | {"state": "complete", "completed_at": now}
                done.append(complete)
                out[record["index"]] = _file_view(complete)
        self.table.put_files(scan_id, done)
        return out

    def _complete_file(
        self, scan_id: str, record: dict[str, Any], part_hashes: list[str] | None = None
    ) -> dict[str, Any]:
        self._verify_file(scan_id, record, part_hashes)
        done = {"state": "complete", "completed_at": _iso(self.clock())}
        self.table.update_file(scan_id, record["index"], expect_upload_id=record["upload_id"], values=done)
        return _file_view(record | done)

    def _verify_file(
        self, scan_id: str, record: dict[str, Any], part_hashes: list[str] | None = None
    ) -> dict[str, Any]:
        """Complete the storage side of the file and check its bytes (see the module docstring);
        a mismatch discards the object, restarts the file's upload and raises
        :class:`ChecksumMismatchError`."""
        where = f"files[{record['index']}]"
        key = record["key"]
        if record["method"] == "multipart":
            try:
                listed = self.uploads.list_parts(key, record["upload_id"])
            except ObjectNotFoundError:
                listed = None  # completed by a concurrent call (or aborted): look at the object
            if listed is not None:
                self._check_parts(record, listed)
                # NoSuchUpload: a concurrent call completed it first; the object is checked below.
                with contextlib.suppress(ObjectNotFoundError):
                    self.uploads.complete(key, record["upload_id"], listed)
        missing = UploadConflictError(
            f"{where} has not been uploaded yet: PUT it to its presigned URL, then complete it"
        )
        stored = digest = None
        size = -1
        try:
            if record["method"] == "multipart" and part_hashes is not None:
                size = self.store.size(key)
                stored = self.uploads.object_checksum(key) if size == record["size"] else None
            if stored is None and size in (-1, record["size"]):
                # One GET gives both the size and the SHA-256 (no HEAD first: a round trip per file
                # counts when a scan is 1500 small files).
                digest, size = _sha256_and_size(self.store, key)
        except ObjectNotFoundError:
            raise missing from None
        if size != record["size"]:
            self._restart_file(scan_id, record)
            raise ChecksumMismatchError(
                f"{where}: the uploaded object has {size} bytes, the manifest says {record['size']}; "
                "it was discarded: upload the file again"
            )
        if stored is not None and part_hashes is not None:
            if not _same_checksum(stored, composite_sha256(part_hashes)):
                self._restart_file(scan_id, record)
                raise ChecksumMismatchError(
                    f"{where}: the stored parts do not hash to the part SHA-256s the device computed; "
                    "the object was discarded and the file's upload restarted: upload the file again"
                )
        elif digest != record["sha256"]:
            self._restart_file(scan_id, record)
            raise ChecksumMismatchError(
                f"{where}: the uploaded bytes do not match the manifest's SHA-256; the object was "
                "discarded and the file's upload restarted: upload the file again (if the file "
                "changed on the device after the manifest was built, start a new scan)"
            )
        return record

    def _check_parts(self, record: dict[str, Any], listed: Sequence[UploadedPart]) -> None:
        where = f"files[{record['index']}]"
        have = {p.part_number: p for p in listed}
        missing = [n for n in range(1, record["part_count"] + 1) if n not in have]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise UploadConflictError(
                f"{where} lacks {len(missing)} of {record['part_count']} parts ({shown}): upload them, "
                "then complete the file again"
            )
        extra = sorted(n for n in have if n > record["part_count"])
        if extra:
            raise UploadConflictError(f"{where} has parts past its last ({extra[0]}...); start a new scan")
        for number in range(1, record["part_count"] + 1):
            start, end = part_range(record["size"], record["part_size"], number)
            if have[number].size != end - start:
                raise UploadConflictError(
                    f"{where} part {number} has {have[number].size} bytes, the plan says {end - start}: "
                    "upload that part again, then complete the file"
                )

    def _restart_file(self, scan_id: str, record: dict[str, Any]) -> None:
        """Discard what was uploaded for the file and give it a fresh upload (a recoverable state)."""
        self.store.delete(record["key"])
        if record["method"] == "multipart":
            self.uploads.abort(record["key"], record["upload_id"])
            new_id = self.uploads.create(record["key"])
        else:
            new_id = f"single-{secrets.token_hex(4)}"
        self.table.update_file(
            scan_id,
            record["index"],
            expect_upload_id=record["upload_id"],
            values={"upload_id": new_id, "restarted_at": _iso(self.clock())},
        )

    # -- POST /scans/{id}/complete -----------------------------------------------------------------

    def complete_scan(self, scan_id: str) -> dict[str, Any]:
        """Check every file, write the manifest next to the data, move the scan to UPLOADED and hand
        it to processing, once. A repeated (or concurrent) call is answered, not repeated."""
        scan = self._scan(scan_id)
        status = ScanStatus(scan["status"])
        if status is ScanStatus.UPLOADING:
            files = self.table.files(scan_id, _file_count(scan))
            self._complete_remaining(scan_id, files)
            manifest = self._manifest_of(scan, files)
            manifest_key = self.manifest_key(scan_id)
            self.store.put(
                manifest_key, stored_manifest_json(manifest, files), content_type="application/json"
            )
            now = _iso(self.clock())
            won = self.table.transition(
                scan_id,
                ScanStatus.UPLOADING,
                ScanStatus.UPLOADED,
                {
                    "manifest_key": manifest_key,
                    "uploaded_at": now,
                    "processing_claimed_at": int(self.clock()),
                },
            )
            if won:
                self._start_processing(scan_id, manifest_key)
                return self._completion(scan_id, already=False)
            scan = self._scan(scan_id)
            status = ScanStatus(scan["status"])
        if status is ScanStatus.FAILED:
            raise UploadConflictError(
                f"scan {scan_id} has FAILED ({scan.get('reason', 'no reason recorded')}); "
                "upload it as a new scan"
            )
        if status is ScanStatus.REJECTED:
            raise UploadConflictError(f"scan {scan_id} was REJECTED ({scan.get('reason', '')})")
        # UPLOADED or later: answered. A start that a crash lost is retried after a grace period.
        if (
            "processing_started_at" not in scan
            and int(self.clock()) - int(scan.get("processing_claimed_at", 0)) > PROCESSING_RETRY_AFTER_S
            and self.table.set_scan_values(scan_id, {"processing_claimed_at": int(self.clock())})
        ):
            self._start_processing(scan_id, scan["manifest_key"])
        return self._completion(scan_id, already=True)

    def _complete_remaining(self, scan_id: str, files: list[dict[str, Any]]) -> None:
        pending = [f for f in files if f["state"] != "complete"]
        unfinished = [f["index"] for f in pending if f["method"] == "multipart"]
        if unfinished:
            shown = ", ".join(f"files[{i}]" for i in unfinished[:10]) + (
                " ..." if len(unfinished) > 10 else ""
            )
            raise UploadConflictError(
                f"{len(unfinished)} file(s) are not complete ({shown}): upload and complete them, "
                "then complete the scan"
            )
        # Single-PUT files are completed here, in parallel, so a device need not call each one.
        results = self._complete_many(scan_id, pending)
        failures = [r for r in results if isinstance(r, Exception)]
        for record, result in zip(pending, results, strict=True):
            if not isinstance(result, Exception):
                record.update(result)
        if failures:
            mismatched = [r for r in failures if isinstance(r, ChecksumMismatchError)]
            first = (mismatched or failures)[0]
            if not isinstance(first, InvalidInputError):
                raise first
            raise type(first)(f"{len(failures)} file(s) could not be completed; the first: {first}") from None

    def _start_processing(self, scan_id: str, manifest_key: str) -> None:
        reference = self.processor.start(scan_id, manifest_key)
        self.table.set_scan_values(
            scan_id, {"processing_started_at": _iso(self.clock()), "processing_ref": reference}
        )

    def _completion(self, scan_id: str, *, already: bool) -> dict[str, Any]:
        scan = self._scan(scan_id)
        return {
            "scan_id": scan_id,
            "status": scan["status"],
            "manifest_key": scan.get("manifest_key"),
            "already_completed": already,
            "processing_started": "processing_started_at" in scan,
        }

    def _manifest_of(self, scan: dict[str, Any], files: list[dict[str, Any]]) -> ScanManifest:
        return ScanManifest.from_dict(
            {
                "scan_id": scan["scan_id"],
                "device_id": scan["device_id"],
                "scan_type": scan["scan_type"],
                "device_settings": json.loads(scan.get("device_settings") or "{}") or None,
                "files": [{"name": f["name"], "size": f["size"], "sha256": f["sha256"]} for f in files],
            },
            limits=self.config.limits,
        )

    # -- GET /scans/{id} ---------------------------------------------------------------------------

    def progress(self, scan_id: str, *, files_from: int | None = None, urls: bool = False) -> dict[str, Any]:
        """Status and upload progress (bytes in completed files, plus parts S3 holds for the rest).

        With ``files_from``, the answer also lists the files from that position on (``files``, as
        many as fit the answer; ``next_file`` is where the next page starts, or None): each with its
        state and, while it uploads, the parts S3 holds (multipart files; ListParts runs only for
        those, in parallel). With ``urls`` too, a single-PUT file still uploading comes with its
        presigned URL. One call (a page per 2000 files) is what a resuming device needs, instead of
        a request per file.
        """
        scan = self._scan(scan_id)
        files = self.table.files(scan_id, _file_count(scan))
        uploading = scan["status"] == str(ScanStatus.UPLOADING)
        listed = self._listed_parts(files) if uploading else {}
        complete = [f for f in files if f["state"] == "complete"]
        uploaded = sum(f["size"] for f in complete) + sum(p.size for parts in listed.values() for p in parts)
        out: dict[str, Any] = {
            "scan_id": scan_id,
            "status": scan["status"],
            "files_total": len(files),
            "files_complete": len(complete),
            "bytes_total": scan["total_size"],
            "bytes_uploaded": uploaded,
            "created_at": scan.get("created_at"),
            "updated_at": scan.get("updated_at"),
        }
        for optional in (
            "reason",
            "manifest_key",
            "uploaded_at",
            "processing_started_at",
            "history",
            "results",
        ):
            if optional in scan:
                out[optional] = scan[optional]
        if files_from is None:
            return out
        if not 0 <= files_from <= len(files):
            raise InvalidInputError(f"files_from must be 0..{len(files)}")
        out["url_expiry_s"] = self.config.url_expiry_s
        room = self.config.max_plan_bytes - len(json.dumps(out)) - 64
        page: list[dict[str, Any]] = []
        for record in files[files_from : files_from + self.config.max_files_per_status]:
            entry = _file_view(record)
            if record["index"] in listed:
                entry["parts"] = [
                    {"part_number": p.part_number, "size": p.size} for p in listed[record["index"]]
                ]
            if urls and uploading and record["method"] == "single" and record["state"] != "complete":
                entry["urls"] = [self._presign(record, 1, record["sha256"])]
            room -= len(json.dumps(entry)) + 2
            if room < 0 and page:
                break  # Lambda's response limit: the rest comes in the next page
            page.append(entry)
        out["files"] = page
        end = files_from + len(page)
        out["next_file"] = end if end < len(files) else None
        return out

    def _listed_parts(self, files: Sequence[Mapping[str, Any]]) -> dict[int, list[UploadedPart]]:
        """The parts S3 holds for every multipart file still uploading (ListParts in parallel)."""
        open_files = [f for f in files if f["state"] != "complete" and f["method"] == "multipart"]

        def one(record: Mapping[str, Any]) -> list[UploadedPart]:
            try:
                return self.uploads.list_parts(record["key"], record["upload_id"])
            except ObjectNotFoundError:
                return []

        if not open_files:
            return {}
        workers = max(1, min(self.config.verify_workers, len(open_files)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return {f["index"]: parts for f, parts in zip(open_files, pool.map(one, open_files), strict=True)}

    # -- DELETE /scans/{id} ------------------------------------------------------------------------

    def abort(self, scan_id: str) -> dict[str, Any]:
        """Mark the scan FAILED ("aborted by the device"), abort every multipart upload and delete
        what landed. Repeating it is harmless; a scan already UPLOADED cannot be aborted."""
        scan = self._scan(scan_id)
        status = ScanStatus(scan["status"])
        if status is ScanStatus.UPLOADING:
            if not self.table.transition(
                scan_id, ScanStatus.UPLOADING, ScanStatus.FAILED, {"reason": ABORT_REASON}
            ):
                return self.abort(scan_id)  # moved meanwhile: answer from the new state
        elif not (status is ScanStatus.FAILED and scan.get("reason") == ABORT_REASON):
            raise UploadConflictError(
                f"scan {scan_id} is {status}, past uploading; it can no longer be aborted"
            )
        aborted = 0
        files = self.table.files(scan_id, _file_count(scan))
        for record in files:
            if record["method"] == "multipart" and record["state"] != "complete":
                self.uploads.abort(record["key"], record["upload_id"])
                aborted += 1
        # A single-PUT URL cannot be revoked; it signs If-None-Match: *, so an object at its key
        # refuses it. Tombstones replace whatever landed at those keys, then the rest is deleted.
        tombstones = {r["key"] for r in files if r["method"] == "single"}
        for key in sorted(tombstones):
            self.uploads.tombstone(key)
        deleted = 0
        for key in list(self.store.list_keys(self._scan_prefix(scan_id))):
            if key not in tombstones:
                self.store.delete(key)
                deleted += 1
        return {
            "scan_id": scan_id,
            "status": str(ScanStatus.FAILED),
            "reason": ABORT_REASON,
            "uploads_aborted": aborted,
            "objects_deleted": deleted,
        }

    # -- helpers -----------------------------------------------------------------------------------

    def object_key(self, scan_id: str, index: int, sha256_hex: str) -> str:
        """Where a file lands: by scan id, position and a prefix of the file's SHA-256, never by its
        name (a device's names can carry patient names or MRNs, and keys reach access logs,
        inventories and events). The stored manifest maps names to keys. E.g. the file at position
        7 of scan ``s1`` whose SHA-256 starts ``abab...``: ``scans/s1/files/00007-abababababababab.dcm``.
        """
        return f"{self._scan_prefix(scan_id)}files/{index:05d}-{sha256_hex[:KEY_HASH_CHARS]}.dcm"

    def manifest_key(self, scan_id: str) -> str:
        return f"{self._scan_prefix(scan_id)}manifest.json"

    def _scan_prefix(self, scan_id: str) -> str:
        return f"{self.config.prefix}{scan_id}/"

    def _parse_manifest(self, data: Any) -> ScanManifest:
        try:
            return ScanManifest.from_dict(data, limits=self.config.limits)
        except ManifestError as exc:
            # Valid without our limits means a limit was the problem: 413, with the same message.
            unlimited = ManifestLimits(
                max_files=sys.maxsize,
                max_file_size=sys.maxsize,
                max_total_size=sys.maxsize,
                max_name_length=self.config.limits.max_name_length,
            )
            try:
                ScanManifest.from_dict(data, limits=unlimited)
            except ManifestError:
                raise exc from None
            raise PayloadTooLargeError(str(exc)) from None

    @staticmethod
    def _parse_part_hashes(value: Any, file_count: int) -> list[list[str]] | None:
        if value is None:
            return None
        if not isinstance(value, list) or len(value) != file_count:
            raise ManifestError("part_sha256 must be a list with one list of part hashes per file")
        for i, hashes in enumerate(value):
            if not isinstance(hashes, list) or not all(
                isinstance(h, str) and _HEX64.match(h) for h in hashes
            ):
                raise ManifestError(f"part_sha256[{i}] must be a list of 64-character lowercase hex digests")
        return value

    def _part_size_for(self, file_size: int, proposed: int | None) -> int:
        if proposed is not None and part_size_is_valid(file_size, proposed):
            return proposed
        return choose_part_size(file_size, self.config.part_size)

    def _presign(self, record: Mapping[str, Any], number: int, sha256_hex: str) -> dict[str, Any]:
        expiry = self.config.url_expiry_s
        if record["method"] == "single":
            request = self.uploads.presign_put(record["key"], sha256_hex, expiry)
        else:
            request = self.uploads.presign_part(
                record["key"], record["upload_id"], number, sha256_hex, expiry
            )
        return {"part_number": number, **request.to_dict()}

    def _scan(self, scan_id: str) -> dict[str, Any]:
        try:
            check_identifier(scan_id, "scan id")
        except ManifestError:
            raise ScanNotFoundError("no such scan (the id is malformed)") from None
        scan = self.table.get_scan(scan_id)
        if scan is None:
            raise ScanNotFoundError(f"no scan {scan_id}")
        return scan

    def _file(self, scan_id: str, index: str | int) -> dict[str, Any]:
        try:
            position = int(index)
        except ValueError:
            raise ScanNotFoundError(
                "files are addressed by their position in the manifest (0, 1, ...)"
            ) from None
        record = self.table.get_file(scan_id, position) if 0 <= position < 100_000 else None
        if record is None:
            raise ScanNotFoundError(f"scan {scan_id} has no files[{position}]")
        return record

    @staticmethod
    def _require_uploading(scan: Mapping[str, Any]) -> None:
        """409 unless the scan is uploading, saying what the device can do instead. The reason is
        the server's own (e.g. "aborted by the device"), never the device's data."""
        status = str(scan["status"])
        if status == str(ScanStatus.UPLOADING):
            return
        reason = f" ({scan['reason']})" if scan.get("reason") else ""
        if status in (str(ScanStatus.FAILED), str(ScanStatus.REJECTED)):
            what = "it accepts no more uploads; upload the files as a new scan with POST /scans"
        else:  # UPLOADED or later: every file is in
            what = (
                "its upload is finished: nothing left to upload to it; to send other files, start a "
                "new scan with POST /scans"
            )
        raise UploadConflictError(f"scan {scan['scan_id']} is {status}{reason}; {what}")


def stored_manifest_json(manifest: ScanManifest, files: Sequence[Mapping[str, Any]]) -> bytes:
    """The manifest written next to the data at completion: the device's manifest with the server's
    scan id, and each file's object ``key`` (what the workflow reads; see :mod:`dicomflow.manifest`).

    Examples
    --------
    >>> from dicomflow.manifest import ManifestFile, ScanType
    >>> m = ScanManifest("ct-01", ScanType.FOUR_D_CT, (ManifestFile("a.dcm", 1, "0" * 64),), "s1")
    >>> stored = json.loads(stored_manifest_json(m, [{"index": 0, "key": "scans/s1/files/00000-00.dcm"}]))
    >>> stored["scan_id"], stored["files"][0]["name"], stored["files"][0]["key"]
    ('s1', 'a.dcm', 'scans/s1/files/00000-00.dcm')
    """
    data = manifest.to_dict()
    keys = {int(f["index"]): str(f["key"]) for f in files}
    for index, entry in enumerate(data["files"]):
        entry["key"] = keys[index]
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")


def _file_view(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in ("index", "name", "size", "part_size", "part_count", "method", "state")}


def _result_view(index: int, result: dict[str, Any] | Exception) -> dict[str, Any]:
    """A file's answer in a batch: its view, or the error code and message its own request would get."""
    if not isinstance(result, Exception):
        return result
    if isinstance(result, InvalidInputError):
        code = str(getattr(result, "code", "invalid_request"))
        return {"index": index, "error": code, "message": str(result)}
    if isinstance(result, TransientStorageError):
        return {"index": index, "error": "unavailable", "message": "storage is busy; retry with backoff"}
    # As the handler answers an unexpected error: the class only, no internals.
    return {
        "index": index,
        "error": "internal",
        "message": f"the upload API failed ({type(result).__name__})",
    }


def _sha256_and_size(store: ObjectStore, key: str) -> tuple[str, int]:
    import hashlib

    digest = hashlib.sha256()
    size = 0
    for chunk in store.iter_chunks(key, chunk_size=8 * 1024 * 1024):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def composite_sha256(part_hashes: Sequence[str]) -> str:
    """S3's composite checksum of a multipart object: SHA-256 of the parts' digests, with the count.

    Examples
    --------
    >>> composite_sha256(["00" * 32])
    'Zmh6rfhivXdsj8GLjp+OIAiXFIVu4jOzkCpZHQ1fKSU=-1'
    """
    import base64
    import hashlib

    digest = hashlib.sha256(b"".join(bytes.fromhex(h) for h in part_hashes)).digest()
    return f"{base64.b64encode(digest).decode('ascii')}-{len(part_hashes)}"


def _same_checksum(stored: str, expected: str) -> bool:
    """S3 answers ``<base64>-<parts>``; moto 5.2 leaves the part count out. The digest must match,
    and the count too when there is one."""
    digest, _, count = stored.partition("-")
    want_digest, _, want_count = expected.partition("-")
    return digest == want_digest and (not count or count == want_count)


def _file_count(scan: Mapping[str, Any]) -> int | None:
    count = scan.get("file_count")
    return int(count) if isinstance(count, int | float) else None


def _capture(call: Callable[[], dict[str, Any]]) -> dict[str, Any] | Exception:
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - collected and reported together
        return exc


def _new_scan_id(now: float) -> str:
    # Sortable by creation time, unguessable.
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(8)


def _iso(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


def build_service(settings: Any, *, processor: ScanProcessor | None = None) -> UploadService:
    """The service wired from :class:`~dicomflow.settings.Settings` (boto3 clients created here)."""
    import boto3
    from botocore.config import Config

    from dicomflow.storage.s3 import S3ObjectStore
    from dicomflow.upload.processing import RecordingProcessor, StepFunctionsProcessor

    bucket = settings.require("ingest_bucket")
    endpoint = settings.aws_endpoint_url
    session = boto3.session.Session(region_name=settings.region)
    s3 = session.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(
            signature_version="s3v4",
            retries={"mode": "standard", "max_attempts": 5},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=32,
        ),
    )
    table = session.resource("dynamodb", endpoint_url=endpoint).Table(settings.require("scans_table"))
    if processor is None:
        if settings.state_machine_arn:
            processor = StepFunctionsProcessor(
                session.client("stepfunctions", endpoint_url=endpoint), settings.state_machine_arn, bucket
            )
        else:
            processor = RecordingProcessor()
    config = UploadConfig(
        url_expiry_s=settings.presigned_url_expiry_s,
        part_size=settings.part_size,
        limits=settings.manifest_limits,
        verify=getattr(settings, "upload_verify", "parts"),
    )
    return UploadService(
        table=ScansTable(table),
        uploads=S3Uploads(s3, bucket, kms_key_id=settings.kms_key_id),
        store=S3ObjectStore(bucket, kms_key_id=settings.kms_key_id, client=s3),
        processor=processor,
        config=config,
    )


__all__ = [
    "ABORT_REASON",
    "ChecksumMismatchError",
    "PayloadTooLargeError",
    "ScanNotFoundError",
    "UploadConfig",
    "UploadConflictError",
    "UploadService",
    "build_service",
]


def _json_body(body: bytes | str | None) -> Any:
    """The request body parsed as JSON (an empty body is ``{}``); 400 with the reason otherwise."""
    try:
        return json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InvalidInputError("the request body is not valid JSON") from None
