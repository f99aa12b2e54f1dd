"""Conformance rules for one DICOM file, read from its header alone.

Each rule is a pure function of a parsed header (see :class:`HeaderLike`, which
:class:`dicomflow.dicom.header.DicomHeader` satisfies) and a :class:`FilePolicy`, returning findings.
None of them reads pixel bytes: the pixel data length is checked from the element's length field and
the file size. Rules read element values defensively: a value pydicom cannot convert is a finding
(``ELEMENT_MALFORMED``), never an exception.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pydicom.uid import (
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicomflow.manifest import ManifestLimits
from dicomflow.validation.findings import Finding, Severity, element_label
from dicomflow.validation.sop_classes import DEFAULT_ALLOWED_SOP_CLASSES, sop_class_name

#: A UID (PS3.5 9.1): components of digits separated by dots, no leading zero in a component.
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_UID_MAX_LENGTH = 64
#: Pixel Data's length field when the value is encapsulated (undefined length).
UNDEFINED_LENGTH = 0xFFFFFFFF
#: Transfer syntaxes whose Pixel Data is stored native (uncompressed, defined length).
NATIVE_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    str(u)
    for u in (
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    )
)
KNOWN_TRANSFER_SYNTAXES: frozenset[str] = frozenset(str(u) for u in AllTransferSyntaxes)

_TAGS = {
    "MediaStorageSOPClassUID": 0x00020002,
    "MediaStorageSOPInstanceUID": 0x00020003,
    "TransferSyntaxUID": 0x00020010,
    "ImplementationClassUID": 0x00020012,
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
    "FrameOfReferenceUID": 0x00200052,
    "Rows": 0x00280010,
    "Columns": 0x00280011,
    "BitsAllocated": 0x00280100,
    "SamplesPerPixel": 0x00280002,
    "NumberOfFrames": 0x00280008,
    "PixelData": 0x7FE00010,
}


def label(keyword: str) -> str:
    return element_label(keyword, _TAGS[keyword])


class HeaderLike(Protocol):
    """What the rules need from a parsed header (:class:`dicomflow.dicom.header.DicomHeader`)."""

    @property
    def has_preamble(self) -> bool: ...
    @property
    def file_meta(self) -> Dataset | None: ...
    @property
    def dataset(self) -> Dataset: ...
    @property
    def transfer_syntax(self) -> Any: ...
    @property
    def pixel_data_tag(self) -> int | None: ...
    @property
    def pixel_data_value_offset(self) -> int | None: ...
    @property
    def pixel_data_length(self) -> int | None: ...
    @property
    def file_size(self) -> int: ...


@dataclass(frozen=True)
class FilePolicy:
    """What a file must satisfy beyond the standard's structure (the configurable part).

    Examples
    --------
    >>> FilePolicy().allows("1.2.840.10008.5.1.4.1.1.2")
    True
    >>> FilePolicy().allows("1.2.840.10008.5.1.4.1.1.7")  # Secondary Capture
    False
    """

    allowed_sop_classes: frozenset[str] = DEFAULT_ALLOWED_SOP_CLASSES
    max_file_size: int = ManifestLimits().max_file_size
    #: Image Plane geometry (and Frame of Reference UID) is required for these classes.
    image_sop_classes: frozenset[str] = field(default=DEFAULT_ALLOWED_SOP_CLASSES)

    def allows(self, sop_class_uid: str) -> bool:
        return sop_class_uid in self.allowed_sop_classes

    def with_allowed(self, extra: Iterable[str]) -> FilePolicy:
        return FilePolicy(
            self.allowed_sop_classes | frozenset(extra), self.max_file_size, self.image_sop_classes
        )


class _Malformed(Exception):
    """An element's value could not be read (pydicom could not convert its raw bytes)."""


