"""Apply Table E.1-1 to a data set: every action code, recursively, plus the file meta.

Pure: a data set in, a new data set out (the input is not modified). How each code is applied:

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
* Elements pydicom cannot decode are removed and counted; so are command (0000,xxxx) and file meta
  (0002,xxxx) elements found in the data set, and group lengths (gggg,0000), which would be wrong.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicomflow import __version__
from dicomflow.deid.dates import shift_days, shift_value
from dicomflow.deid.keys import PseudonymKey
from dicomflow.deid.options import BASIC_PROFILE_CODE, OPTION_CODES, DeidOptions
from dicomflow.deid.profile import ConfidentialityProfile, load_profile
from dicomflow.deid.uids import is_well_known, remap_uid

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

_STRING_VRS = frozenset(
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
_FILE_META_KEEP = {0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013}
#: Our Implementation Class UID: 2.25 + 128 bits of SHA-256(b"dicomflow implementation").
DICOMFLOW_IMPLEMENTATION_UID = "2.25.309999667351923508905664670008820962333"
DICOMFLOW_IMPLEMENTATION_VERSION = ("DICOMFLOW_" + __version__.replace(".", ""))[:16]


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
        self._terms = [t for t in sorted(set(terms), key=len, reverse=True) if len(t) >= self._n]
        for term in self._terms:
            self._buckets.setdefault(term[: self._n], []).append(term)

    def __bool__(self) -> bool:
        return bool(self._buckets)

    def find(self, text: str) -> list[str]:
        """The terms occurring in ``text``, longest first."""
        n = self._n
        if len(text) < n or not self._buckets:
            return []
        if len(self._terms) <= len(text) - n + 1:
            # Fewer terms than n-grams (a CT slice: some 30 terms): testing each term is cheaper.
            found = [t for t in self._terms if t in text and _standalone(text, t)]
            return sorted(set(found), key=len, reverse=True)
        grams = {text[i : i + n] for i in range(len(text) - n + 1)}
        found = [
            t
            for g in grams & self._buckets.keys()
            for t in self._buckets[g]
            if t in text and _standalone(text, t)
        ]
        return sorted(set(found), key=len, reverse=True)


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
        for item in _values(value):
            raw = str(item)
            if vr == "UI":
                uid = raw.strip("\0 ")
                if len(uid) >= MIN_UID_LENGTH and not is_well_known(uid):
                    self.uids.add(uid)
                elif uid:
                    self.skipped_short += 1
                continue
            norm = normalise(raw)
            parts = [norm]
            if vr == "PN":
                # each name component on its own ("SMITH", "JOHN"), as well as the whole name
                parts += [normalise(p) for p in raw.replace("=", "^").split("^")]
            for part in parts:
                if len(part) >= MIN_IDENTIFYING_LENGTH:
                    self.text.add(part)
                elif part:
                    self.skipped_short += 1


@dataclass
class DeidOutcome:
    """The de-identified data set and file meta, and what was done."""

    dataset: Dataset
    file_meta: FileMetaDataset
    identifying: IdentifyingValues
    uid_map: dict[str, str]
    actions: Counter[str]
    shift_days: int | None
    notes: list[str]

    @property
    def own_text(self) -> frozenset[str]:
        """Text this de-identifier wrote itself (method, code meanings, dummies, pseudonym prefix):
        the leak check ignores it, or a patient named "Long" would fail every file on
        "Retain Longitudinal...".
        """
        texts = set(OWN_VOCABULARY)
        method = self.dataset.get("DeidentificationMethod")
        if method:
            texts.add(normalise(str(method)))
        for item in self.dataset.get("DeidentificationMethodCodeSequence") or []:
            texts.add(normalise(str(item.get("CodeMeaning", ""))))
        texts.add(normalise(DICOMFLOW_IMPLEMENTATION_VERSION))
        return frozenset(t for t in texts if t)


@cache
def _dictionary_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def raw_vr(elem: DataElement | RawDataElement) -> str | None:
    """The VR of an element without decoding its value (implicit VR: the dictionary's)."""
    if isinstance(elem, DataElement):
        return str(elem.VR)
    return str(elem.VR) if elem.VR else _dictionary_vr(int(elem.tag))


#: VRs whose values the profile may need to read or change: anything else can be passed through
#: undecoded (its raw bytes re-written as read, in the same encoding) when it is kept.
_DECODE_VRS = frozenset({"SQ", "UI", "PN", "UR", "UN"}) | TEXT_VRS | DATE_VRS


#: The VRs of PS3.5 Table 6.2-1: a raw element with anything else (a corrupt file) is decoded,
#: which removes it if pydicom cannot make sense of it.
_KNOWN_VRS = frozenset(
    {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV"}
    | {"OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"}
)


def _passes_through(vr: str | None) -> bool:
    return vr is not None and vr in _KNOWN_VRS and vr not in _DECODE_VRS


def _values(value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, MultiValue)):
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


def _safe_get(ds: Dataset, keyword: str) -> object:
    """An attribute's value, or None if pydicom cannot decode it (a corrupt file)."""
    try:
        return ds.get(keyword)
    except Exception:  # noqa: BLE001 - undecodable: removed by the walk, nothing to record
        return None


def patient_identity(ds: Dataset) -> str:
    """The original identity a scan's pseudonym and date shift derive from (Patient ID, else Name)."""
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID"):
        value = _safe_get(ds, keyword)
        if value:
            return normalise(str(value))
    return ""


class Deidentifier:
    """Table E.1-1 for one key and one set of options; reusable across files (caches per key).

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

    # -- public -------------------------------------------------------------------------------
    def deidentify(
        self,
        ds: Dataset,
        file_meta: FileMetaDataset | None,
        *,
        transfer_syntax: str | None = None,
        identifying: IdentifyingValues | None = None,
        patient: str | None = None,
        top_level: bool = True,
        consume: bool = False,
    ) -> DeidOutcome:
        """De-identify ``ds`` (and its file meta); ``ds`` is not modified unless ``consume``.

        ``identifying``/``patient`` let a caller de-identify trailing elements (after Pixel Data)
        with the values collected from the header; ``top_level=False`` skips the attributes
        recorded about the de-identification itself. ``consume=True`` empties each sequence item
        of ``ds`` once rewritten, so that a 2000-frame header is not held twice at the peak (the
        streaming path owns its parsed header and needs only its top-level attributes after).
        """
        patient = patient_identity(ds) if patient is None else patient
        run = _Run(self, patient, identifying)
        run.consume = consume
        if identifying is None:
            run.collect(ds)
        new = run.walk(ds)
        meta = FileMetaDataset()
        if top_level:
            run.record(ds, new)
            meta = self._file_meta(file_meta, new, transfer_syntax)
        return DeidOutcome(new, meta, run.identifying, run.uid_map, run.actions, run.shift, run.notes)

    # -- file meta -----------------------------------------------------------------------------
    def _file_meta(
        self, original: FileMetaDataset | None, new: Dataset, transfer_syntax: str | None
    ) -> FileMetaDataset:
        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        sop_class = new.get("SOPClassUID") or (
            _safe_get(original, "MediaStorageSOPClassUID") if original else None
        )
        if sop_class:
            meta.MediaStorageSOPClassUID = UID(str(sop_class))
        sop_instance = new.get("SOPInstanceUID")
        original_instance = (
            _safe_get(original, "MediaStorageSOPInstanceUID") if original is not None else None
        )
        if not sop_instance and original_instance:
            sop_instance = remap_uid(self.key, str(original_instance))
        if sop_instance:
            meta.MediaStorageSOPInstanceUID = sop_instance
        meta.TransferSyntaxUID = UID(transfer_syntax or ExplicitVRLittleEndian)
        # Source/Sending/Receiving AE titles, private information: not carried over (identifying).
        meta.ImplementationClassUID = UID(DICOMFLOW_IMPLEMENTATION_UID)
        meta.ImplementationVersionName = DICOMFLOW_IMPLEMENTATION_VERSION
        return meta

    @staticmethod
    def syntax_for(declared: str | None, implicit: bool, little: bool) -> str:
        """The transfer syntax to declare: the original's, or the encoding actually read."""
        if declared:
            return declared
        if implicit:
            return ImplicitVRLittleEndian
        return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


class _Run:
    """One data set's pass: collection of identifying values, then the rewrite."""

    def __init__(self, deid: Deidentifier, patient: str, identifying: IdentifyingValues | None) -> None:
        self.deid = deid
        self.key = deid.key
        self.options = deid.options
        self.profile = deid.profile
        self.patient = patient
        self.identifying = identifying or IdentifyingValues()
        self.uid_map: dict[str, str] = {}
        self.consume = False
        self.actions: Counter[str] = Counter()
        self.notes: list[str] = []
        self.shift: int | None = (
            shift_days(self.key, patient) if self.options.retain_long_modified_dates else None
        )
        self._scrub: TermIndex | None = None

    # -- collection ------------------------------------------------------------------------------
    def collect(self, ds: Dataset) -> None:
        """Gather the identifying values: every value that the profile does not keep."""
        for tag in list(ds.keys()):
            if tag.is_private:
                continue  # removed or safelisted; generic private values would only raise false alarms
            if _passes_through(raw_vr(ds.get_item(tag, keep_deferred=True))):
                continue  # numbers, codes, binary: nothing identifying to gather, no need to decode
            try:
                elem = ds[tag]
            except Exception:  # noqa: BLE001 - undecodable: removed in the walk, nothing to gather
                continue
            if elem.VR == "SQ":
                for item in elem.value or []:
                    self.collect(item)
                continue
            action = self.profile.action(int(tag))
            if action is None:
                if elem.VR == "PN" or (elem.VR in DATE_VRS and not self.options.retain_long_full_dates):
                    self.identifying.add(elem.VR, elem.value)
                continue
            if action == "K" or elem.VR not in COLLECT_VRS:
                continue
            if action == "C" and elem.VR not in DATE_VRS:
                continue  # cleaned descriptors keep their non-identifying content
            if action == "C" and self.options.retain_long_full_dates:
                continue
            if self.options.retain_uids and elem.VR == "UI":
                continue
            self.identifying.add(elem.VR, elem.value)

    @property
    def scrub_terms(self) -> TermIndex:
        if self._scrub is None:
            self._scrub = TermIndex(self.identifying.text | self.identifying.uids)
        return self._scrub

    # -- rewrite ---------------------------------------------------------------------------------
    def walk(self, ds: Dataset) -> Dataset:
        new = Dataset()
        kept_private_blocks: set[tuple[int, int]] = set()
        creators: dict[tuple[int, int], DataElement] = {}
        for tag in sorted(ds.keys()):
            raw = ds.get_item(tag, keep_deferred=True)
            if (
                isinstance(raw, RawDataElement)
                and (raw.VR is not None or ds.original_encoding[0] is True)  # VR known if needed
                and not tag.is_private
                and tag.group not in (0x0000, 0x0002)
                and tag.element != 0x0000
                and _passes_through(raw_vr(raw))
            ):
                action = self.profile.action(int(tag))
                if action is None or action == "K":
                    # kept as read: no decoding, no re-encoding (the output keeps the encoding)
                    self.actions["K" if action else "kept_unlisted"] += 1
                    new[tag] = raw
                    continue
            try:
                elem = ds[tag]
            except Exception:  # noqa: BLE001 - pydicom cannot decode it: we cannot vouch for it
                self.actions["removed_undecodable"] += 1
                continue
            if tag.group in (0x0000, 0x0002) or tag.element == 0x0000:
                # Command and file meta elements have no place in a stored data set, and group
                # lengths would be wrong once values change: none is carried over.
                self.actions["X_structural"] += 1
                continue
            if tag.is_private:
                if tag.is_private_creator:
                    creators[(tag.group, tag.element)] = elem
                    continue
                out = self._private(ds, elem)
                if out is not None:
                    new.add(out)
                    kept_private_blocks.add((tag.group, tag.element >> 8))
                continue
            action = self.profile.action(int(tag))
            out = self._apply(action, elem) if action is not None else self._unknown(elem)
            if out is not None:
                new.add(out)
        for group, block in kept_private_blocks:
            creator = creators.get((group, block))
            if creator is not None:
                new.add(creator)
        if None not in ds.original_encoding:
            # Same encoding and character set as read: pydicom then writes passed-through elements
            # as they are instead of decoding and re-encoding all of them (passed-through elements
            # are never text, so the character set is only that of the new text values).
            implicit, little = ds.original_encoding
            new.set_original_encoding(implicit, little, new._character_set)
        return new

    def _private(self, ds: Dataset, elem: DataElement) -> DataElement | None:
        if self.profile.private_action == "C":
            tag = elem.tag
            creator_tag = (tag.group << 16) | (tag.element >> 8)
            creator = ds.get(creator_tag)
            name = str(creator.value).strip() if creator is not None else ""
            if (name, tag.group, tag.element & 0xFF) in self.options.safe_private:
                self.actions["K_private"] += 1
                if elem.VR == "SQ":
                    return self._sequence(elem)
                return elem
        self.actions["X_private"] += 1
        return None

    def _apply(self, action: str, elem: DataElement) -> DataElement | None:
        vr = elem.VR
        self.actions[action] += 1
        if action == "X":
            return None
        if action == "K":
            return self._sequence(elem) if vr == "SQ" else elem
        if action == "U":
            return self._uids(elem)
        if action == "C":
            return self._clean(elem)
        if action == "D":
            return self._dummy(elem)
        if action in ("Z", "Z/D", "X/Z", "X/Z/D"):
            if vr == "SQ" and action != "Z" and action != "Z/D":
                return None
            return self._empty(elem)
        if action == "X/D":
            return None if vr == "SQ" else self._dummy(elem)
        if action == "X/Z/U*":
            if vr == "SQ":
                return self._sequence(elem)
            return self._uids(elem) if vr == "UI" else self._empty(elem)
        raise ValueError(f"unhandled action {action}")  # pragma: no cover - ACTION_CODES checked

    def _unknown(self, elem: DataElement) -> DataElement | None:
        vr = elem.VR
        if vr == "SQ":
            return self._sequence(elem)
        expected = _dictionary_vr(int(elem.tag))
        if vr in TEXT_VRS | DATE_VRS | {"PN", "UR", "UN"} and (
            expected is None or vr not in expected.split(" or ")
        ):
            # Not in the DICOM dictionary (a corrupt tag, a retired or future one), or text where
            # the dictionary says otherwise (a corrupt tag that now names another attribute): we
            # cannot tell what the text is, so it goes.
            self.actions["X_unknown_text"] += 1
            return None
        if vr == "UI":
            values = [str(v) for v in _values(elem.value)]
            if all(is_well_known(v) for v in values):
                return elem
            self.actions["U_unlisted"] += 1
            return self._uids(elem)
        if vr in DATE_VRS:
            if self.options.retain_long_full_dates:
                return elem
            if self.shift is not None:
                self.actions["C_unlisted"] += 1
                return self._shift(elem)
            self.actions["X_unlisted"] += 1
            return None
        if vr == "PN":
            self.actions["Z_unlisted"] += 1
            return self._empty(elem)
        if vr in TEXT_VRS:
            cleaned = self._scrub_element(elem)
            if cleaned is not elem:
                self.actions["C_unlisted"] += 1
            return cleaned
        if vr in ("UR", "UN"):
            self.actions["X_unlisted"] += 1
            return None
        return elem

    # -- value helpers ---------------------------------------------------------------------------
    def _sequence(self, elem: DataElement) -> DataElement:
        items = []
        for item in elem.value or []:
            items.append(self.walk(item))
            if self.consume:
                item.clear()
        return DataElement(elem.tag, "SQ", Sequence(items))

    def _empty(self, elem: DataElement) -> DataElement:
        if elem.VR == "SQ":
            return DataElement(elem.tag, "SQ", Sequence([]))
        return DataElement(elem.tag, elem.VR, "" if elem.VR in _STRING_VRS else None)

    def _map_uid(self, uid: str) -> str:
        uid = uid.strip("\0 ")
        if not uid or self.options.retain_uids:
            return uid
        new = self.uid_map.get(uid)
        if new is None:
            new = remap_uid(self.key, uid)
            self.uid_map[uid] = new
        return new

    def _uids(self, elem: DataElement) -> DataElement | None:
        if elem.VR == "SQ":
            return self._sequence(elem)
        if elem.VR != "UI":
            return self._empty(elem)
        values = [self._map_uid(str(v)) for v in _values(elem.value)]
        return DataElement(elem.tag, "UI", values if len(values) > 1 else (values[0] if values else None))

    def _shift(self, elem: DataElement) -> DataElement | None:
        if self.shift is None:
            return None
        values = [shift_value(str(v), self.shift, elem.VR) for v in _values(elem.value)]
        return DataElement(elem.tag, elem.VR, values if len(values) > 1 else (values[0] if values else None))

    def _clean(self, elem: DataElement) -> DataElement | None:
        vr = elem.VR
        if vr == "SQ":
            return self._sequence(elem)
        if vr in DATE_VRS:
            return elem if self.options.retain_long_full_dates else self._shift(elem)
        if vr == "TM":
            return elem
        if vr == "UI":
            return self._uids(elem)
        if vr in FREE_TEXT_VRS:
            # Free text (comments, history) cannot be cleaned reliably by a machine: emptied.
            self.actions["C_free_text_emptied"] += 1
            return self._empty(elem)
        if elem.tag.group == 0x0010 and (vr in TEXT_VRS or vr == "PN"):
            # Text of the Patient group (Occupation...) describes the person: all of it may identify.
            self.actions["C_patient_text_emptied"] += 1
            return self._empty(elem)
        if vr in TEXT_VRS or vr == "PN":
            return self._scrub_element(elem)
        return elem

    def _scrub_element(self, elem: DataElement) -> DataElement:
        changed = False
        out: list[str] = []
        for value in _values(elem.value):
            text = str(value)
            cleaned = self._scrub_text(text)
            changed |= cleaned != text
            out.append(cleaned)
        if not changed:
            return elem
        return DataElement(elem.tag, elem.VR, out if len(out) > 1 else (out[0] if out else None))

    def _scrub_text(self, text: str) -> str:
        upper = normalise(text)
        found = self.scrub_terms.find(upper)
        if not found:
            return text
        # Work on the normalised text: the original spacing and case do not matter once cleaned.
        # Repeat: removing one term can join the pieces of another ("SMI" + "TH").
        while found:
            for term in found:  # longest first, so "JOHN SMITH" goes before "JOHN"
                upper = upper.replace(term, "")
            upper = " ".join(upper.split())
            found = self.scrub_terms.find(upper)
        return upper

    def _dummy(self, elem: DataElement) -> DataElement | None:
        vr = elem.VR
        if vr == "SQ":
            return self._sequence(elem)
        if vr == "UI":
            return self._uids(elem)
        if vr in DATE_VRS and self.shift is not None:
            return self._shift(elem)
        if vr in DATE_VRS and self.options.retain_long_full_dates:
            return elem
        if vr in _DUMMY_BY_VR:
            return DataElement(elem.tag, vr, _DUMMY_BY_VR[vr])
        if vr in TEXT_VRS:
            return DataElement(elem.tag, vr, _DUMMY_TEXT)
        if vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"):
            return DataElement(elem.tag, vr, 0)
        return DataElement(elem.tag, vr, b"\x00\x00" if vr in ("OB", "OW", "UN") else None)

    # -- what was done -----------------------------------------------------------------------------
    def record(self, original: Dataset, new: Dataset) -> None:
        """Pseudonyms, Patient Identity Removed, the method and its codes (PS3.15 E.1.1 and E.3)."""
        pid, name = pseudonyms(self.key, self.patient)
        new.PatientID = pid
        new.PatientName = name
        self.identifying.add("PN", _safe_get(original, "PatientName"))
        self.identifying.add("LO", _safe_get(original, "PatientID"))
        new.PatientIdentityRemoved = "YES"
        edition = self.deid.profile.edition
        enabled = self.options.enabled
        new.DeidentificationMethod = (
            f"DICOM PS3.15 {edition} Table E.1-1 Basic Profile"
            + ("; " + ", ".join(enabled) if enabled else "")
            + f"; dicomflow {__version__}"
        )[:64]
        codes = [BASIC_PROFILE_CODE] + [OPTION_CODES[name] for name in enabled]
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        new.DeidentificationMethodCodeSequence = Sequence(items)
        if self.options.retain_long_modified_dates:
            new.LongitudinalTemporalInformationModified = "MODIFIED"
        elif self.options.retain_long_full_dates:
            new.LongitudinalTemporalInformationModified = "UNMODIFIED"
        else:
            new.LongitudinalTemporalInformationModified = "REMOVED"
        if self.shift is not None:
            self.notes.append("dates shifted by a keyed per-patient offset (days withheld)")


def walk_values(ds: Dataset) -> Iterable[tuple[int, str, str]]:
    """Every (tag, VR, string value) of ``ds``, recursively; binary values are skipped. Elements
    still undecoded (passed through) are read as Latin-1 text when their VR is a string VR. The
    tag is pydicom's (an ``int`` whose ``str()`` is ``"(gggg,eeee)"``), formatted only if needed."""
    for tag, item in list(ds._dict.items()):
        if isinstance(item, RawDataElement):
            vr = raw_vr(item)
            if vr in _STRING_VRS and item.value:
                yield tag, str(vr), item.value.decode("latin-1")
            continue
        if item.VR == "SQ":
            for child in item.value or []:
                yield from walk_values(child)
            continue
        if item.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            continue
        for value in _values(item.value):
            yield tag, str(item.VR), str(value)
