"""``validate_scan``: the scan-level checks over every batch's reports; DEIDENTIFYING or not.

Reads the batch reports, checks that every declared file has one (and no more), runs the scan rules
(one patient and study, phases x slices, positions, spacing: :func:`dicomflow.validation.validate_scan`
against the manifest with its files named by index) and writes ``scans/{id}/work/validation.json``:
the scan's findings and the files at fault, by index and ingest key. Accepted: VALIDATING ->
DEIDENTIFYING. Rejected: the status is left to ``quarantine`` (the state machine sends it there).
Naturally idempotent: the report is a pure overwrite, and a scan already DEIDENTIFYING is success.
"""

from __future__ import annotations

from typing import Any

from dicomflow.status import ScanStatus
from dicomflow.validation import ValidationReport, validate_scan
from dicomflow.workflow.context import StepContext
from dicomflow.workflow.models import ValidateScanEvent
from dicomflow.workflow.scan_state import advance
from dicomflow.workflow.work import (
    batch_reports,
    load_manifest,
    validation_report_key,
    work_prefix,
    write_json,
)

#: Files at fault listed in the step's result (all of them are in the report).
RESULT_FILES = 100


def run(ctx: StepContext, event: ValidateScanEvent) -> dict[str, Any]:
    store = ctx.store(event.bucket)
    stored = load_manifest(store, event.manifest_key, event.scan_id, limits=ctx.settings.manifest_limits)
    files: dict[int, dict[str, Any]] = {}
    for batch in batch_reports(store, f"{work_prefix(event.scan_id)}validation/"):
        for entry in batch["files"]:
            files[int(entry["index"])] = entry
    reports = [ValidationReport.from_dict(files[i]) for i in sorted(files)]
    scan = validate_scan(reports, manifest=stored.indexed())
    at_fault = [
        {"index": i, "key": files[i]["key"], "codes": [f["code"] for f in files[i]["findings"]]}
        for i in sorted(files)
        if files[i]["verdict"] != "accepted"
    ]
    missing = sorted({item.index for item in stored.items} - set(files))
    at_fault += [{"index": i, "key": stored.items[i].key, "codes": ["FILE_MISSING"]} for i in missing]
    at_fault.sort(key=lambda f: f["index"])
    accepted = scan.accepted and not at_fault
    codes = sorted({f.code for f in scan.errors} | {c for f in at_fault for c in f["codes"]})
    key = validation_report_key(event.scan_id)
    write_json(
        store,
        key,
        {
            "scan_id": event.scan_id,
            "accepted": accepted,
            "codes": codes,
            "scan": scan.to_dict(),
            "files": at_fault,
        },
    )
    if accepted:
        advance(
            ctx.table,
            ctx.events,
            event.scan_id,
            ScanStatus.DEIDENTIFYING,
            expect={ScanStatus.VALIDATING},
            values={"validation_report_key": key},
        )
    return {
        "accepted": accepted,
        "report_key": key,
        "rejected_files": [f["index"] for f in at_fault[:RESULT_FILES]],
        "codes": codes,
    }
