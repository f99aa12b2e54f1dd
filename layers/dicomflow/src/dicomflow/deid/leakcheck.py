"""The leak check: is any identifying value of the original still in the de-identified output?

Two independent searches, both must come out clean:

* structured: every element of the output, nested, private and file meta included, as
  normalised text (original UIDs are matched exactly against UI values and as substrings of text);
* raw: the encoded header bytes (preamble, file meta, data set, and any elements after Pixel Data),
  upper-cased, after masking the output's own new UIDs (a 39-digit ``2.25`` UID can contain any
  short digit string by chance). Original UIDs are looked for as whole runs of digits and dots
  (how a UID is encoded), which keeps the check linear in the header size with thousands of UIDs.

Values shorter than :data:`~dicomflow.deid.policy.MIN_IDENTIFYING_LENGTH` characters once
normalised ("M", "F", "NO") are not searched for: they are counted in ``skipped_short``. Hits are
reported by element tag and by count, never by value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from dicomflow.deid.policy import IdentifyingValues, TermIndex, normalise, term_index

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

_UID_RUN = re.compile(rb"[0-9.]{8,}")
_UID_RUN_TEXT = re.compile(r"[0-9.]{8,}")


@dataclass(frozen=True)
class LeakReport:
    """Result of the leak check (no values in it, only where and how many)."""

    passed: bool
    values_checked: int
    skipped_short: int
    element_hits: list[str] = field(default_factory=list)  # tags, e.g. "(0010,0010)"
    raw_hits: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "values_checked": self.values_checked,
            "skipped_short": self.skipped_short,
            "element_hits": self.element_hits,
            "raw_hits": self.raw_hits,
        }


def check_leaks(
    identifying: IdentifyingValues,
    datasets: list[Dataset],
    raw: bytes,
    new_uids: set[str] | None = None,
    own_text: frozenset[str] = frozenset(),
) -> LeakReport:
    """Search ``datasets`` (e.g. data set, file meta, trailing elements) and ``raw`` bytes.

    ``own_text``: normalised strings the de-identifier wrote itself (see
    :attr:`~dicomflow.deid.policy.Recorded.own_text`), blanked before searching.

    Examples
    --------
    >>> from pydicom.dataset import Dataset
    >>> ids = IdentifyingValues()
    >>> ids.add("PN", "Doe^Johnathan")
    >>> ds = Dataset()
    >>> ds.SeriesDescription = "chest for JOHNATHAN"
    >>> report = check_leaks(ids, [ds], b"")
    >>> report.passed, report.element_hits
    (False, ['(0008,103E)'])
    """
    from dicomflow.deid.actions import walk_values

    values = (triple for ds in datasets for triple in walk_values(ds))
    return check_leak_values(identifying, values, raw, new_uids, own_text)


def check_leak_values(
    identifying: IdentifyingValues,
    values: Iterable[tuple[int, str, str]],
    raw: bytes,
    new_uids: set[str] | None = None,
    own_text: frozenset[str] = frozenset(),
) -> LeakReport:
    """The leak check over (tag, VR, text value) triples of the output, every element, nested,
    private and file meta included (either engine's), and the ``raw`` encoded header bytes."""
    search = LeakSearch(frozenset(identifying.text), own_text)
    return search.report(identifying, [search.checks(values)], raw, new_uids)


@dataclass(frozen=True, slots=True)
class ValueChecks:
    """The structured leak check of some output values, done as far as it does not depend on the
    file's original UIDs: the tags whose text holds an identifying term (hits already), and the
    UID values and the UID-like runs of other values, to be looked up among the original UIDs.

    The same values give the same checks for the same identifying text, so an engine may keep
    them for an element that recurs in the files of a series."""

    text_hits: tuple[int, ...]
    uid_values: tuple[tuple[int, str], ...]  # (tag, UI value)
    uid_runs: tuple[tuple[int, tuple[str, ...]], ...]  # (tag, UID-like runs of one text value)


class LeakSearch:
    """The leak check for one patient's identifying text and the de-identifier's own words."""

    def __init__(self, identifying_text: frozenset[str], own_text: frozenset[str]) -> None:
        self.index = term_index(identifying_text)
        self.own = tuple(sorted(own_text, key=len, reverse=True))

    def checks(self, values: Iterable[tuple[int, str, str]]) -> ValueChecks:
        """Search (tag, VR, text value) triples for the identifying text."""
        text_hits: list[int] = []
        uid_values: list[tuple[int, str]] = []
        uid_runs: list[tuple[int, tuple[str, ...]]] = []
        # An enhanced multi-frame header repeats the same values in thousands of frames: each
        # distinct value is searched once.
        seen_text: dict[str, bool] = {}
        index, own = self.index, self.own
        for tag, vr, value in values:
            if vr == "UI":
                uid_values.append((tag, value.strip("\0 ")))
                continue
            found = seen_text.get(value)
            if found is None:
                found = seen_text[value] = bool(index.find(_searchable(value, own)))
            if found:
                text_hits.append(tag)
            elif runs := _uid_runs(value):
                uid_runs.append((tag, runs))
        return ValueChecks(tuple(text_hits), tuple(uid_values), tuple(uid_runs))

    def report(
        self,
        identifying: IdentifyingValues,
        checks: Iterable[ValueChecks],
        raw: bytes,
        new_uids: set[str] | None = None,
    ) -> LeakReport:
        """The verdict: the checks of every output value (with this file's original UIDs looked
        up), and the search of the ``raw`` encoded header bytes."""
        uids = identifying.uids
        hits: list[int] = []
        for check in checks:
            hits.extend(check.text_hits)
            hits.extend(tag for tag, uid in check.uid_values if uid in uids)
            hits.extend(tag for tag, runs in check.uid_runs if any(run in uids for run in runs))
        tags = sorted(f"({tag >> 16:04X},{tag & 0xFFFF:04X})" for tag in hits)
        raw_hits = _raw_hits(identifying, self.index, raw, new_uids or set(), self.own)
        checked = len(identifying.text) + len(uids)
        return LeakReport(not tags and raw_hits == 0, checked, identifying.skipped_short, tags, raw_hits)


@lru_cache(maxsize=1 << 14)
def _searchable(value: str, own: tuple[str, ...]) -> str:
    return _blank(normalise(value), own)


@lru_cache(maxsize=1 << 14)
def _uid_runs(value: str) -> tuple[str, ...]:
    return tuple(_UID_RUN_TEXT.findall(value))


def _blank(text: str, own: tuple[str, ...] | list[str]) -> str:
    for phrase in own:
        if phrase in text:
            text = text.replace(phrase, "\x00")
    return text


def _raw_hits(
    identifying: IdentifyingValues, index: TermIndex, raw: bytes, new_uids: set[str], own: tuple[str, ...]
) -> int:
    if not raw:
        return 0
    mine = {uid.encode("ascii") for uid in new_uids}
    # Mask our own UIDs (whole runs of digits and dots), keep everything else as is.
    masked = _UID_RUN.sub(lambda m: b"#" * len(m.group()) if m.group() in mine else m.group(), raw)
    # Folding PN separators and padding like normalise(): "DOE^JOHN" in the bytes is "DOE JOHN".
    text = masked.decode("latin-1").upper().replace("^", " ").replace("=", " ").replace("\0", " ")
    found = set(index.find(_blank(" ".join(text.split()), own)))
    count = len(found)
    upper = masked.upper()
    for term in identifying.text - found:
        # a multi-byte character set: look for the UTF-8 encoding too
        utf8 = term.encode("utf-8")
        if utf8 != term.encode("latin-1", "replace") and utf8 in upper:
            count += 1
    uid_runs = {run.decode("ascii") for run in _UID_RUN.findall(masked)}
    count += len(uid_runs & identifying.uids)
    return count
