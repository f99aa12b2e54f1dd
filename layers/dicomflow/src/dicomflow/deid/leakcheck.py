"""The leak check: is any identifying value of the original still in the de-identified output?

Two independent searches, both must come out clean:

* structured: every element of the output, nested, private and file meta included, as
  normalised text (original UIDs are matched exactly against UI values and as substrings of text);
* raw: the encoded header bytes (preamble, file meta, data set, and any elements after Pixel Data),
  upper-cased, after masking the output's own new UIDs (a 39-digit ``2.25`` UID can contain any
  short digit string by chance).

Values shorter than :data:`~dicomflow.deid.actions.MIN_IDENTIFYING_LENGTH` characters once
normalised ("M", "F", "NO") are not searched for: they are counted in ``skipped_short``. Hits are
reported by element tag and by count, never by value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from dicomflow.deid.actions import IdentifyingValues, normalise, walk_values


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
) -> LeakReport:
    """Search ``datasets`` (e.g. data set, file meta, trailing elements) and ``raw`` bytes.

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
    terms = sorted(identifying.text)
    uids = identifying.uids
    hits: list[str] = []
    for ds in datasets:
        for elem, value in walk_values(ds):
            found = False
            if elem.VR == "UI":
                found = value.strip("\0 ") in uids
            else:
                text = normalise(value)
                found = any(term in text for term in terms) or any(uid in value for uid in uids)
            if found:
                hits.append(str(elem.tag))
    raw_hits = _raw_hits(identifying, raw, new_uids or set())
    checked = len(terms) + len(uids)
    return LeakReport(not hits and raw_hits == 0, checked, identifying.skipped_short, hits, raw_hits)


def _raw_hits(identifying: IdentifyingValues, raw: bytes, new_uids: set[str]) -> int:
    if not raw:
        return 0
    masked = raw
    for uid in sorted(new_uids, key=len, reverse=True):
        encoded = uid.encode("ascii")
        masked = masked.replace(encoded, b"#" * len(encoded))
    # Folding PN separators and padding like normalise(): "DOE^JOHN" in the bytes is "DOE JOHN".
    text = masked.decode("latin-1").upper().replace("^", " ").replace("=", " ").replace("\0", " ")
    text = " ".join(text.split(" "))
    count = 0
    for term in identifying.text:
        if term in text:
            count += 1
            continue
        # a multi-byte character set: look for the UTF-8 encoding too
        utf8 = term.encode("utf-8")
        if utf8 != term.encode("latin-1", "replace") and utf8 in masked.upper():
            count += 1
    for uid in identifying.uids:
        if uid.encode("ascii", "replace") in masked:
            count += 1
    return count
