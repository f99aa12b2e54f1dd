"""``quarantine``: REJECTED (the data was refused) or FAILED (the pipeline could not finish), with
reasons per file; the originals kept and tagged; the status event. Nothing is deleted.

Works from any non-terminal status. REJECTED is only a status the lifecycle allows while the data
is being judged (VALIDATING, DEIDENTIFYING); asked for from another status (a rejection found
before validation started), the scan is recorded FAILED with the same reasons. Idempotent: a scan
already terminal is left alone and its recorded status and reasons are returned.

Reasons carry indices, ingest keys (no names), codes and, for a FAILED step, the error's class name
with the message only when it is one of dicomflow's errors (written to carry no patient data); any
other error is recorded by class name alone, since its message may quote data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dicomflow.errors import (
    ERROR_CLASSES,
    DicomflowError,
    InvalidTransitionError,
    ObjectNotFoundError,
    StorageError,
    TransientStorageError,
)
from dicomflow.status import ScanStatus, can_transition
from dicomflow.storage.s3 import S3ObjectStore
from dicomflow.workflow import failures
from dicomflow.workflow.context import StepContext
from dicomflow.workflow.models import QuarantineEvent
from dicomflow.workflow.scan_state import advance, read_scan
from dicomflow.workflow.work import load_manifest, read_json

TAG = "dicomflow-quarantine"
#: Reasons kept on the scan item (DynamoDB items are at most 400 KB); the report has them all.
MAX_REASONS = 100
#: Reasons kept in the history entry and shown in the one-line summary.
HISTORY_REASONS = 20
SUMMARY_REASONS = 5
#: Characters of one of dicomflow's error messages recorded.
MAX_MESSAGE = 300
_TAGGING_THREADS = 16


def error_reason(error: Mapping[str, Any]) -> dict[str, str]:
    """The PHI-free reason of a caught error (``{"Error", "Cause"}`` from the state machine).

    Examples
    --------
    >>> cause = json.dumps({"errorType": "StorageError", "errorMessage": "S3 get failed (403)"})
    >>> error_reason({"Error": "StorageError", "Cause": cause})
    {'error': 'StorageError', 'reason': 'S3 get failed (403)'}
    >>> error_reason({"Error": "KeyError", "Cause": json.dumps({"errorMessage": "'Smith^John'"})})
    {'error': 'KeyError', 'reason': 'unexpected KeyError'}
    """
    name = str(error.get("Error") or "unknown")
    message = None
    try:
        cause = json.loads(str(error.get("Cause") or ""))
    except ValueError:
        cause = None
    if isinstance(cause, Mapping):
        name = str(cause.get("errorType") or name)
        message = cause.get("errorMessage")
    if name in ERROR_CLASSES and isinstance(message, str) and message:
        return {"error": name, "reason": message[:MAX_MESSAGE]}
    if name in ERROR_CLASSES and cause is None and error.get("Cause"):
        # A plain-text cause under one of our names is the ASL's own (AnalysisFailed's exit code).
        return {"error": name, "reason": str(error["Cause"])[:MAX_MESSAGE]}
    if name.startswith("States."):
        return {"error": name, "reason": f"the state machine reported {name}"}
    return {"error": name, "reason": f"unexpected {name}"}


def _report_reasons(ctx: StepContext, bucket: str, key: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Per-file reasons and codes from a validation or de-identification report."""
    try:
        report = read_json(ctx.store(bucket), key)
    except (DicomflowError, ValueError):
        return [], ["REPORT_UNREADABLE"]
    reasons = [
        {"index": int(f["index"]), "key": str(f["key"]), "codes": [str(c) for c in f.get("codes", [])]}
        for f in report.get("files", [])
        if isinstance(f, Mapping) and "index" in f and "key" in f
    ]
    return reasons, [str(c) for c in report.get("codes", [])]


