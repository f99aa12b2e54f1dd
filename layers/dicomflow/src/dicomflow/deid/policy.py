"""Table E.1-1 as decisions: what happens to one element, whichever engine holds it.

Two engines walk a header: :mod:`dicomflow.deid.rewrite` on raw little-endian bytes (the fast path,
no pydicom) and :mod:`dicomflow.deid.actions` on pydicom data sets (big endian, deflated, anything
odd). Both ask this module the same questions with the same inputs -- a tag, its VR and its values
as text -- and get the same answers, a :class:`Change`, so the two cannot drift apart. How each
action code is applied:

* ``X`` remove; ``Z`` zero length (an empty sequence for SQ); ``K`` keep (sequences are still walked:
  their items hold attributes of their own); ``U`` keyed remapping of every UID value
  (:mod:`dicomflow.deid.uids`); ``D`` a dummy of the right VR (a remapped UID for UI, the shifted
  date under Modified Dates, items cleaned for SQ).
* ``C`` clean: DA/DT are shifted (Modified Dates); TM is kept (a whole-day shift leaves it unchanged);
  short text (LO, SH, PN...: descriptors) has every identifying value of the original scrubbed out;
  free text (LT, ST, UT: comments, histories) and text of the Patient group (0010: Occupation) are
  emptied, as no machine can tell which part of them identifies; sequences are walked.
* Combined codes pick the least disclosing choice that keeps IOD conformance where it matters:
  ``Z/D``, ``X/Z``, ``X/Z/D`` -> ``Z`` (present, empty: Type 2 safe); ``X/D`` -> ``D``; ``X/Z/U*`` ->
  sequences are kept and walked (their UIDs are remapped by their own ``U`` rows: references
  stay valid), UI values remapped, anything else emptied. A SQ under ``X/Z``, ``X/D``, ``X/Z/D`` is
  removed.
* Patient ID and Patient's Name get a keyed pseudonym (a ``D`` in place of their ``Z``).
* Private elements: removed, except the safelist (private creator, group, element) under Retain Safe
  Private; a kept element keeps its private creator.
* Public elements not in Table E.1-1 (our decision, the conservative one): text, dates and UN whose
  tag is not in the DICOM dictionary, or whose VR is not the dictionary's (a corrupt tag), removed;
  UI remapped unless a registry UID; DA/DT shifted (Modified Dates), kept (Full Dates) or removed;
  PN emptied; text (LO, SH, ST, LT, UT, UC, AE) cleaned like ``C``; UR and UN removed; SQ walked;
  other VRs kept.
* Command (0000,xxxx) and file meta (0002,xxxx) elements found in the data set, and group lengths
  (gggg,0000), which would be wrong, are removed by both engines.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, MutableSequence
from dataclasses import dataclass, field
from functools import cache, lru_cache

from dicomflow import __version__
from dicomflow.deid.dates import shift_days, shift_value
from dicomflow.deid.keys import PseudonymKey
from dicomflow.deid.options import BASIC_PROFILE_CODE, OPTION_CODES, DeidOptions
from dicomflow.deid.profile import ConfidentialityProfile, load_profile
from dicomflow.deid.uids import is_well_known, remap_uid
from dicomflow.dicom.dictionary import dictionary_vr
from dicomflow.dicom.elements import KNOWN_VRS

TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "AE"})
DATE_VRS = frozenset({"DA", "DT"})
FREE_TEXT_VRS = frozenset({"LT", "ST", "UT"})
#: VRs whose values are collected as identifying values for scrubbing and the leak check.
#: (CS is not: its values are coded terms such as "ORIGINAL" or "YES", not identities.)
COLLECT_VRS = TEXT_VRS | DATE_VRS | frozenset({"PN", "UI", "UR"})
#: Shorter normalised values are not searched for (e.g. "M", "F", "YES"): they occur everywhere.
MIN_IDENTIFYING_LENGTH = 4
#: Numeric terms shorter than this must stand alone (not touch other digits) to count as found.
SHORT_NUMBER = 8
#: Shorter "UIDs" ("0", "1.2") are not searched for either: they are not unique to anybody.
MIN_UID_LENGTH = 8
#: A run of characters that could be a UID (digits and dots, at least that long): what the scrub
#: and the leak check look for original UIDs in.
UID_LIKE = re.compile(rf"[0-9.]{{{MIN_UID_LENGTH},}}")

STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_DUMMY_TEXT = "ANONYMIZED"
#: Fixed words this module writes (dummies, pseudonym prefix, recorded terms); see DeidOutcome.own_text.
OWN_VOCABULARY = frozenset({"ANONYMIZED", "PSEUDONYM", "UNMODIFIED", "MODIFIED", "REMOVED"})
_DUMMY_BY_VR: dict[str, object] = {
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "IS": "0",
    "DS": "0",
    "PN": "ANONYMIZED",
    "UR": "",
}
#: Our Implementation Class UID: 2.25 + 128 bits of SHA-256(b"dicomflow implementation").
DICOMFLOW_IMPLEMENTATION_UID = "2.25.309999667351923508905664670008820962333"
DICOMFLOW_IMPLEMENTATION_VERSION = ("DICOMFLOW_" + __version__.replace(".", ""))[:16]


@lru_cache(maxsize=1 << 16)
def normalise(value: str) -> str:
    """Upper case, PN ``^``/``=`` and runs of blanks folded to one space, stripped of padding."""
    text = value.replace("\0", " ").replace("^", " ").replace("=", " ").upper()
    return " ".join(text.split())


class TermIndex:
    """Finds which of many terms (thousands: one per frame's date in an enhanced multi-frame header)
    occur in a text, without testing every term against every text: terms are bucketed by their
    first :data:`MIN_IDENTIFYING_LENGTH` characters, and a text is probed with its own n-grams.

    Examples
    --------
    >>> TermIndex(["SMITH", "JOHN", "20240101"]).find("DR JOHN SMITHSON")
    ['SMITH', 'JOHN']
    >>> TermIndex(["1024"]).find("-10245"), TermIndex(["1024"]).find("ID 1024")
    ([], ['1024'])
    """

    def __init__(self, terms: Iterable[str]) -> None:
        self._n = MIN_IDENTIFYING_LENGTH
        self._buckets: dict[str, list[str]] = {}
        self._memo: dict[str, list[str]] = {}
        self._terms = [t for t in sorted(set(terms), key=len, reverse=True) if len(t) >= self._n]
        for term in self._terms:
            self._buckets.setdefault(term[: self._n], []).append(term)

    def __bool__(self) -> bool:
        return bool(self._buckets)

    def find(self, text: str) -> list[str]:
        """The terms occurring in ``text``, longest first (remembered: a series repeats its texts)."""
        found = self._memo.get(text)
        if found is None:
            if len(self._memo) > 4096:
                self._memo.clear()
            found = self._memo[text] = self._find(text)
        return found

    def _find(self, text: str) -> list[str]:
        n = self._n
        if len(text) < n or not self._buckets:
            return []
        if len(self._terms) <= len(text) - n + 1:
            # Fewer terms than n-grams (a CT slice: some 30 terms): testing each term is cheaper.
            found = [t for t in self._terms if t in text and _standalone(text, t)]
            return sorted(set(found), key=longest_first)
        grams = {text[i : i + n] for i in range(len(text) - n + 1)}
        found = [
            t
            for g in grams & self._buckets.keys()
            for t in self._buckets[g]
            if t in text and _standalone(text, t)
        ]
        return sorted(set(found), key=longest_first)


def finds_the_same(
    found: frozenset[str], searched: Iterable[str], text: frozenset[str], added: frozenset[str]
) -> bool:
    """Whether searches of the ``searched`` texts that found ``found`` for one identifying text
    find the same for ``text``, which adds the terms ``added`` to it: yes if every term found is
    still identifying and no added term occurs in a text searched (:meth:`TermIndex.find` finds a
    term only in a text that holds it). No means search again, not that anything was found.
    Substring tests only: the terms a series adds from file to file (date-times) are few.

    Examples
    --------
    >>> base = frozenset({"SMITH", "20240101120000"})
    >>> text = frozenset({"SMITH", "20240101120500"})
    >>> added = text - base
    >>> finds_the_same(frozenset({"SMITH"}), ["DR SMITH"], text, added)
    True
    >>> finds_the_same(frozenset(), ["SCAN AT 20240101120500"], text, added)
    False
    >>> finds_the_same(frozenset({"20240101120000"}), ["SCAN AT 20240101120000"], text, added)
    False
    """
    return found <= text and not any(term in value for value in searched for term in added)


def longest_first(term: str) -> tuple[int, str]:
    """Sort key: longer terms first (``JOHN SMITH`` is taken out before ``JOHN``), then
    alphabetical, so that terms of one length are always taken out in the same order."""
    return -len(term), term


@lru_cache(maxsize=32)
def term_index(terms: frozenset[str]) -> TermIndex:
    """A :class:`TermIndex` shared by every file with the same terms (a series: the same patient),
    so that its remembered answers serve them all."""
    return TermIndex(terms)


def _standalone(text: str, term: str) -> bool:
    """A short number (a 4-7 digit patient ID) counts only where no digit touches it: "1024" is
    not found in a Rescale Intercept of "-10245". Longer terms and words match anywhere."""
    if len(term) >= SHORT_NUMBER or not term.isdigit():
        return True
    start = text.find(term)
    while start >= 0:
        end = start + len(term)
        if (start == 0 or not text[start - 1].isdigit()) and (end == len(text) or not text[end].isdigit()):
            return True
        start = text.find(term, start + 1)
    return False


@dataclass
class IdentifyingValues:
    """What identified the patient in the original: searched for by the leak check."""

    text: set[str] = field(default_factory=set)  # normalised, >= MIN_IDENTIFYING_LENGTH
    uids: set[str] = field(default_factory=set)
    skipped_short: int = 0

    def add(self, vr: str, value: object) -> None:
        self.extend(contributions(vr, value))

    def extend(self, found: Iterable[Contribution]) -> None:
        """Add what :func:`contributions` found (remembered by an engine for a repeated element)."""
        for uid, parts, short in found:
            if uid:
                self.uids.add(uid)
            if parts:
                self.text.update(parts)
            self.skipped_short += short


#: What one value adds to the identifying values: (UID, text parts, count of values too short).
Contribution = tuple[str, tuple[str, ...], int]


def contributions(vr: str, value: object) -> tuple[Contribution, ...]:
    """What the values of one element add to the :class:`IdentifyingValues`."""
    return tuple(_identifying(vr, str(item)) for item in values_of(value))


@lru_cache(maxsize=1 << 14)
def _identifying(vr: str, raw: str) -> tuple[str, tuple[str, ...], int]:
    """(UID, text parts, values too short to search) that one value adds; remembered, as a series
    repeats its values in every file."""
    if vr == "UI":
        uid = raw.strip("\0 ")
        if len(uid) >= MIN_UID_LENGTH and not is_well_known(uid):
            return uid, (), 0
        return "", (), 1 if uid else 0
    norm = normalise(raw)
    parts = [norm]
    if vr == "PN":
        # each name component on its own ("SMITH", "JOHN"), as well as the whole name
        parts += [normalise(p) for p in raw.replace("=", "^").split("^")]
    kept = tuple(p for p in parts if len(p) >= MIN_IDENTIFYING_LENGTH)
    return "", kept, sum(1 for p in parts if p and len(p) < MIN_IDENTIFYING_LENGTH)


#: VRs whose values the profile may need to read or change: anything else can be passed through
#: undecoded (its raw bytes re-written as read, in the same encoding) when it is kept.
DECODE_VRS = frozenset({"SQ", "UI", "PN", "UR", "UN"}) | TEXT_VRS | DATE_VRS
#: Numeric VRs: a dummy of them is the number 0.
NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"})
#: Ambiguous VRs (implicit VR files) are never text; what they hold is kept or dropped, not read.


@cache
def passes_through(vr: str | None) -> bool:
    """Whether an element of this VR is kept as read (bytes untouched) unless its action says
    otherwise: numbers, codes, binary. An ambiguous VR of an implicit-VR file ("US or SS") passes
    if each of its choices does, whichever the file meant."""
    if vr is None:
        return False
    if " or " in vr:
        return all(passes_through(choice) for choice in vr.split(" or "))
    return vr in KNOWN_VRS and vr not in DECODE_VRS


def values_of(value: object) -> list[object]:
    """A value (single, multi-valued, or None) as a list of its values."""
    if value is None:
        return []
    if isinstance(value, (tuple, MutableSequence)):
        return list(value)
    return [value]


def pseudonyms(key: PseudonymKey, patient: str) -> tuple[str, str]:
    """Keyed (Patient ID, Patient's Name) for an original patient identity; letters only, so a
    numeric original ID can never re-appear inside them.

    Examples
    --------
    >>> from dicomflow.deid.keys import LocalKey
    >>> pid, name = pseudonyms(LocalKey(b"k" * 32), "12345")
    >>> len(pid), name.startswith("PSEUDONYM^")
    (16, True)
    """
    mac = key.mac(b"patient:" + patient.encode("utf-8"))
    letters = "".join(string.ascii_uppercase[b % 26] for b in mac[:12])
    return "DF" + letters + "XX", "PSEUDONYM^" + letters


# -- what to do with one element -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """What becomes of one element. ``kind``: ``keep`` (as read), ``remove``, ``walk`` (a sequence
    whose items are de-identified in turn), ``empty`` (zero length; an empty sequence for SQ),
    ``values`` (new text values, ``values``), ``zero`` (the number 0; ``00H 00H`` for OB/OW/UN)."""

    kind: str
    values: tuple[str, ...] = ()


KEEP = Change("keep")
REMOVE = Change("remove")
WALK = Change("walk")
EMPTY = Change("empty")
ZERO = Change("zero")


@dataclass(frozen=True)
class Recorded:
    """The attributes that record the de-identification (PS3.15 E.1.1 and E.3): pseudonyms,
    Patient Identity Removed, the method, its codes and Longitudinal Temporal Information Modified."""

    patient_id: str
    patient_name: str
    method: str
    codes: tuple[tuple[str, str], ...]  # (code value, code meaning), scheme DCM
    longitudinal: str

    @property
    def own_text(self) -> frozenset[str]:
        """Text the de-identifier wrote itself (method, code meanings, dummies, pseudonym prefix):
        the leak check ignores it, or a patient named "Long" would fail every file on
        "Retain Longitudinal..."."""
        texts = set(OWN_VOCABULARY) | {normalise(self.method), normalise(DICOMFLOW_IMPLEMENTATION_VERSION)}
        texts |= {normalise(meaning) for _, meaning in self.codes}
        return frozenset(t for t in texts if t)


class Deidentifier:
    """Table E.1-1 for one key and one set of options; reusable across files (caches per key).

    :meth:`deidentify` de-identifies a pydicom data set (:mod:`dicomflow.deid.actions`); the
    streaming entry points (:mod:`dicomflow.deid.stream`) take a ``Deidentifier`` and pick the
    engine per file.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> import pydicom
    >>> from dicomflow.deid.keys import LocalKey
    >>> ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    >>> out = Deidentifier(LocalKey(b"k" * 32)).deidentify(ds, ds.file_meta)
    >>> out.dataset.PatientIdentityRemoved, out.dataset.InstitutionName, "OtherPatientIDs" in out.dataset
    ('YES', '', False)
    >>> out.file_meta.MediaStorageSOPInstanceUID == out.dataset.SOPInstanceUID
    True
    """

    def __init__(self, key: PseudonymKey, options: DeidOptions | None = None) -> None:
        self.key = key
        self.options = options or DeidOptions()
        self.profile: ConfidentialityProfile = load_profile(self.options)

    def deidentify(self, ds, file_meta, **kwargs):  # type: ignore[no-untyped-def]
        """De-identify a pydicom data set: see :func:`dicomflow.deid.actions.deidentify_dataset`."""
        from dicomflow.deid.actions import deidentify_dataset

        return deidentify_dataset(self, ds, file_meta, **kwargs)

    @staticmethod
    def syntax_for(declared: str | None, implicit: bool, little: bool) -> str:
        """The transfer syntax to declare: the original's, or the encoding actually read."""
        if declared:
            return declared
        if implicit:
            return IMPLICIT_VR_LITTLE_ENDIAN
        return EXPLICIT_VR_LITTLE_ENDIAN if little else EXPLICIT_VR_BIG_ENDIAN


IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"


class Policy:
    """One data set's pass: the identifying values collected, then a :class:`Change` per element.

    Holds what the pass learns (identifying values, the UID map, counts of actions); an engine
    feeds it elements as (tag, VR, values as text) and applies the answers.
    """

    def __init__(self, deid: Deidentifier, patient: str, identifying: IdentifyingValues | None) -> None:
        self.deid = deid
        self.key = deid.key
        self.options = deid.options
        self.profile = deid.profile
        self.patient = patient
        self.identifying = identifying or IdentifyingValues()
        self.uid_map: dict[str, str] = {}
        #: Every action taken, in order, one name per element (counted by :attr:`actions`): a
        #: list, so that an engine can replay the actions of a part of a data set as a slice.
        self.done: list[str] = []
        #: Every (original, new) UID mapping used, in order, repeats included (likewise).
        self.uid_log: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self.shift: int | None = (
            shift_days(self.key, patient) if self.options.retain_long_modified_dates else None
        )
        self._scrub_index: TermIndex | None = None
        #: Set once a decision depended on this file's original UIDs (see :meth:`_found`).
        self.uid_dependent = False
        #: Every search of the identifying text (see :meth:`_found`), in order: the normalised
        #: text searched and the terms found. A decision is the same for any identifying text in
        #: which its searches find the same terms: an engine may reuse it for the files of a series
        #: whose identifying text differs (slices that each carry their own Acquisition DateTime).
        self.searches: list[tuple[str, frozenset[str]]] = []

    @property
    def actions(self) -> Counter[str]:
        """How many elements each action was taken on."""
        return Counter(self.done)

    # -- collection ------------------------------------------------------------------------------
    def collects(self, tag: int, vr: str) -> bool:
        """Whether a public, non-sequence element's values are identifying: every value that the
        profile does not keep (gathered before the rewrite, for scrubbing and the leak check)."""
        action = self.profile.action(tag)
        if action is None:
            return vr == "PN" or (vr in DATE_VRS and not self.options.retain_long_full_dates)
        if action == "K" or vr not in COLLECT_VRS:
            return False
        if action == "C" and vr not in DATE_VRS:
            return False  # cleaned descriptors keep their non-identifying content
        if action == "C" and self.options.retain_long_full_dates:
            return False
        return not (self.options.retain_uids and vr == "UI")

    @property
    def scrub_terms(self) -> TermIndex:
        """The identifying text, indexed (the original UIDs are looked for apart: see
        :meth:`_found`). Shared by every file with the same identifying text (most series: one
        patient, one study), so its remembered answers serve them all."""
        if self._scrub_index is None:
            self._scrub_index = term_index(frozenset(self.identifying.text))
        return self._scrub_index

    def _found(self, upper: str) -> list[str]:
        """The identifying terms in a normalised text: text terms, and the original UIDs (only a
        text with a run of 8 or more digits and dots can hold one)."""
        found = self.scrub_terms.find(upper)
        self.searches.append((upper, frozenset(found)))
        if UID_LIKE.search(upper) is None:
            return found
        # This answer depends on this file's own UIDs (a SOP Instance UID differs in every file),
        # not only on the identifying text: an engine must not reuse it for another file.
        self.uid_dependent = True
        uids = [uid for uid in self.identifying.uids if uid in upper]
        return sorted(set(found).union(uids), key=longest_first) if uids else found

    # -- decisions ---------------------------------------------------------------------------------
    def decide(self, tag: int, vr: str, values: list[str]) -> Change:
        """The change for a public element (``values``: its values as text, for the VRs in
        :data:`DECODE_VRS`; may be empty for others)."""
        action = self.profile.action(tag)
        return self._apply(action, tag, vr, values) if action is not None else self._unknown(tag, vr, values)

    def decide_private(self, creator: str, tag: int, vr: str) -> Change:
        """The change for a private element whose block's private creator is ``creator``."""
        safelisted = (creator.strip(), tag >> 16, tag & 0xFF) in self.options.safe_private
        if self.profile.private_action == "C" and safelisted:
            self.done.append("K_private")
            return WALK if vr == "SQ" else KEEP
        self.done.append("X_private")
        return REMOVE

    def _apply(self, action: str, tag: int, vr: str, values: list[str]) -> Change:
        self.done.append(action)
        if action == "X":
            return REMOVE
        if action == "K":
            return WALK if vr == "SQ" else KEEP
        if action == "U":
            return self._uids(vr, values)
        if action == "C":
            return self._clean(tag, vr, values)
        if action == "D":
            return self._dummy(vr, values)
        if action in ("Z", "Z/D", "X/Z", "X/Z/D"):
            if vr == "SQ" and action != "Z" and action != "Z/D":
                return REMOVE
            return EMPTY
        if action == "X/D":
            return REMOVE if vr == "SQ" else self._dummy(vr, values)
        if action == "X/Z/U*":
            if vr == "SQ":
                return WALK
            return self._uids(vr, values) if vr == "UI" else EMPTY
        raise ValueError(f"unhandled action {action}")  # pragma: no cover - ACTION_CODES checked

    def _unknown(self, tag: int, vr: str, values: list[str]) -> Change:
        if vr == "SQ":
            return WALK
        expected = dictionary_vr(tag)
        if vr in TEXT_VRS | DATE_VRS | {"PN", "UR", "UN"} and (
            expected is None or vr not in expected.split(" or ")
        ):
            # Not in the DICOM dictionary (a corrupt tag, a retired or future one), or text where
            # the dictionary says otherwise (a corrupt tag that now names another attribute): we
            # cannot tell what the text is, so it goes.
            self.done.append("X_unknown_text")
            return REMOVE
        if vr == "UI":
            if all(is_well_known(v) for v in values):
                return KEEP
            self.done.append("U_unlisted")
            return self._uids(vr, values)
        if vr in DATE_VRS:
            if self.options.retain_long_full_dates:
                return KEEP
            if self.shift is not None:
                self.done.append("C_unlisted")
                return self._shift(vr, values)
            self.done.append("X_unlisted")
            return REMOVE
        if vr == "PN":
            self.done.append("Z_unlisted")
            return EMPTY
        if vr in TEXT_VRS:
            cleaned = self._scrub(values)
            if cleaned is not KEEP:
                self.done.append("C_unlisted")
            return cleaned
        if vr in ("UR", "UN"):
            self.done.append("X_unlisted")
            return REMOVE
        return KEEP

    def map_uid(self, uid: str) -> str:
        uid = uid.strip("\0 ")
        if not uid or self.options.retain_uids:
            return uid
        new = self.uid_map.get(uid)
        if new is None:
            new = remap_uid(self.key, uid)
            self.uid_map[uid] = new
        self.uid_log.append((uid, new))
        return new

    def _uids(self, vr: str, values: list[str]) -> Change:
        if vr == "SQ":
            return WALK
        if vr != "UI":
            return EMPTY
        return Change("values", tuple(self.map_uid(v) for v in values))

    def _shift(self, vr: str, values: list[str]) -> Change:
        if self.shift is None:
            return REMOVE
        return Change("values", tuple(shift_value(v, self.shift, vr) for v in values))

    def _clean(self, tag: int, vr: str, values: list[str]) -> Change:
        if vr == "SQ":
            return WALK
        if vr in DATE_VRS:
            return KEEP if self.options.retain_long_full_dates else self._shift(vr, values)
        if vr == "TM":
            return KEEP
        if vr == "UI":
            return self._uids(vr, values)
        if vr in FREE_TEXT_VRS:
            # Free text (comments, history) cannot be cleaned reliably by a machine: emptied.
            self.done.append("C_free_text_emptied")
            return EMPTY
        if tag >> 16 == 0x0010 and (vr in TEXT_VRS or vr == "PN"):
            # Text of the Patient group (Occupation...) describes the person: all of it may identify.
            self.done.append("C_patient_text_emptied")
            return EMPTY
        if vr in TEXT_VRS or vr == "PN":
            return self._scrub(values)
        return KEEP

    def _scrub(self, values: list[str]) -> Change:
        changed = False
        out: list[str] = []
        for text in values:
            cleaned = self.scrub_text(text)
            changed |= cleaned != text
            out.append(cleaned)
        return Change("values", tuple(out)) if changed else KEEP

    def scrub_text(self, text: str) -> str:
        """``text`` with every identifying term of the original taken out (normalised), or as is."""
        upper = normalise(text)
        found = self._found(upper)
        if not found:
            return text
        # Work on the normalised text: the original spacing and case do not matter once cleaned.
        # Repeat: removing one term can join the pieces of another ("SMI" + "TH").
        while found:
            for term in found:  # longest first, so "JOHN SMITH" goes before "JOHN"
                upper = upper.replace(term, "")
            upper = " ".join(upper.split())
            found = self._found(upper)
        return upper

    def _dummy(self, vr: str, values: list[str]) -> Change:
        if vr == "SQ":
            return WALK
        if vr == "UI":
            return self._uids(vr, values)
        if vr in DATE_VRS and self.shift is not None:
            return self._shift(vr, values)
        if vr in DATE_VRS and self.options.retain_long_full_dates:
            return KEEP
        if vr in _DUMMY_BY_VR:
            return Change("values", (str(_DUMMY_BY_VR[vr]),))
        if vr in TEXT_VRS:
            return Change("values", (_DUMMY_TEXT,))
        if vr in NUMBER_VRS or vr in ("OB", "OW", "UN"):
            return ZERO
        return EMPTY

    # -- what was done -----------------------------------------------------------------------------
    def record(self, original_name: object, original_id: object) -> Recorded:
        """Pseudonyms, Patient Identity Removed, the method and its codes (PS3.15 E.1.1 and E.3);
        the original name and ID join the identifying values."""
        pid, name = pseudonyms(self.key, self.patient)
        self.identifying.add("PN", original_name)
        self.identifying.add("LO", original_id)
        edition = self.profile.edition
        enabled = self.options.enabled
        method = (
            f"DICOM PS3.15 {edition} Table E.1-1 Basic Profile"
            + ("; " + ", ".join(enabled) if enabled else "")
            + f"; dicomflow {__version__}"
        )[:64]
        codes = (BASIC_PROFILE_CODE, *(OPTION_CODES[n] for n in enabled))
        if self.options.retain_long_modified_dates:
            longitudinal = "MODIFIED"
        elif self.options.retain_long_full_dates:
            longitudinal = "UNMODIFIED"
        else:
            longitudinal = "REMOVED"
        if self.shift is not None:
            self.notes.append("dates shifted by a keyed per-patient offset (days withheld)")
        return Recorded(pid, name, method, codes, longitudinal)
