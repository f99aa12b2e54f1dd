"""The processing workflow's steps: one module per step, S3 in, S3 out, small summaries back.

The state machine (``dicomflow/statemachine/scan.asl.json``, one execution per scan, named after the
scan id) calls these through thin Lambda handlers (``functions/<step>/handler.py``). Only keys,
counts and reason codes travel through Step Functions (256 KiB limit, and its history is readable
by operators): never a device file name, never a value read from a header. Reports with detail live
in the ingest bucket under ``scans/{scan_id}/work/``.

The contract with the ASL (event in -> result out; every result is a JSON object):

``prepare_scan``  ``{"scan_id", "bucket", "manifest_key"}`` (the execution input)
    -> ``{"scan_id", "bucket", "manifest_key", "items_key", "file_count"}``; moves UPLOADED ->
    VALIDATING; writes ``items_key`` (``scans/{id}/work/items.json``), a JSON array with one
    ``{"index", "key", "size", "sha256"}`` per file, which the Maps read (S3 ItemReader).
``validate_batch``  ``{"Items": [item...], "BatchInput": {"scan_id", "bucket"}}`` (ItemBatcher)
    -> ``{"first", "count", "rejected", "report_key"}``; the batch's per-file reports (with the
    PHI-free file summaries) at ``report_key``.
``validate_scan``  ``{"scan_id", "bucket", "manifest_key", "file_count"}``
    -> ``{"accepted": bool, "report_key", "rejected_files": [index...] (at most 100; the report at
    ``report_key`` has them all, with keys and codes), "codes": [...]}``; reads every batch report,
    runs the scan-level checks; if accepted moves VALIDATING -> DEIDENTIFYING.
``deidentify_batch``  ``{"Items": [...], "BatchInput": {"scan_id", "bucket", "output_bucket"}}``
    -> ``{"first", "count", "passed", "held", "failed", "report_key"}``.
``deidentify_scan``  ``{"scan_id", "bucket", "output_bucket", "file_count", "manifest_key"?}``
    (``manifest_key``: the stored manifest, default ``scans/{id}/manifest.json``)
    -> ``{"passed": bool, "report_key", "output_prefix", "manifest_key", "codes": [...]}``; if every
    file passed, writes the de-identified scan's manifest beside its files (``manifest_key`` in
    ``output_bucket``; null when not passed) and moves DEIDENTIFYING -> ANALYZING.
``publish``  ``{"scan_id", "results_bucket", "results_prefix"}`` -> ``{"status": "COMPLETED",
    "results_key"}``; the results record on the scan, ANALYZING -> COMPLETED, the event.
``quarantine``  ``{"scan_id", "bucket", "manifest_key", "outcome": "REJECTED"|"FAILED",
    "codes": [...], "report_key"?, "error"?: {"Error", "Cause"}}`` -> ``{"status", "reasons"}``;
    ``reasons``: ``[{"index", "key", "codes"}...]`` per file (from the report) and ``{"error",
    "reason"}`` for a caught error; originals kept and tagged, the reasons on the scan, the event.
    REJECTED from a status that cannot be rejected (UPLOADED, ANALYZING) is recorded FAILED; a
    scan already terminal is left as it is (its recorded status and reasons are returned).

Errors raised out of a step are the ASL's Retry/Catch contract by class name
(:mod:`dicomflow.errors`): ``TransientStorageError`` and throttling are retried with backoff and
jitter; anything else is caught and sent to ``quarantine`` as FAILED.
"""