def _tag_originals(store: S3ObjectStore, keys: list[str], status: str) -> tuple[int, int]:
    """(tagged, refused): a tag refused for good (access denied) must not keep the status from
    being recorded; a transient failure is raised (the workflow retries)."""

    def tag(key: str) -> int:
        try:
            store.add_tags(key, {TAG: status})
        except ObjectNotFoundError:
            return 0  # never arrived (a missing file is itself a reason)
        except TransientStorageError:
            raise
        except StorageError:
            return -1
        return 1

    with ThreadPoolExecutor(max_workers=_TAGGING_THREADS) as pool:
        done = list(pool.map(tag, keys))
    return done.count(1), done.count(-1)


def _summary(status: str, reasons: list[dict[str, Any]], codes: list[str]) -> str:
    files = [r for r in reasons if "index" in r]
    errors = [r for r in reasons if "error" in r]
    parts = [f"files[{r['index']}] {', '.join(r['codes'])}" for r in files[:SUMMARY_REASONS]]
    parts += [f"{r['error']}: {r['reason']}" for r in errors[:SUMMARY_REASONS]]
    more = len(files) - SUMMARY_REASONS
    head = (
        f"{status}: {len(files)} file(s) at fault"
        if files
        else f"{status}: {', '.join(codes) or 'no reason given'}"
    )
    return head + (": " + "; ".join(parts) if parts else "") + (f" (and {more} more)" if more > 0 else "")


def run(ctx: StepContext, event: QuarantineEvent) -> dict[str, Any]:
    scan = read_scan(ctx.table, event.scan_id)
    current = ScanStatus(scan["status"])
    if current.is_terminal:
        return {"status": str(current), "reasons": scan.get("reasons", [])}
    requested = ScanStatus(event.outcome)
    status = requested if can_transition(current, requested) else ScanStatus.FAILED
    reasons: list[dict[str, Any]] = []
    codes = list(event.codes)
    if event.report_key:
        from_report, report_codes = _report_reasons(ctx, event.bucket, event.report_key)
        reasons += from_report
        codes += report_codes
    if event.error is not None:
        caught = error_reason(event.error)
        reasons.append(caught)
        codes.append(caught["error"])
        batch_failure = scan.get(failures.FIELD)
        if caught["error"].startswith("States.") and isinstance(batch_failure, Mapping):
            # A failed Map names no cause: the batch recorded its own (workflow.failures).
            reasons.append({"error": str(batch_failure["error"]), "reason": str(batch_failure["reason"])})
            codes.append(str(batch_failure["error"]))
    codes = sorted(set(codes))
    store = ctx.store(event.bucket)
    try:
        stored = load_manifest(store, event.manifest_key, event.scan_id, limits=ctx.settings.manifest_limits)
        tagged, refused = _tag_originals(store, [item.key for item in stored.items], str(status))
        if refused:
            codes = sorted({*codes, "ORIGINALS_NOT_TAGGED"})
    except (ObjectNotFoundError, ValueError):
        # No manifest to find the originals by (or not one we can read): record that, tag nothing.
        tagged = 0
        codes = sorted({*codes, "MANIFEST_UNREADABLE"})
    kept = reasons[:MAX_REASONS]
    values = {
        "reason": _summary(str(status), reasons, codes),
        "reasons": kept,
        "codes": codes,
        "quarantine": {
            "requested": str(requested),
            "report_key": event.report_key or "",
            "originals_tagged": tagged,
            "tag": f"{TAG}={status}",
        },
    }
    try:
        advance(
            ctx.table,
            ctx.events,
            event.scan_id,
            status,
            expect={s for s in ScanStatus if can_transition(s, status)},
            values=values,
            reasons=kept[:HISTORY_REASONS],
            codes=codes,
        )
    except InvalidTransitionError:
        # Moved to a terminal status meanwhile (a concurrent quarantine): that record stands.
        scan = read_scan(ctx.table, event.scan_id)
        return {"status": str(scan["status"]), "reasons": scan.get("reasons", [])}
    return {"status": str(status), "reasons": kept}