def read_value(ds: Dataset | None, keyword: str) -> Any:
    """The value of ``keyword`` in ``ds`` (None if absent or empty); :class:`_Malformed` if unreadable."""
    if ds is None or keyword not in ds:
        return None
    try:
        with warnings.catch_warnings():
            # pydicom warns on invalid values (e.g. a UID with a leading zero); the rules report them.
            warnings.simplefilter("ignore")
            elem = ds.data_element(keyword)
            if elem is None:
                return None
            value = elem.value
    except Exception as exc:
        raise _Malformed(keyword) from exc
    if value is None or value == "" or (isinstance(value, list | tuple) and len(value) == 0):
        return None
    return value


def uid_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid UID, or None when it is one.

    Examples
    --------
    >>> uid_problem("1.2.840.10008.1.2.1") is None
    True
    >>> uid_problem("1.2.03")
    'a component has a leading zero or a character other than digits and dots'
    >>> uid_problem("1." * 40 + "1")
    'it is 81 characters long, over the limit of 64'
    """
    if not isinstance(value, str):
        return "it holds several values or is not text"
    if len(value) > _UID_MAX_LENGTH:
        return f"it is {len(value)} characters long, over the limit of {_UID_MAX_LENGTH}"
    if not _UID_RE.match(value):
        return "a component has a leading zero or a character other than digits and dots"
    return None


def check_preamble(header: HeaderLike, policy: FilePolicy) -> list[Finding]:
    if header.has_preamble:
        return []
    return [
        Finding(
            "NO_PREAMBLE",
            "the file lacks the 128-byte preamble and 'DICM' prefix of a DICOM Part 10 file; "
            "export it as a DICOM file (PS3.10), not a raw dataset",
        )
    ]


def check_file_meta(header: HeaderLike, policy: FilePolicy) -> list[Finding]:
    meta = header.file_meta
    if meta is None or len(meta) == 0:
        return [Finding("FILE_META_MISSING", "the file has no File Meta Information (group 0002)")]
    findings: list[Finding] = []
    pairs = (
        ("MediaStorageSOPClassUID", "SOPClassUID"),
        ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
    )
    for meta_kw in (
        "MediaStorageSOPClassUID",
        "MediaStorageSOPInstanceUID",
        "TransferSyntaxUID",
        "ImplementationClassUID",
    ):
        findings += _check_uid(meta, meta_kw, missing_code="FILE_META_INCOMPLETE")
    for meta_kw, ds_kw in pairs:
        try:
            meta_value, ds_value = read_value(meta, meta_kw), read_value(header.dataset, ds_kw)
        except _Malformed:
            continue  # reported by the UID checks
        if meta_value is not None and ds_value is not None and str(meta_value) != str(ds_value):
            findings.append(
                Finding(
                    "FILE_META_MISMATCH",
                    f"{meta_kw} of the file meta differs from the dataset's {ds_kw}",
                    label(meta_kw),
                )
            )
    return findings


def check_transfer_syntax(header: HeaderLike, policy: FilePolicy) -> list[Finding]:
    try:
        uid = read_value(header.file_meta, "TransferSyntaxUID")
    except _Malformed:
        return []  # reported by check_file_meta
    if uid is None:
        return []  # reported by check_file_meta
    if str(uid) not in KNOWN_TRANSFER_SYNTAXES:
        return [
            Finding(
                "TRANSFER_SYNTAX_UNKNOWN",
                "the transfer syntax is not one of the standard transfer syntaxes (PS3.5 Table A-1) "
                "that this pipeline can read",
                label("TransferSyntaxUID"),
            )
        ]
    return []


def check_uids(header: HeaderLike, policy: FilePolicy) -> list[Finding]:
    ds = header.dataset
    findings: list[Finding] = []
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        findings += _check_uid(ds, keyword, missing_code="UID_MISSING")
    if _is_image_class(header, policy):
        findings += _check_uid(ds, "FrameOfReferenceUID", missing_code="UID_MISSING")
    return findings


def check_sop_class(header: HeaderLike, policy: FilePolicy) -> list[Finding]:
    try:
        uid = read_value(header.dataset, "SOPClassUID")
    except _Malformed:
        return []
    if uid is None or uid_problem(uid) is not None:
        return []  # reported by check_uids
    if not policy.allows(str(uid)):
        return [
            Finding(
                "SOP_CLASS_NOT_ALLOWED",
                f"the SOP class {sop_class_name(str(uid))} ({uid}) is not one this pipeline accepts; "
                "allowed: " + ", ".join(sorted(sop_class_name(u) for u in policy.allowed_sop_classes)),
                label("SOPClassUID"),
            )
        ]
    return []


def check_size(header: HeaderLike, policy: FilePolicy) -> list[Finding]:
    if header.file_size > policy.max_file_size:
        return [
            Finding(
                "FILE_TOO_LARGE",
                f"the file is {header.file_size} bytes, over the limit of {policy.max_file_size}",
            )
        ]
    return []


def expected_pixel_bytes(rows: int, columns: int, frames: int, samples: int, bits_allocated: int) -> int:
    """Bytes of native Pixel Data, before padding to an even length (PS3.5 8.1.1).

    Examples
    --------
    >>> expected_pixel_bytes(512, 512, 1, 1, 16)
    524288
    >>> expected_pixel_bytes(3, 3, 1, 1, 1)  # 9 bits packed into 2 bytes
    2
    """
    return (rows * columns * frames * samples * bits_allocated + 7) // 8


def check_pixel_data(header: HeaderLike, policy: FilePolicy) -> list[Finding]:
    offset, length = header.pixel_data_value_offset, header.pixel_data_length
    if header.pixel_data_tag is None:
        if _is_image_class(header, policy):
            return [Finding("PIXEL_DATA_MISSING", "the image has no Pixel Data element", label("PixelData"))]
        return []
    ts = str(header.transfer_syntax) if header.transfer_syntax is not None else None
    undefined = length is None or length == UNDEFINED_LENGTH
    if ts is None or ts not in KNOWN_TRANSFER_SYNTAXES:
        return []  # reported by check_transfer_syntax
    if ts not in NATIVE_TRANSFER_SYNTAXES:
        if not undefined:
            return [
                Finding(
                    "PIXEL_DATA_NOT_ENCAPSULATED",
                    "the transfer syntax is compressed but Pixel Data has a defined length; "
                    "compressed pixel data must be encapsulated (undefined length, PS3.5 A.4)",
                    label("PixelData"),
                )
            ]
        return []
    if undefined:
        return [
            Finding(
                "PIXEL_LENGTH_MISMATCH",
                "Pixel Data has an undefined length under a native (uncompressed) transfer syntax",
                label("PixelData"),
            )
        ]
    assert length is not None
    if offset is not None and offset + length > header.file_size:
        # The header reader refuses this already; kept so the rule stands on its own.
        return [
            Finding(
                "TRUNCATED",
                f"Pixel Data declares {length} bytes but the file ends {offset + length - header.file_size} "
                "bytes before it; the file is truncated (upload it again)",
                label("PixelData"),
            )
        ]
    ds = header.dataset
    try:
        values = {kw: read_value(ds, kw) for kw in ("Rows", "Columns", "BitsAllocated")}
        samples = read_value(ds, "SamplesPerPixel")
        frames = read_value(ds, "NumberOfFrames")
    except _Malformed as exc:
        kw = str(exc)
        return [Finding("ELEMENT_MALFORMED", f"{kw} cannot be read as its VR requires", label(kw))]
    missing = [kw for kw, v in values.items() if v is None]
    if samples is None:
        missing.append("SamplesPerPixel")
    if missing:
        return [
            Finding(
                "IMAGE_PIXEL_INCOMPLETE",
                f"the Image Pixel module lacks {', '.join(missing)}: the Pixel Data length cannot be checked",
                label(missing[0]),
            )
        ]
    try:
        numbers = [
            int(values["Rows"]),
            int(values["Columns"]),
            int(frames or 1),
            int(samples),
            int(values["BitsAllocated"]),
        ]
    except (TypeError, ValueError):
        return [
            Finding(
                "ELEMENT_MALFORMED",
                "Rows, Columns, NumberOfFrames, SamplesPerPixel or BitsAllocated is not a single number",
                label("Rows"),
            )
        ]
    if any(n < 1 for n in numbers):
        return [
            Finding(
                "IMAGE_PIXEL_INCOMPLETE",
                "Rows, Columns, NumberOfFrames, SamplesPerPixel and BitsAllocated must all be at least 1",
                label("Rows"),
            )
        ]
    try:
        photometric = read_value(ds, "PhotometricInterpretation")
    except _Malformed:
        photometric = None
    if photometric == "YBR_FULL_422" and numbers[3] == 3:
        numbers[3] = 2  # chroma subsampled 2:1 horizontally: two samples' worth per pixel (PS3.3 C.7.6.3.1.2)
    expected = expected_pixel_bytes(*numbers)
    padded = expected + (expected & 1)
    if length not in (expected, padded):
        rows, columns, n_frames, n_samples, bits = numbers
        return [
            Finding(
                "PIXEL_LENGTH_MISMATCH",
                f"Pixel Data is {length} bytes; Rows x Columns x NumberOfFrames x SamplesPerPixel x "
                f"BitsAllocated/8 = {rows} x {columns} x {n_frames} x {n_samples} x {bits}/8 = {expected}"
                + (f" (or {padded} padded to even length)" if padded != expected else ""),
                label("PixelData"),
            )
        ]
    return []


#: Every file rule, in the order findings are reported.
FILE_RULES: tuple[Callable[[HeaderLike, FilePolicy], list[Finding]], ...] = (
    check_preamble,
    check_file_meta,
    check_transfer_syntax,
    check_uids,
    check_sop_class,
    check_size,
    check_pixel_data,
)


def check_header(header: HeaderLike, policy: FilePolicy | None = None) -> list[Finding]:
    """Run every file rule on a parsed header; never raises on malformed content.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> from dicomflow.dicom.header import read_header_from_path
    >>> findings = check_header(read_header_from_path(get_testdata_file("CT_small.dcm")))
    >>> [f.code for f in findings]
    []
    """
    policy = policy or FilePolicy()
    findings: list[Finding] = []
    for rule in FILE_RULES:
        try:
            findings += rule(header, policy)
        except Exception as exc:  # noqa: BLE001 - a malformed header is rejected, never raised out
            findings.append(
                Finding(
                    "HEADER_MALFORMED",
                    f"rule {rule.__name__} could not read the header ({exc.__class__.__name__})",
                )
            )
    return findings


def _is_image_class(header: HeaderLike, policy: FilePolicy) -> bool:
    try:
        uid = read_value(header.dataset, "SOPClassUID")
    except _Malformed:
        return False
    return uid is not None and str(uid) in policy.image_sop_classes


def _check_uid(ds: Dataset | None, keyword: str, *, missing_code: str) -> list[Finding]:
    try:
        value = read_value(ds, keyword)
    except _Malformed:
        return [Finding("ELEMENT_MALFORMED", f"{keyword} cannot be read as a UID", label(keyword))]
    if value is None:
        return [Finding(missing_code, f"{keyword} is missing or empty (it is required)", label(keyword))]
    problem = uid_problem(value)
    if problem:
        return [Finding("UID_INVALID", f"{keyword} is not a valid UID: {problem}", label(keyword))]
    return []


__all__ = [
    "FILE_RULES",
    "KNOWN_TRANSFER_SYNTAXES",
    "NATIVE_TRANSFER_SYNTAXES",
    "FilePolicy",
    "HeaderLike",
    "Severity",
    "check_header",
    "expected_pixel_bytes",
    "read_value",
    "uid_problem",
]
