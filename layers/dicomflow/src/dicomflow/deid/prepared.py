"""A file's de-identified header, decided before a byte of pixels moves (whichever engine made it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dicomflow.deid.leakcheck import LeakReport
from dicomflow.deid.report import FileReport, Verdict


@dataclass
class Prepared:
    """The new header (preamble, file meta, data set) and trailing elements, where the pixels to
    copy are in the source, and what was found and done."""

    new_header: bytes
    pixel_start: int
    pixel_end: int
    new_trailing: bytes
    trailing_note: str | None
    leak: LeakReport
    held: list[str]
    transfer_syntax: str | None
    sop_instance_uid: str | None  # the de-identified one
    actions: dict[str, int] = field(default_factory=dict)
    header_bytes_read: int = 0
    engine: str = "raw"  # "raw" (dicomflow.deid.rewrite) or "pydicom" (dicomflow.deid.pydicom_engine)

    @property
    def pixel_length(self) -> int:
        return self.pixel_end - self.pixel_start

    def fill(self, report: FileReport) -> None:
        """Copy what the report carries and set its verdict: FAILED on a leak, HELD for review on
        burned-in annotation, else PASSED (the pixel copy may still fail it)."""
        report.engine = self.engine
        report.transfer_syntax = self.transfer_syntax
        report.sop_instance_uid = self.sop_instance_uid
        report.leak_check = self.leak.as_dict()
        report.trailing = self.trailing_note
        report.actions = dict(self.actions)
        report.header_bytes_read = self.header_bytes_read
        report.header_bytes_written = len(self.new_header)
        report.pixel_bytes = self.pixel_length
        judge(report, self.leak, self.held)


def judge(report: FileReport, leak: LeakReport, held: list[str], pixels_differ: str | None = None) -> None:
    """Set the verdict, every engine alike: FAILED on a leak, or on ``pixels_differ`` (the reason
    the pixels are not proven untouched); HELD for review on burned-in annotation (``held``: why);
    else PASSED."""
    if not leak.passed:
        report.verdict = Verdict.FAILED
        report.reasons.append(
            f"leak check: {len(leak.element_hits)} element hit(s), {leak.raw_hits} raw hit(s)"
        )
    elif pixels_differ:
        report.verdict = Verdict.FAILED
        report.reasons.append(pixels_differ)
    elif held:
        report.verdict = Verdict.HELD
        report.reasons.extend(held)
    else:
        report.verdict = Verdict.PASSED
