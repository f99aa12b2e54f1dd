"""``deidentify_batch``: PS3.15 de-identification of a batch of files, S3 to S3.

Each file (:func:`dicomflow.deid.stream.deidentify_object`): its first :data:`SOURCE_WINDOW` bytes
in one ranged GET from the ingest bucket (a whole slice, or a large file's header:
:class:`~dicomflow.workflow.reads.SourceObject`), the new header written as the first part with the
first 5 MiB of pixels, the rest of the pixel data copied by S3 from the ingest bucket into the
de-identified bucket (UploadPartCopy across buckets), so the bytes read and the memory used do not
grow with the file. Pseudonyms and UIDs from the KMS HMAC key. The engine runs the leak check before
writing anything and the pixel proof after; only a PASSED file lands at
``scans/{id}/{index:05d}.dcm`` in the de-identified bucket. A HELD file (burned-in annotation) goes
to ``scans/{id}/held/`` in the ingest bucket; a FAILED or REJECTED one nowhere. Its size and SHA-256
(for the de-identified manifest) are those of the bytes PUT when it was written in one piece
(:class:`~dicomflow.workflow.reads.WrittenObjects`), else computed by S3 over the parts it
assembled.

Pixel proof: ``"sampled"`` (see :func:`dicomflow.deid.stream._sampled_proof`). The full proof
would stream the whole pixel data of both objects through this function, 2 GB for a 1 GB file,
which is what copying server side avoids; S3 guarantees the copy itself, our code decides the
ranges, and the sampled windows and the exact size check catch a wrong range.

Idempotent: the outputs are deterministic for the key (pure overwrites), and the handler runs
under powertools idempotency (a duplicate delivery gets the recorded result).
"""

from __future__ import annotations

from typing import Any

from dicomflow.deid.report import Verdict
from dicomflow.deid.stream import deidentify_object
from dicomflow.storage.s3 import S3ObjectStore
from dicomflow.workflow.context import StepContext
from dicomflow.workflow.models import BatchEvent
from dicomflow.workflow.reads import MiB, SourceObject, WrittenObjects
from dicomflow.workflow.work import deidentification_batch_key, deidentified_key, held_key, write_json

PIXEL_PROOF = "sampled"


#: The first bytes of each source read in one GET: a whole slice (512 x 512: about 0.5 MiB; 1024 x
#: 1024: 2 MiB), or the header of a larger file. Bounded well below the 16 MiB a 1 GB file may cost.
SOURCE_WINDOW = 3 * MiB


def deidentify_file(
    ctx: StepContext, scan_id: str, index: int, key: str, ingest: S3ObjectStore, output: S3ObjectStore
) -> dict[str, Any]:
    """De-identify one file; its entry in the batch report (no names, no values from the file)."""
    source = SourceObject(ingest, key, window=SOURCE_WINDOW)
    written = WrittenObjects(output)
    report = deidentify_object(
        source,
        key,
        deidentified_key(scan_id, index),
        ctx.deidentifier,
        held_key=held_key(scan_id, index),
        dst_store=written,
        held_store=source,
        copy_between_buckets=True,
        pixel_proof=PIXEL_PROOF,
        whole=source.held,  # a slice held whole after its one GET: parsed in place
    )
    entry = report.as_dict()
    entry.pop("source", None)  # the ingest key, given below under its own name
    entry.update(index=index, key=key, source_bytes_read=source.bytes_read)
    if report.verdict is Verdict.PASSED and report.destination:
        if report.destination in written.written:  # PUT in one piece: the digest of what was sent
            entry["size"], entry["sha256"] = written.written[report.destination]
        else:  # assembled by S3 from copied parts: S3 computes it
            entry["size"] = output.size(report.destination)
            entry["sha256"] = output.sha256(report.destination)
    return entry


def run(ctx: StepContext, event: BatchEvent) -> dict[str, Any]:
    ingest = ctx.store(event.bucket)
    output = ctx.store(event.output_bucket or ctx.settings.require("deidentified_bucket"))
    files = [deidentify_file(ctx, event.scan_id, i.index, i.key, ingest, output) for i in event.items]
    key = deidentification_batch_key(event.scan_id, event.first)
    write_json(ingest, key, {"scan_id": event.scan_id, "first": event.first, "files": files})
    verdicts = [f["verdict"] for f in files]
    return {
        "first": event.first,
        "count": len(files),
        "passed": verdicts.count(str(Verdict.PASSED)),
        "held": verdicts.count(str(Verdict.HELD)),
        "failed": len(files) - verdicts.count(str(Verdict.PASSED)) - verdicts.count(str(Verdict.HELD)),
        "report_key": key,
    }
