"""The events the state machine sends each step, parsed into small typed models.

One model per step, named after it; ``parse`` checks the fields the step needs and raises
:class:`~dicomflow.errors.InvalidInputError` naming the field (never echoing a value). The shapes
are the contract in :mod:`dicomflow.workflow`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dicomflow.errors import InvalidInputError
from dicomflow.manifest import check_identifier
from dicomflow.workflow.work import Item


def _field(
    event: Mapping[str, Any], name: str, kind: type | tuple[type, ...] = str, *, where: str = ""
) -> Any:
    if not isinstance(event, Mapping) or name not in event:
        raise InvalidInputError(f"the step's event lacks {where}{name}")
    value = event[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidInputError(f"the step's event has {where}{name} of the wrong type")
    return value


def _scan_id(event: Mapping[str, Any], where: str = "") -> str:
    return check_identifier(_field(event, "scan_id", where=where), "scan_id")


@dataclass(frozen=True)
class PrepareScanEvent:
    """``{"scan_id", "bucket", "manifest_key"}``: the execution's input."""

    scan_id: str
    bucket: str
    manifest_key: str

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> PrepareScanEvent:
        return cls(_scan_id(event), _field(event, "bucket"), _field(event, "manifest_key"))


@dataclass(frozen=True)
class BatchEvent:
    """``{"Items": [{"index", "key", "size", "sha256"}...], "BatchInput": {"scan_id", "bucket",
    "output_bucket"?}}``: a Distributed Map's batch (ItemBatcher with BatchInput)."""

    scan_id: str
    bucket: str
    items: tuple[Item, ...]
    output_bucket: str | None = None

    @property
    def first(self) -> int:
        return self.items[0].index

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> BatchEvent:
        batch = _field(event, "BatchInput", Mapping)
        raw_items = _field(event, "Items", list)
        if not raw_items:
            raise InvalidInputError("the step's event has an empty Items list")
        try:
            items = tuple(Item.from_dict(i) for i in raw_items)
        except (KeyError, TypeError, ValueError):
            raise InvalidInputError(
                "the step's event has an item without index, key, size and sha256"
            ) from None
        output = batch.get("output_bucket")
        return cls(
            _scan_id(batch, "BatchInput."),
            _field(batch, "bucket", where="BatchInput."),
            tuple(sorted(items, key=lambda i: i.index)),
            output if isinstance(output, str) else None,
        )


@dataclass(frozen=True)
class ValidateScanEvent:
    """``{"scan_id", "bucket", "manifest_key", "file_count"}``."""

    scan_id: str
    bucket: str
    manifest_key: str
    file_count: int

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> ValidateScanEvent:
        return cls(
            _scan_id(event),
            _field(event, "bucket"),
            _field(event, "manifest_key"),
            _field(event, "file_count", int),
        )


@dataclass(frozen=True)
class DeidentifyScanEvent:
    """``{"scan_id", "bucket", "output_bucket", "file_count"}`` (``manifest_key`` optional: the
    stored manifest, default ``scans/{id}/manifest.json``)."""

    scan_id: str
    bucket: str
    output_bucket: str
    file_count: int
    manifest_key: str | None = None

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> DeidentifyScanEvent:
        manifest_key = event.get("manifest_key") if isinstance(event, Mapping) else None
        return cls(
            _scan_id(event),
            _field(event, "bucket"),
            _field(event, "output_bucket"),
            _field(event, "file_count", int),
            manifest_key if isinstance(manifest_key, str) else None,
        )


@dataclass(frozen=True)
class PublishEvent:
    """``{"scan_id", "results_bucket", "results_prefix"}``."""

    scan_id: str
    results_bucket: str
    results_prefix: str

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> PublishEvent:
        return cls(_scan_id(event), _field(event, "results_bucket"), _field(event, "results_prefix"))


@dataclass(frozen=True)
class QuarantineEvent:
    """``{"scan_id", "bucket", "manifest_key", "outcome", "codes"?, "report_key"?, "error"?}``."""

    scan_id: str
    bucket: str
    manifest_key: str
    outcome: str
    codes: tuple[str, ...] = ()
    report_key: str | None = None
    error: Mapping[str, Any] | None = None

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> QuarantineEvent:
        outcome = _field(event, "outcome")
        if outcome not in ("REJECTED", "FAILED"):
            raise InvalidInputError("the step's event has an outcome other than REJECTED or FAILED")
        codes = event.get("codes") or ()
        report_key = event.get("report_key")
        error = event.get("error")
        return cls(
            _scan_id(event),
            _field(event, "bucket"),
            _field(event, "manifest_key"),
            outcome,
            tuple(str(c) for c in codes) if isinstance(codes, list | tuple) else (),
            report_key if isinstance(report_key, str) and report_key else None,
            error if isinstance(error, Mapping) else None,
        )


#: Result fields a handler may log: statuses, verdicts, counts and codes (never keys or reasons).
_LOGGABLE = (
    "status",
    "accepted",
    "passed",
    "file_count",
    "first",
    "count",
    "rejected",
    "held",
    "failed",
    "codes",
)


def log_fields(result: Mapping[str, Any]) -> dict[str, Any]:
    """What of a step's result goes into its log line.

    Examples
    --------
    >>> log_fields({"status": "REJECTED", "reasons": [{"index": 1, "key": "k"}], "codes": ["X"]})
    {'status': 'REJECTED', 'codes': ['X'], 'reasons': 1}
    """
    out = {k: result[k] for k in _LOGGABLE if k in result}
    for listed in ("reasons", "rejected_files"):
        if isinstance(result.get(listed), list):
            out[listed] = len(result[listed])
    return out
