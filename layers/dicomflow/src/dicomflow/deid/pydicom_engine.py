"""The pydicom engine: de-identify headers pydicom parses (the fallback of :mod:`~dicomflow.deid.rewrite`).

Big endian, deflated, other character sets, files without a preamble or file meta, trailing
elements after the pixels and damaged files: pydicom reads them (:mod:`dicomflow.dicom.header`),
:mod:`dicomflow.deid.actions` applies the same policy as the byte-level engine, and pydicom encodes
the new header with the original's VR explicitness and byte order (big endian stays big endian).

* Elements after Pixel Data: Data Set Trailing Padding (FFFC,FFFC) is dropped (meaningless by
  definition); any other element is de-identified with the same rules and re-encoded after the
  pixels; more than 1 MiB of them, or bytes that do not parse, fail the file (reported).
* Deflated transfer syntax: the data set is one deflate stream, so pixels cannot be copied as
  bytes. The file (up to 256 MiB) is inflated in memory, de-identified whole with pydicom and
  re-deflated; the pixel hash is taken on the Pixel Data value before and after.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import correct_ambiguous_vr, write_dataset, write_file_meta_info
from pydicom.uid import UID

from dicomflow.deid.actions import (
    DICOMFLOW_IMPLEMENTATION_UID,
    Deidentifier,
    DeidOutcome,
    IdentifyingValues,
    patient_identity,
)
from dicomflow.deid.burned_in import burned_in_reasons
from dicomflow.deid.leakcheck import LeakReport, check_leaks
from dicomflow.deid.pixels import hash_bytes
from dicomflow.deid.prepared import Prepared
from dicomflow.dicom.elements import pixel_end
from dicomflow.dicom.errors import MalformedHeaderError, NonConformantError
from dicomflow.dicom.header import DicomHeader
from dicomflow.errors import DeidentificationError

ReadRange = Callable[[int, int], bytes]

#: Elements after Pixel Data larger than this are not parsed in memory: the file fails.
MAX_TRAILING_BYTES = 1024 * 1024
_TRAILING_PADDING = 0xFFFCFFFC


def find_pixel_end(header: DicomHeader, read_range: ReadRange) -> int:
    """Offset just past the pixel element (its sequence delimiter when encapsulated)."""
    return pixel_end(
        header.pixel_data_value_offset,
        header.pixel_data_length,
        header.header_end,
        header.file_size,
        read_range,
        header.is_little_endian,
    )


def encode_header(meta: FileMetaDataset, ds: Dataset, *, implicit: bool, little: bool) -> bytes:
    """Preamble (zeros: the original's may hold anything), ``DICM``, file meta, then the data set
    encoded as the copied pixel bytes are."""
    fp = DicomBytesIO()
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    correct_ambiguous_vr(ds, little)
    write_dataset(fp, ds)
    return bytes(fp.getvalue())


def _encode_dataset(ds: Dataset, *, implicit: bool, little: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    correct_ambiguous_vr(ds, little)
    write_dataset(fp, ds)
    return bytes(fp.getvalue())


def prepare_pydicom(header: DicomHeader, read_range: ReadRange, deid: Deidentifier) -> Prepared:
    """De-identify the header (and trailing elements) and leak-check the result."""
    implicit, little = header.is_implicit_vr, header.is_little_endian
    meta = header.file_meta
    if len(header.dataset) == 0:
        raise NonConformantError("the data set is empty: nothing to de-identify")
    for keyword, meta_keyword in (
        ("SOPClassUID", "MediaStorageSOPClassUID"),
        ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
    ):
        try:
            value = header.dataset.get(keyword) or meta.get(meta_keyword)
        except Exception as exc:  # pydicom cannot decode it: a corrupt file
            raise MalformedHeaderError(f"{keyword} cannot be decoded ({type(exc).__name__})") from exc
        if not value:
            raise NonConformantError(f"no {keyword}: not a composite DICOM object that can be de-identified")
        if not UID(str(value).rstrip("\0 ")).is_valid:
            raise MalformedHeaderError(f"{keyword} is not a valid UID")
    syntax = Deidentifier.syntax_for(header.transfer_syntax, implicit, little)
    held = burned_in_reasons(header.dataset)
    outcome = deid.deidentify(header.dataset, header.file_meta, transfer_syntax=syntax, consume=True)
    pixel_end = find_pixel_end(header, read_range)
    new_trailing, trailing_note, trailing_ds = _trailing(
        header, read_range, pixel_end, deid, outcome.identifying
    )
    try:
        new_header = encode_header(outcome.file_meta, outcome.dataset, implicit=implicit, little=little)
    except Exception as exc:
        raise MalformedHeaderError(
            f"the header cannot be re-encoded ({type(exc).__name__} in pydicom)"
        ) from exc
    datasets = [outcome.dataset, outcome.file_meta] + ([trailing_ds] if trailing_ds is not None else [])
    leak = check_leaks(
        outcome.identifying, datasets, new_header + new_trailing, _own_uids(outcome), outcome.own_text
    )
    return Prepared(
        new_header=new_header,
        pixel_start=header.header_end,
        pixel_end=pixel_end,
        new_trailing=new_trailing,
        trailing_note=trailing_note,
        leak=leak,
        held=held,
        transfer_syntax=outcome.file_meta.get("TransferSyntaxUID"),
        sop_instance_uid=str(outcome.dataset.get("SOPInstanceUID", "")) or None,
        actions=dict(outcome.actions),
        header_bytes_read=header.bytes_read,
        engine="pydicom",
    )


def _own_uids(outcome: DeidOutcome) -> set[str]:
    """UIDs we wrote: masked in the raw search (a 39-digit UID may contain any short digit run)."""
    return set(outcome.uid_map.values()) | {DICOMFLOW_IMPLEMENTATION_UID}


def _trailing(
    header: DicomHeader,
    read_range: ReadRange,
    pixel_end: int,
    deid: Deidentifier,
    identifying: IdentifyingValues,
) -> tuple[bytes, str | None, Dataset | None]:
    size = header.file_size - pixel_end
    if size <= 0:
        return b"", None, None
    if size > MAX_TRAILING_BYTES:
        raise DeidentificationError(f"{size} bytes of elements after Pixel Data (limit {MAX_TRAILING_BYTES})")
    raw = read_range(pixel_end, header.file_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = read_dataset(io.BytesIO(raw), header.is_implicit_vr, header.is_little_endian)
            tags = list(parsed.keys())
    except Exception as exc:
        raise DeidentificationError(
            f"{size} bytes after Pixel Data do not parse as data elements ({type(exc).__name__})"
        ) from exc
    padding = _TRAILING_PADDING in parsed
    if padding:
        del parsed[_TRAILING_PADDING]
    notes = []
    if padding:
        notes.append("Data Set Trailing Padding dropped")
    if len(parsed) == 0:
        return b"", "; ".join(notes) or None, None
    outcome = deid.deidentify(
        parsed, None, identifying=identifying, patient=patient_identity(header.dataset), top_level=False
    )
    encoded = _encode_dataset(outcome.dataset, implicit=header.is_implicit_vr, little=header.is_little_endian)
    notes.append(
        f"{len(tags) - int(padding)} element(s) after Pixel Data de-identified, {len(outcome.dataset)} kept"
    )
    return encoded, "; ".join(notes), outcome.dataset


@dataclass(frozen=True)
class Deflated:
    """A deflated file de-identified whole: the new file's bytes and what was found."""

    data: bytes
    original: Dataset  # the original header (burned-in annotation is judged on it)
    bytes_read: int
    outcome: DeidOutcome
    leak: LeakReport
    pixel_hash_before: str | None
    pixel_hash_after: str | None


def deidentify_deflated(header: DicomHeader, read_range: ReadRange, deid: Deidentifier) -> Deflated:
    """Inflate, de-identify whole, re-deflate: (bytes, outcome, leak, pixel hash before, after)."""
    whole = read_range(0, header.file_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = pydicom.dcmread(io.BytesIO(whole), force=True)
    outcome = deid.deidentify(full, full.file_meta, transfer_syntax=str(header.transfer_syntax))
    new = outcome.dataset
    before = after = None
    if "PixelData" in full:
        before = hash_bytes(full.PixelData)
        after = hash_bytes(new.PixelData) if "PixelData" in new else None
    out = FileDataset("", new, file_meta=outcome.file_meta, preamble=b"\x00" * 128)
    buf = io.BytesIO()
    out.save_as(buf, enforce_file_format=True)
    without_pixels = Dataset({e.tag: e for e in new if e.tag != 0x7FE00010})
    raw = encode_header(outcome.file_meta, without_pixels, implicit=False, little=True)
    leak = check_leaks(
        outcome.identifying, [new, outcome.file_meta], raw, _own_uids(outcome), outcome.own_text
    )
    return Deflated(buf.getvalue(), header.dataset, header.file_size, outcome, leak, before, after)
