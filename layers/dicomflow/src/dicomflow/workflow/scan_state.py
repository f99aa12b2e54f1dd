"""Status changes of a scan from the workflow: conditional, recorded in the history, announced.

A step moves the scan with :func:`advance`: the write is conditional on the status it read
(``ScansTable.transition``, which appends the history entry in the same write), and an EventBridge
event follows every change. A step retried after its change finds the scan already in the target
status: that is success (the event is published again, see :mod:`dicomflow.workflow.events`).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dicomflow.errors import InvalidInputError, InvalidTransitionError, TransientStorageError
from dicomflow.status import ScanStatus
from dicomflow.upload.scans_table import HISTORY, ScansTable
from dicomflow.workflow.events import StatusEvents

#: Conditional writes lost to a concurrent change before giving up (the workflow then retries).
_ATTEMPTS = 5


@dataclass(frozen=True)
class Change:
    """A status change (or the finding that it had happened already: ``changed`` False)."""

    scan_id: str
    status: ScanStatus
    previous: ScanStatus | None
    at: str
    changed: bool


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_scan(table: ScansTable, scan_id: str) -> dict[str, Any]:
    scan = table.get_scan(scan_id)
    if scan is None:
        raise InvalidInputError(f"scan {scan_id} does not exist")
    return scan


def advance(
    table: ScansTable,
    events: StatusEvents,
    scan_id: str,
    new: ScanStatus,
    *,
    expect: Collection[ScanStatus],
    values: Mapping[str, Any] | None = None,
    reasons: list[Any] | None = None,
    codes: Sequence[str] = (),
) -> Change:
    """Move the scan to ``new`` from one of ``expect``; idempotent (already ``new``: success).

    Raises
    ------
    InvalidTransitionError
        The scan is in a status that is neither ``new`` nor one of ``expect``.
    """
    for _ in range(_ATTEMPTS):
        scan = read_scan(table, scan_id)
        current = ScanStatus(scan["status"])
        if current is new:
            previous, at = _last_change(scan, new)
            events.publish(scan_id, str(new), previous and str(previous), at, codes)
            return Change(scan_id, new, previous, at, changed=False)
        if current not in expect:
            wanted = ", ".join(sorted(str(s) for s in expect))
            raise InvalidTransitionError(f"scan {scan_id} is {current}; moving it to {new} needs {wanted}")
        at = now()
        if table.transition(scan_id, current, new, values, at=at, reasons=reasons):
            events.publish(scan_id, str(new), str(current), at, codes)
            return Change(scan_id, new, current, at, changed=True)
    raise TransientStorageError(f"scan {scan_id}'s status kept changing while being moved to {new}; retry")


def _last_change(scan: Mapping[str, Any], status: ScanStatus) -> tuple[ScanStatus | None, str]:
    history = scan.get(HISTORY) or []
    for i in range(len(history) - 1, -1, -1):
        if history[i].get("status") == str(status):
            previous = ScanStatus(history[i - 1]["status"]) if i > 0 else None
            return previous, str(history[i].get("at") or scan.get("updated_at") or now())
    return None, str(scan.get("updated_at") or now())
