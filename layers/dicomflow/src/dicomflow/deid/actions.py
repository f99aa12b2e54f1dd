"""Table E.1-1 on a pydicom data set: the engine for files the raw rewriter does not take.

:mod:`dicomflow.deid.rewrite` de-identifies little-endian headers as bytes; big endian, deflated and
odd files come here, parsed by pydicom. Every decision is :mod:`dicomflow.deid.policy`'s (the same
for both engines); this module only reads pydicom elements into (tag, VR, text values) and turns
each :class:`~dicomflow.deid.policy.Change` back into a pydicom element.

Pure: a data set in, a new data set out (the input is not modified unless ``consume``). Elements
pydicom cannot decode are removed and counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from dicomflow.deid.policy import (
    COLLECT_VRS,
    DATE_VRS,
    DECODE_VRS,
    DICOMFLOW_IMPLEMENTATION_UID,
    DICOMFLOW_IMPLEMENTATION_VERSION,
    EXPLICIT_VR_LITTLE_ENDIAN,
    MIN_IDENTIFYING_LENGTH,
    OWN_VOCABULARY,
    STRING_VRS,
    TEXT_VRS,
    Change,
    Deidentifier,
    IdentifyingValues,
    Policy,
    TermIndex,
    normalise,
    passes_through,
    pseudonyms,
    values_of,
)
from dicomflow.deid.uids import remap_uid
from dicomflow.dicom.dictionary import dictionary_vr

__all__ = [
    "COLLECT_VRS",
    "DATE_VRS",
    "DICOMFLOW_IMPLEMENTATION_UID",
    "DICOMFLOW_IMPLEMENTATION_VERSION",
    "MIN_IDENTIFYING_LENGTH",
    "TEXT_VRS",
    "DeidOutcome",
    "Deidentifier",
    "IdentifyingValues",
    "TermIndex",
    "deidentify_dataset",
    "normalise",
    "patient_identity",
    "pseudonyms",
    "raw_vr",
    "walk_values",
]


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


def raw_vr(elem: DataElement | RawDataElement) -> str | None:
    """The VR of an element without decoding its value (implicit VR: the dictionary's)."""
    if isinstance(elem, DataElement):
        return str(elem.VR)
    return str(elem.VR) if elem.VR else dictionary_vr(int(elem.tag))


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


def deidentify_dataset(
    deid: Deidentifier,
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
    run = _Run(deid, patient, identifying)
    run.consume = consume
    if identifying is None:
        run.collect(ds)
    new = run.walk(ds)
    meta = FileMetaDataset()
    if top_level:
        run.record_into(ds, new)
        meta = _file_meta(deid, file_meta, new, transfer_syntax)
    return DeidOutcome(new, meta, run.identifying, run.uid_map, run.actions, run.shift, run.notes)


def _file_meta(
    deid: Deidentifier, original: FileMetaDataset | None, new: Dataset, transfer_syntax: str | None
) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    sop_class = new.get("SOPClassUID")
    if not sop_class and original is not None:
        sop_class = _safe_get(original, "MediaStorageSOPClassUID")
    if sop_class:
        meta.MediaStorageSOPClassUID = UID(str(sop_class))
    sop_instance = new.get("SOPInstanceUID")
    original_instance = _safe_get(original, "MediaStorageSOPInstanceUID") if original is not None else None
    if not sop_instance and original_instance:
        sop_instance = remap_uid(deid.key, str(original_instance))
    if sop_instance:
        meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = UID(transfer_syntax or EXPLICIT_VR_LITTLE_ENDIAN)
    # Source/Sending/Receiving AE titles, private information: not carried over (identifying).
    meta.ImplementationClassUID = UID(DICOMFLOW_IMPLEMENTATION_UID)
    meta.ImplementationVersionName = DICOMFLOW_IMPLEMENTATION_VERSION
    return meta


def _text_values(elem: DataElement) -> list[str]:
    return [str(v) for v in values_of(elem.value)] if elem.VR in DECODE_VRS else []


class _Run(Policy):
    """The policy's pass over a pydicom data set."""

    consume = False

    def collect(self, ds: Dataset) -> None:
        """Gather the identifying values: every value that the profile does not keep."""
        for tag in list(ds.keys()):
            if tag.is_private:
                continue  # removed or safelisted; generic private values would only raise false alarms
            if passes_through(raw_vr(ds.get_item(tag, keep_deferred=True))):
                continue  # numbers, codes, binary: nothing identifying to gather, no need to decode
            try:
                elem = ds[tag]
            except Exception:  # noqa: BLE001 - undecodable: removed in the walk, nothing to gather
                continue
            if elem.VR == "SQ":
                for item in elem.value or []:
                    self.collect(item)
                continue
            if self.collects(int(tag), elem.VR):
                self.identifying.add(elem.VR, elem.value)

    def walk(self, ds: Dataset) -> Dataset:
        new = Dataset()
        kept_private_blocks: set[tuple[int, int]] = set()
        creators: dict[tuple[int, int], DataElement] = {}
        for tag in sorted(ds.keys()):
            raw = ds.get_item(tag, keep_deferred=True)
            if (
                (isinstance(raw, DataElement) or raw.VR is not None or ds.original_encoding[0] is True)
                # (the VR is known: decoded already, explicit, or implicit from the dictionary)
                and not tag.is_private
                and tag.group not in (0x0000, 0x0002)
                and tag.element != 0x0000
                and passes_through(raw_vr(raw))
            ):
                action = self.profile.action(int(tag))
                if action is None or action == "K":
                    # kept as read: no decoding, no re-encoding (the output keeps the encoding)
                    self.done.append("K" if action else "kept_unlisted")
                    new[tag] = raw
                    continue
            try:
                elem = ds[tag]
            except Exception:  # noqa: BLE001 - pydicom cannot decode it: we cannot vouch for it
                self.done.append("removed_undecodable")
                continue
            if tag.group in (0x0000, 0x0002) or tag.element == 0x0000:
                # Command and file meta elements have no place in a stored data set, and group
                # lengths would be wrong once values change: none is carried over.
                self.done.append("X_structural")
                continue
            if tag.is_private:
                if tag.is_private_creator:
                    creators[(tag.group, tag.element)] = elem
                    continue
                creator = ds.get((tag.group << 16) | (tag.element >> 8))
                name = str(creator.value) if creator is not None else ""
                out = self._materialise(elem, self.decide_private(name, int(tag), elem.VR))
                if out is not None:
                    new.add(out)
                    kept_private_blocks.add((tag.group, tag.element >> 8))
                continue
            out = self._materialise(elem, self.decide(int(tag), elem.VR, _text_values(elem)))
            if out is not None:
                new.add(out)
        for group, block in kept_private_blocks:
            kept_creator = creators.get((group, block))
            if kept_creator is not None:
                new.add(kept_creator)
        if None not in ds.original_encoding:
            # Same encoding and character set as read: pydicom then writes passed-through elements
            # as they are instead of decoding and re-encoding all of them (passed-through elements
            # are never text, so the character set is only that of the new text values).
            implicit, little = ds.original_encoding
            new.set_original_encoding(implicit, little, new._character_set)
        return new

    def _materialise(self, elem: DataElement, change: Change) -> DataElement | None:
        kind = change.kind
        if kind == "keep":
            return elem
        if kind == "remove":
            return None
        if kind == "walk":
            items = []
            for item in elem.value or []:
                items.append(self.walk(item))
                if self.consume:
                    item.clear()
            return DataElement(elem.tag, "SQ", Sequence(items))
        if kind == "empty":
            if elem.VR == "SQ":
                return DataElement(elem.tag, "SQ", Sequence([]))
            return DataElement(elem.tag, elem.VR, "" if elem.VR in STRING_VRS else None)
        if kind == "zero":
            return DataElement(elem.tag, elem.VR, b"\x00\x00" if elem.VR in ("OB", "OW", "UN") else 0)
        values = list(change.values)
        return DataElement(elem.tag, elem.VR, values if len(values) > 1 else (values[0] if values else None))

    def record_into(self, original: Dataset, new: Dataset) -> None:
        """Write the recorded attributes (pseudonyms, method, codes) into ``new``."""
        recorded = self.record(_safe_get(original, "PatientName"), _safe_get(original, "PatientID"))
        new.PatientID = recorded.patient_id
        new.PatientName = recorded.patient_name
        new.PatientIdentityRemoved = "YES"
        new.DeidentificationMethod = recorded.method
        items = []
        for value, meaning in recorded.codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        new.DeidentificationMethodCodeSequence = Sequence(items)
        new.LongitudinalTemporalInformationModified = recorded.longitudinal


def walk_values(ds: Dataset) -> Iterable[tuple[int, str, str]]:
    """Every (tag, VR, string value) of ``ds``, recursively; binary values are skipped. Elements
    still undecoded (passed through) are read as Latin-1 text when their VR is a string VR. The
    tag is pydicom's (an ``int`` whose ``str()`` is ``"(gggg,eeee)"``), formatted only if needed."""
    for tag, item in list(ds._dict.items()):
        if isinstance(item, RawDataElement):
            vr = raw_vr(item)
            if vr in STRING_VRS and item.value:
                yield tag, str(vr), item.value.decode("latin-1")
            continue
        if item.VR == "SQ":
            for child in item.value or []:
                yield from walk_values(child)
            continue
        if item.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            continue
        for value in values_of(item.value):
            yield tag, str(item.VR), str(value)
