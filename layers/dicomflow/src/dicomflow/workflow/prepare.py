"""``prepare_scan``: the execution's first step. UPLOADED -> VALIDATING; the work items for the Maps.

Reads the manifest the upload API stored, writes ``scans/{id}/work/items.json`` (one ``{"index",
"key", "size", "sha256"}`` per file: keys and figures, no names) and moves the scan to VALIDATING.
Naturally idempotent: the items are a pure overwrite, and a scan already VALIDATING is success.
"""

from __future__ import annotations

from typing import Any

from dicomflow.status import ScanStatus
from dicomflow.workflow.context import StepContext
from dicomflow.workflow.models import PrepareScanEvent
from dicomflow.workflow.scan_state import advance
from dicomflow.workflow.work import items_key, load_manifest, write_json


def run(ctx: StepContext, event: PrepareScanEvent) -> dict[str, Any]:
    store = ctx.store(event.bucket)
    stored = load_manifest(store, event.manifest_key, event.scan_id, limits=ctx.settings.manifest_limits)
    key = items_key(event.scan_id)
    write_json(store, key, [item.to_dict() for item in stored.items])
    advance(
        ctx.table,
        ctx.events,
        event.scan_id,
        ScanStatus.VALIDATING,
        expect={ScanStatus.UPLOADED},
        values={"items_key": key, "file_count": len(stored.items)},
    )
    return {
        "scan_id": event.scan_id,
        "bucket": event.bucket,
        "manifest_key": event.manifest_key,
        "items_key": key,
        "file_count": len(stored.items),
    }
