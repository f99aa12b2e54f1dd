"""``publish``: the results record on the scan, ANALYZING -> COMPLETED, the status event.

Reads ``results.json`` that the analysis task wrote under the results prefix and records where the
outputs are (bucket and keys; the measurements stay in results.json). Naturally idempotent: the
record is the same on a retry, and a scan already COMPLETED is success.
"""

from __future__ import annotations

from typing import Any

from dicomflow.errors import AnalysisError, ObjectNotFoundError
from dicomflow.privacy import fingerprint
from dicomflow.status import ScanStatus
from dicomflow.workflow.context import StepContext
from dicomflow.workflow.models import PublishEvent
from dicomflow.workflow.scan_state import advance
from dicomflow.workflow.work import read_json

RESULTS_NAME = "results.json"
#: The outputs recorded on the scan (keys in the results bucket), by results.json's names.
OUTPUTS = ("results", "seg", "sr", "preview")


def run(ctx: StepContext, event: PublishEvent) -> dict[str, Any]:
    store = ctx.store(event.results_bucket)
    prefix = event.results_prefix.rstrip("/") + "/" if event.results_prefix else ""
    key = prefix + RESULTS_NAME
    try:
        results = read_json(store, key)
    except ObjectNotFoundError:
        raise AnalysisError(f"the analysis wrote no results ({fingerprint(key)} is missing)") from None
    outputs = results.get("outputs") if isinstance(results, dict) else None
    if not isinstance(outputs, dict):
        raise AnalysisError("results.json has no outputs")
    record = {
        "bucket": event.results_bucket,
        "prefix": prefix,
        "results_key": key,
        "outputs": {name: str(outputs[name]) for name in OUTPUTS if isinstance(outputs.get(name), str)},
    }
    advance(
        ctx.table,
        ctx.events,
        event.scan_id,
        ScanStatus.COMPLETED,
        expect={ScanStatus.ANALYZING},
        values={"results": record},
    )
    return {"status": str(ScanStatus.COMPLETED), "results_key": key}
