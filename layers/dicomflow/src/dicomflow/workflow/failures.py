"""The last failure of a Map's batch, kept on the scan so that the quarantine can say what failed.

A Distributed Map whose child failed fails with ``States.ExceedToleratedFailureThreshold`` (in AWS
and in the local stack alike): the child's error and cause stay in the child execution, so the
Catch that sends the scan to quarantine knows only that some batch failed. The batch handlers
therefore record their failure (:func:`recorded`) on the scan item as ``batch_failure``: the step,
the batch's first index, the error's class name and its message when it is one of dicomflow's
(written free of patient data; any other error by its class name only). The quarantine adds it to
the reasons when the error it caught is the state machine's own (``States.*``).

Recording is best effort: the failure being recorded may be the scans table's own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from dicomflow.errors import DicomflowError

FIELD = "batch_failure"
MAX_MESSAGE = 300


def describe(step: str, first: int | None, exc: BaseException) -> dict[str, Any]:
    """The recorded failure of ``exc`` (no message unless it is one of dicomflow's errors).

    Examples
    --------
    >>> describe("validate_batch", 0, KeyError("Doe^Jane"))["reason"]
    'validate_batch: unexpected KeyError'
    """
    name = type(exc).__name__
    message = str(exc)[:MAX_MESSAGE] if isinstance(exc, DicomflowError) else f"unexpected {name}"
    return {"step": step, "first": first, "error": name, "reason": f"{step}: {message}"}


@contextmanager
def recorded(step: str, event: Mapping[str, Any]) -> Iterator[None]:
    """Run the body; on an exception, record it on the scan (best effort) and re-raise it."""
    try:
        yield
    except Exception as exc:
        batch = event.get("BatchInput") if isinstance(event, Mapping) else None
        scan_id = batch.get("scan_id") if isinstance(batch, Mapping) else None
        items = event.get("Items") if isinstance(event, Mapping) else None
        first = (
            items[0].get("index")
            if isinstance(items, list) and items and isinstance(items[0], Mapping)
            else None
        )
        if isinstance(scan_id, str) and scan_id:
            try:
                from dicomflow.workflow.context import step_context

                step_context().table.set_scan_values(scan_id, {FIELD: describe(step, first, exc)})
            except Exception:  # noqa: BLE001 - best effort: the original error is what matters
                pass
        raise
