"""``deidentify_scan``: every file de-identified? Then the de-identified manifest and ANALYZING.

Reads the batch reports. If every declared file PASSED, writes the de-identified scan's manifest
(:class:`~dicomflow.manifest.ScanManifest`, files ``{index:05d}.dcm`` relative to the scan's
prefix, sizes and SHA-256 of the de-identified objects) at ``scans/{id}/manifest.json`` in the
de-identified bucket, where the analysis task reads it (``analysis.pipeline.scan_keys``), and moves
DEIDENTIFYING -> ANALYZING. Otherwise no manifest: the report ``scans/{id}/work/deidentification.json``
names the files at fault by index and ingest key with their codes (``BURNED_IN_HELD``,
``LEAK_DETECTED``, ``PIXELS_DIFFER``, ``DEIDENTIFICATION_FAILED``, ``NOT_DEIDENTIFIABLE``,
``FILE_MISSING``) and the state machine sends the scan to ``quarantine`` (REJECTED).
Naturally idempotent: pure overwrites, and a scan already ANALYZING is success.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dicomflow.deid.report import Verdict
from dicomflow.manifest import ManifestFile, ScanManifest
from dicomflow.status import ScanStatus
from dicomflow.workflow.context import StepContext
from dicomflow.workflow.models import DeidentifyScanEvent
from dicomflow.workflow.scan_state import advance
from dicomflow.workflow.work import (
    batch_reports,
    deidentification_report_key,
    deidentified_manifest_key,
    deidentified_name,
    load_manifest,
    scan_prefix,
    work_prefix,
    write_json,
)


def file_codes(entry: Mapping[str, Any]) -> list[str]:
    """The reason codes of a file that did not pass."""
    verdict = entry.get("verdict")
    if verdict == str(Verdict.HELD):
        return ["BURNED_IN_HELD"]
    if verdict == str(Verdict.REJECTED):
        return ["NOT_DEIDENTIFIABLE"]
    leak = entry.get("leak_check") or {}
    if leak and not leak.get("passed", True):
        return ["LEAK_DETECTED"]
    if entry.get("pixels_identical") is False:
        return ["PIXELS_DIFFER"]
    return ["DEIDENTIFICATION_FAILED"]


def run(ctx: StepContext, event: DeidentifyScanEvent) -> dict[str, Any]:
    ingest, output = ctx.store(event.bucket), ctx.store(event.output_bucket)
    manifest_key = event.manifest_key or f"{scan_prefix(event.scan_id)}manifest.json"
    stored = load_manifest(ingest, manifest_key, event.scan_id, limits=ctx.settings.manifest_limits)
    files: dict[int, dict[str, Any]] = {}
    for batch in batch_reports(ingest, f"{work_prefix(event.scan_id)}deidentification/"):
        for entry in batch["files"]:
            files[int(entry["index"])] = entry
    at_fault: list[dict[str, Any]] = []
    for item in stored.items:
        entry = files.get(item.index)
        if entry is None:
            at_fault.append({"index": item.index, "key": item.key, "codes": ["FILE_MISSING"]})
        elif entry.get("verdict") != str(Verdict.PASSED):
            at_fault.append(
                {
                    "index": item.index,
                    "key": item.key,
                    "verdict": entry.get("verdict"),
                    "codes": file_codes(entry),
                    "reasons": list(entry.get("reasons") or []),
                }
            )
    codes = sorted({c for f in at_fault for c in f["codes"]})
    passed = not at_fault
    report_key = deidentification_report_key(event.scan_id)
    held = [f["index"] for f in at_fault if "BURNED_IN_HELD" in f["codes"]]
    write_json(
        ingest,
        report_key,
        {"scan_id": event.scan_id, "passed": passed, "codes": codes, "held": held, "files": at_fault},
    )
    out_manifest: str | None = None
    if passed:
        out_manifest = deidentified_manifest_key(event.scan_id)
        manifest = ScanManifest(
            scan_id=event.scan_id,
            device_id=stored.manifest.device_id,
            scan_type=stored.manifest.scan_type,
            device_settings=stored.manifest.device_settings,
            files=tuple(
                ManifestFile(
                    deidentified_name(i.index), int(files[i.index]["size"]), files[i.index]["sha256"]
                )
                for i in stored.items
            ),
            limits=stored.manifest.limits,
        )
        output.put(out_manifest, manifest.to_json().encode("utf-8"), content_type="application/json")
        advance(
            ctx.table,
            ctx.events,
            event.scan_id,
            ScanStatus.ANALYZING,
            expect={ScanStatus.DEIDENTIFYING},
            values={
                "deidentification_report_key": report_key,
                "deidentified_bucket": event.output_bucket,
                "deidentified_manifest_key": out_manifest,
            },
        )
    return {
        "passed": passed,
        "report_key": report_key,
        "output_prefix": scan_prefix(event.scan_id),
        "manifest_key": out_manifest,
        "codes": codes,
    }
