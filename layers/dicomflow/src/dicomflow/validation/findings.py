"""Findings and reports: what validation says about a file or a scan, as data.

A :class:`Finding` names a rule by a stable code (``UID_INVALID``), says what is wrong and what to do
in words, and points at the element (keyword and tag) concerned. It never carries a patient's value:
messages name elements and give counts, lengths and expected numbers, not the values read.

A :class:`ValidationReport` gathers the findings about one subject (a file, or ``"scan"``) and gives
the verdict: rejected when any finding is an error, accepted otherwise (warnings are kept, not fatal).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    """How much a finding weighs: an error rejects, a warning is reported only."""

    ERROR = "error"
    WARNING = "warning"


class Verdict(StrEnum):
    """The outcome of validation."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Finding:
    """One thing validation found.

    Parameters
    ----------
    code : str
        Stable, upper-case rule code (``"PIXEL_LENGTH_MISMATCH"``); tools match on it.
    message : str
        What is wrong and, where it helps, what to do. Never a patient's value.
    element : str, optional
        The element concerned: keyword and tag, e.g. ``"SOPInstanceUID (0008,0018)"``.
    severity : Severity
        :attr:`Severity.ERROR` (the default) rejects; :attr:`Severity.WARNING` does not.

    Examples
    --------
    >>> f = Finding("UID_INVALID", "the UID has a component with a leading zero", "StudyInstanceUID")
    >>> f.to_dict()["severity"]
    'error'
    """

    code: str
    message: str
    element: str | None = None
    severity: Severity = Severity.ERROR

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "severity": self.severity.value, "message": self.message}
        if self.element is not None:
            out["element"] = self.element
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(
            code=str(data["code"]),
            message=str(data["message"]),
            element=data.get("element"),
            severity=Severity(data.get("severity", Severity.ERROR)),
        )


@dataclass(frozen=True)
class ValidationReport:
    """The findings about one subject and the verdict they lead to.

    Parameters
    ----------
    subject : str
        What was validated: a file's relative name, or ``"scan"``.
    findings : tuple of Finding
        Everything found, errors and warnings.
    details : mapping
        Small, PHI-free facts worth reporting (size, SHA-256, transfer syntax, the per-file summary).

    Examples
    --------
    >>> report = ValidationReport("a.dcm", (Finding("NO_PREAMBLE", "no 128-byte preamble"),))
    >>> report.verdict
    <Verdict.REJECTED: 'rejected'>
    >>> report.codes
    ('NO_PREAMBLE',)
    >>> ValidationReport("b.dcm").accepted
    True
    """

    subject: str
    findings: tuple[Finding, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "findings", tuple(self.findings))

    @property
    def verdict(self) -> Verdict:
        if any(f.severity is Severity.ERROR for f in self.findings):
            return Verdict.REJECTED
        return Verdict.ACCEPTED

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPTED

    @property
    def codes(self) -> tuple[str, ...]:
        """The codes of the findings, in order (errors and warnings)."""
        return tuple(f.code for f in self.findings)

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    def with_findings(self, more: Iterable[Finding]) -> ValidationReport:
        return ValidationReport(self.subject, (*self.findings, *more), self.details)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "subject": self.subject,
            "verdict": self.verdict.value,
            "findings": [f.to_dict() for f in self.findings],
        }
        out.update(self.details)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValidationReport:
        details = {k: v for k, v in data.items() if k not in ("subject", "verdict", "findings")}
        return cls(
            subject=str(data["subject"]),
            findings=tuple(Finding.from_dict(f) for f in data.get("findings", ())),
            details=details,
        )


def element_label(keyword: str, tag: int) -> str:
    """``"SOPInstanceUID (0008,0018)"``: how findings name an element.

    Examples
    --------
    >>> element_label("Rows", 0x00280010)
    'Rows (0028,0010)'
    """
    return f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"
