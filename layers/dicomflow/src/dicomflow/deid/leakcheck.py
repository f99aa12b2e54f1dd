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

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from dicomflow.deid.policy import UID_LIKE, IdentifyingValues, TermIndex, normalise, term_index

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


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
        return self.search(values)[0]

    def search(
        self, values: Iterable[tuple[int, str, str]]
    ) -> tuple[ValueChecks, frozenset[str], tuple[str, ...]]:
        """:meth:`checks`, with the terms found and the texts searched (as searched: normalised,
        our own words blanked). With those, checks made for one identifying text are known to
        hold for another (:func:`~dicomflow.deid.policy.finds_the_same`) without searching again."""
        text_hits: list[int] = []
        uid_values: list[tuple[int, str]] = []
        uid_runs: list[tuple[int, tuple[str, ...]]] = []
        terms: set[str] = set()
        searched: list[str] = []
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
                searchable = _searchable(value, own)
                searched.append(searchable)
                hits = index.find(searchable)
                terms.update(hits)
                found = seen_text[value] = bool(hits)
            if found:
                text_hits.append(tag)
            elif runs := _uid_runs(value):
                uid_runs.append((tag, runs))
        checks = ValueChecks(tuple(text_hits), tuple(uid_values), tuple(uid_runs))
        return checks, frozenset(terms), tuple(searched)

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
        for check in checks:  # most elements have nothing to look up: skipped at the cost of a test
            if check.text_hits:
                hits.extend(check.text_hits)
            if check.uid_values and uids:
                hits.extend(tag for tag, uid in check.uid_values if uid in uids)
            if check.uid_runs and uids:
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
    return tuple(UID_LIKE.findall(value))


def _blank(text: str, own: tuple[str, ...] | list[str]) -> str:
    for phrase in own:
        if phrase in text:
            text = text.replace(phrase, "\x00")
    return text


def _fold_table() -> bytes:
    """A byte table doing to Latin-1 text what ``normalise`` does, one byte for one: upper case,
    and PN separators, padding and white space (as ``str.split`` sees it) to a blank. Three
    letters have no one-byte upper case: ``ß`` (``SS``) is replaced before the table is applied;
    ``ÿ`` and ``µ`` (``Ÿ``, Greek capital mu) are left as they are, which no normalised term holds (a
    term holding their upper cases sends the search through ``str.upper`` instead)."""
    table = bytearray(range(256))
    for b in range(256):
        upper = chr(b).upper()
        if len(upper) != 1 or ord(upper) > 0xFF:
            continue
        table[b] = 0x20 if upper.isspace() or upper in "^=\x00" else ord(upper)
    return bytes(table)


_FOLD = _fold_table()
#: Upper cases of Latin-1 letters outside Latin-1 (see _fold_table).
_FOLD_OUTSIDE = ("\u0178", "\u039c")
_RUN_BYTES = frozenset(b"0123456789.")


def _whole_runs(raw: bytes, run: bytes) -> list[int]:
    """Where ``run`` occurs in ``raw`` as a whole run of digits and dots (not inside a longer one)."""
    found = []
    start = raw.find(run)
    while start >= 0:
        end = start + len(run)
        before = raw[start - 1] if start else None
        after = raw[end] if end < len(raw) else None
        if before not in _RUN_BYTES and after not in _RUN_BYTES:
            found.append(start)
        start = raw.find(run, start + 1)
    return found


def _raw_hits(
    identifying: IdentifyingValues, index: TermIndex, raw: bytes, new_uids: set[str], own: tuple[str, ...]
) -> int:
    # Each step is a C-speed pass over the header's bytes (a 2000-frame header is megabytes): the
    # header is searched a few times, never walked character by character in Python.
    if not raw:
        return 0
    # Mask our own UIDs where they are whole runs of digits and dots; keep everything else as is.
    spans = [
        (start, len(uid))
        for uid in new_uids
        if UID_LIKE.fullmatch(uid)
        for start in _whole_runs(raw, uid.encode("ascii"))
    ]
    masked = raw
    if spans:
        buffer = bytearray(raw)
        for start, length in spans:
            buffer[start : start + length] = b"#" * length
        masked = bytes(buffer)
    # Folded as normalise() folds a value: "Doe^John" in the bytes is "DOE JOHN".
    if any(c in term for term in identifying.text for c in _FOLD_OUTSIDE):  # a rare name: as text
        text = masked.decode("latin-1").upper().replace("^", " ").replace("=", " ").replace("\0", " ")
        text = " ".join(text.split())
    else:
        text = b" ".join(masked.replace(b"\xdf", b"ss").translate(_FOLD).split()).decode("latin-1")
    found = set(index.find(_blank(text, own)))
    count = len(found)
    wide = [term for term in identifying.text - found if not term.isascii()]
    if wide:
        upper = masked.upper()
        for term in wide:
            # a multi-byte character set: look for the UTF-8 encoding too
            utf8 = term.encode("utf-8")
            if utf8 != term.encode("latin-1", "replace") and utf8 in upper:
                count += 1
    # Original UIDs written as a whole run (as a UID is encoded).
    whole = [uid for uid in identifying.uids if UID_LIKE.fullmatch(uid)]
    count += sum(1 for uid in whole if _whole_runs(masked, uid.encode("ascii")))
    return count
