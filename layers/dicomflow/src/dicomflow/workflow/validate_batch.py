"""``validate_batch``: header-only validation and SHA-256 of a batch of a scan's files.

Each file: its header by ranged GETs (a slice is read in one GET of its first
:data:`SOURCE_WINDOW` bytes, which also serves its size and digest:
:class:`~dicomflow.workflow.reads.SourceObject`), the conformance rules, its size and SHA-256
(streamed) against the manifest (:func:`dicomflow.validation.validate_object`). The batch's reports go to
``scans/{id}/work/validation/{first:05d}.json``, each named by the file's index and ingest key; the
findings' messages carry no values read from the file, the summaries only salted hashes of
identity. Idempotent twice over: the report is a pure overwrite, and the handler runs under
powertools idempotency (a duplicate delivery gets the recorded result without reading S3 again).
"""

from __future__ import annotations

from typing import Any

from dicomflow.validation import validate_object
from dicomflow.workflow.context import StepContext
from dicomflow.workflow.models import BatchEvent
from dicomflow.workflow.reads import MiB, SourceObject
from dicomflow.workflow.work import index_name, validation_batch_key, write_json

#: The SHA-256 reads every byte of a file anyway: one GET of up to this much gives the header, the
#: size and the digest of a slice at once (three requests before). Larger files: their header from
#: it, the digest streamed from S3 (memory stays at the window).
SOURCE_WINDOW = 8 * MiB


def run(ctx: StepContext, event: BatchEvent) -> dict[str, Any]:
    store = ctx.store(event.bucket)
    files: list[dict[str, Any]] = []
    for item in event.items:
        report = validate_object(
            SourceObject(store, item.key, window=SOURCE_WINDOW),
            item.key,
            name=index_name(item.index),
            expected_size=item.size,
            expected_sha256=item.sha256,
            # One salt per scan: identity hashes compare within the scan and nowhere else.
            salt=event.scan_id,
        )
        files.append({"index": item.index, "key": item.key, **report.to_dict()})
    key = validation_batch_key(event.scan_id, event.first)
    write_json(store, key, {"scan_id": event.scan_id, "first": event.first, "files": files})
    return {
        "first": event.first,
        "count": len(files),
        "rejected": sum(1 for f in files if f["verdict"] != "accepted"),
        "report_key": key,
    }
