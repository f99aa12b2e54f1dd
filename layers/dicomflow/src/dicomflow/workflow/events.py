"""Scan status events on EventBridge: source ``dicomflow``, detail-type ``Scan Status Changed``.

The detail is ``{"scan_id", "status", "previous", "at", "codes"}``: ids, statuses, a time and
reason codes, never a value read from a file or a file name. Delivery is at least once: a step
retried after its transition (the first attempt died before publishing) publishes again, so a
consumer keys on ``(scan_id, status)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from dicomflow.errors import StorageError, TransientStorageError

SOURCE = "dicomflow"
DETAIL_TYPE = "Scan Status Changed"
_TRANSIENT = {"ThrottlingException", "InternalException", "ServiceUnavailableException", "InternalFailure"}


def status_detail(
    scan_id: str, status: str, previous: str | None, at: str, codes: Sequence[str] = ()
) -> dict[str, Any]:
    """The event's detail.

    Examples
    --------
    >>> status_detail("s1", "VALIDATING", "UPLOADED", "2026-01-01T00:00:00Z")["previous"]
    'UPLOADED'
    """
    return {"scan_id": scan_id, "status": status, "previous": previous, "at": at, "codes": list(codes)}


class StatusEvents:
    """Publishes status changes to one bus.

    Parameters
    ----------
    client
        A boto3 EventBridge client.
    bus_name
        The bus's name or ARN.
    """

    def __init__(self, client: Any, bus_name: str) -> None:
        self.client = client
        self.bus_name = bus_name

    def publish(
        self, scan_id: str, status: str, previous: str | None, at: str, codes: Sequence[str] = ()
    ) -> None:
        entry = {
            "Source": SOURCE,
            "DetailType": DETAIL_TYPE,
            "Detail": json.dumps(status_detail(scan_id, status, previous, at, codes)),
            "EventBusName": self.bus_name,
            "Resources": [],
        }
        try:
            response = self.client.put_events(Entries=[entry])
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in _TRANSIENT or isinstance(exc, OSError):
                raise TransientStorageError(
                    f"EventBridge put_events failed ({code or 'network'}); retry"
                ) from exc
            raise StorageError(f"EventBridge put_events failed ({code or type(exc).__name__})") from exc
        if response.get("FailedEntryCount"):
            code = str(response["Entries"][0].get("ErrorCode", "unknown"))
            # A failed entry is throttling or an internal failure more often than not: retry.
            raise TransientStorageError(f"EventBridge refused the status event ({code}); retry")
