"""The hand-off from upload to processing: a small interface the workflow plugs into.

:meth:`ScanProcessor.start` is called once per scan, after the scan moved to UPLOADED (the
conditional transition decides who calls it). Implementations must still be idempotent on
``scan_id`` (a crash between the transition and the call is recovered by calling again):
Step Functions does this with the execution name.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Protocol


class ScanProcessor(Protocol):
    def start(self, scan_id: str, manifest_key: str) -> str:
        """Start processing the scan whose manifest is at ``manifest_key``; return a reference
        (an execution ARN, a local id) for the scan record."""


@dataclass(frozen=True)
class HandOff:
    scan_id: str
    manifest_key: str


class RecordingProcessor:
    """The local stand-in until the workflow exists: records every hand-off, in order.

    Examples
    --------
    >>> p = RecordingProcessor()
    >>> p.start("scan-1", "scans/scan-1/manifest.json")
    'local:scan-1'
    >>> [h.scan_id for h in p.hand_offs]
    ['scan-1']
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hand_offs: list[HandOff] = []

    def start(self, scan_id: str, manifest_key: str) -> str:
        with self._lock:
            self.hand_offs.append(HandOff(scan_id, manifest_key))
        return f"local:{scan_id}"


class StepFunctionsProcessor:
    """Starts one execution per scan, named after the scan: a repeated start is a no-op."""

    def __init__(self, client: Any, state_machine_arn: str, bucket: str) -> None:
        self.client = client
        self.state_machine_arn = state_machine_arn
        self.bucket = bucket

    def start(self, scan_id: str, manifest_key: str) -> str:
        payload = json.dumps({"scan_id": scan_id, "bucket": self.bucket, "manifest_key": manifest_key})
        try:
            response = self.client.start_execution(
                stateMachineArn=self.state_machine_arn, name=scan_id, input=payload
            )
        except self.client.exceptions.ExecutionAlreadyExists:
            # Same name, same input: the execution already runs for this scan.
            return f"{self.state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{scan_id}"
        return str(response["executionArn"])
