"""Scan status and its lifecycle.

A scan moves forward only::

    UPLOADING -> UPLOADED -> VALIDATING -> DEIDENTIFYING -> ANALYZING -> COMPLETED
                 any non-terminal state -> FAILED;  VALIDATING / DEIDENTIFYING -> REJECTED

REJECTED means the data itself was refused (non-conformant DICOM, a leak, burned-in text held for
review): the originals are kept with the reasons. FAILED means the pipeline could not finish
(an upload aborted, an analysis error); the reason is recorded too.
"""

from __future__ import annotations

from enum import StrEnum

from dicomflow.errors import InvalidTransitionError


class ScanStatus(StrEnum):
    UPLOADING = "UPLOADING"
    UPLOADED = "UPLOADED"
    VALIDATING = "VALIDATING"
    DEIDENTIFYING = "DEIDENTIFYING"
    ANALYZING = "ANALYZING"
    COMPLETED = "COMPLETED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return not _ALLOWED[self]


_ALLOWED: dict[ScanStatus, frozenset[ScanStatus]] = {
    ScanStatus.UPLOADING: frozenset({ScanStatus.UPLOADED, ScanStatus.FAILED}),
    ScanStatus.UPLOADED: frozenset({ScanStatus.VALIDATING, ScanStatus.FAILED}),
    ScanStatus.VALIDATING: frozenset({ScanStatus.DEIDENTIFYING, ScanStatus.REJECTED, ScanStatus.FAILED}),
    ScanStatus.DEIDENTIFYING: frozenset({ScanStatus.ANALYZING, ScanStatus.REJECTED, ScanStatus.FAILED}),
    ScanStatus.ANALYZING: frozenset({ScanStatus.COMPLETED, ScanStatus.FAILED}),
    ScanStatus.COMPLETED: frozenset(),
    ScanStatus.REJECTED: frozenset(),
    ScanStatus.FAILED: frozenset(),
}


def allowed_next(status: ScanStatus) -> frozenset[ScanStatus]:
    """The statuses that may follow ``status``."""
    return _ALLOWED[ScanStatus(status)]


def can_transition(current: ScanStatus, new: ScanStatus) -> bool:
    return ScanStatus(new) in _ALLOWED[ScanStatus(current)]


def check_transition(current: ScanStatus, new: ScanStatus) -> ScanStatus:
    """Return ``new`` if ``current -> new`` is allowed, else raise :class:`InvalidTransitionError`.

    Examples
    --------
    >>> check_transition(ScanStatus.UPLOADING, ScanStatus.UPLOADED)
    <ScanStatus.UPLOADED: 'UPLOADED'>
    """
    current, new = ScanStatus(current), ScanStatus(new)
    if new not in _ALLOWED[current]:
        allowed = ", ".join(sorted(_ALLOWED[current])) or "none: it is terminal"
        raise InvalidTransitionError(
            f"scan status cannot go from {current} to {new} (allowed from {current}: {allowed})"
        )
    return new
