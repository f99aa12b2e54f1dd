"""The byte-level header reader and writer (``dicomflow.dicom.elements``): what it reads agrees with
pydicom, what it writes pydicom reads back the same, it fetches only the header from a ranged source,
and it declines (``Unsupported``, with a reason) what it does not read."""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomflow.dicom.elements import (
    Buffer,
    Element,
    Unsupported,
    encode_elements,
    encode_file_meta,
    read_elements,
    read_raw_header,
)
from tests.unit.test_deid import planted_ct


def _leaves(elements: list[Element]) -> dict[int, object]:
    return {
        e.tag: ([_leaves(i) for i in e.items] if e.items is not None else e.value.rstrip(b" \0"))
        for e in elements
    }


def _pydicom_leaves(ds: Dataset) -> dict[int, object]:
    """Each element's value as bytes (as read, undecoded where pydicom left it so), padding stripped."""
    out: dict[int, object] = {}
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        implicit_sequence = raw.VR is None and not tag.is_private and dictionary_VR(tag) == "SQ"
        if raw.VR == "SQ" or implicit_sequence or isinstance(raw.value, Sequence):
            out[int(tag)] = [_pydicom_leaves(item) for item in ds[tag].value]
        elif isinstance(raw.value, (str, bytes)):
            value = raw.value
            out[int(tag)] = (value.encode("latin-1") if isinstance(value, str) else value).rstrip(b" \0")
        else:  # decoded already (a number pydicom needed): compare its encoding instead
            out[int(tag)] = _encoded(ds, tag)
    return out


def _encoded(ds: Dataset, tag: int) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_data_element(fp, ds[tag])
    return bytes(fp.getvalue()[8:]).rstrip(b" \0")


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian], ids=["implicit", "explicit"]
)
def test_a_header_reads_as_pydicom_reads_it_and_writes_back_the_same(tmp_path: Path, syntax: str) -> None:
    # Given a slice with nested sequences, private blocks and text in its header
    path = tmp_path / "in.dcm"
    planted_ct(path, syntax=syntax, trailing=False)
    data = path.read_bytes()
    # When the byte-level reader reads it
    header = read_raw_header(Buffer(data, len(data)))
    # Then every element, nested ones included, holds the bytes pydicom reads raw
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = pydicom.dcmread(path, stop_before_pixels=True)
    assert _leaves(header.dataset) == _pydicom_leaves(reference)
    assert header.transfer_syntax == syntax
    assert header.implicit is (syntax == ImplicitVRLittleEndian)
    assert data[header.header_end : header.header_end + 4] == b"\xe0\x7f\x10\x00"
    # And what it writes (sequences with undefined lengths) reads back to the same elements
    encoded = b"\x00" * 128 + b"DICM" + encode_file_meta(header.file_meta)
    encoded += encode_elements(header.dataset, implicit=header.implicit)
    again = read_raw_header(Buffer(encoded, len(encoded)))
    assert _leaves(again.dataset) == _leaves(header.dataset)
    assert _pydicom_leaves(pydicom.dcmread(BytesIO(encoded), force=True)) == _pydicom_leaves(reference)


def test_a_ranged_source_is_read_up_to_the_pixels_only() -> None:
    # Given a file behind ranged reads (an object store), with 32 KiB of pixels after its header
    data = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    fetched: list[tuple[int, int]] = []

    def read_range(start: int, end: int) -> bytes:
        fetched.append((start, end))
        return data[start:end]

    # When its header is read with a first read smaller than the header
    header = read_raw_header(Buffer(None, len(data), read_range, initial=1024))
    # Then the reads grew in doubling blocks and stopped short of the end of the pixels
    assert header.pixel_length == 32768
    assert fetched[0] == (0, 1024)
    assert max(end for _, end in fetched) < header.pixel_value_offset + header.pixel_length
    assert header.bytes_read == max(end for _, end in fetched)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("MR_small_bigendian.dcm", "not a little-endian one"),
        ("image_dfl.dcm", "not a little-endian one"),
        ("no_meta.dcm", "no preamble"),
    ],
)
def test_files_it_does_not_read_are_declined_with_the_reason(name: str, why: str) -> None:
    data = Path(str(get_testdata_file(name))).read_bytes()
    with pytest.raises(Unsupported, match=why):
        read_raw_header(Buffer(data, len(data)))


def _explicit(tag: int, vr: bytes, value: bytes, *, long: bool = False, length: int | None = None) -> bytes:
    import struct

    n = len(value) if length is None else length
    head = struct.pack("<HH2s", tag >> 16, tag & 0xFFFF, vr)
    head += struct.pack("<xxL", n) if long else struct.pack("<H", n)
    return head + value


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (_explicit(0x00100010, b"PN", b"", long=False, length=0xFFFF), "past the end"),
        (
            _explicit(0x00104000, b"LT", b"", long=False) + _explicit(0x00101000, b"ZZ", b"AB"),
            "VR this reader",
        ),
        (_explicit(0x00081030, b"UN", b"AB", long=True), "public element is encoded as UN"),
        (_explicit(0x00081030, b"OB", b"", long=True, length=0xFFFFFFFF), "undefined length outside"),
        (b"\xfe\xff\x00\xe0\x00\x00\x00\x00", "item or delimiter tag"),
    ],
    ids=["truncated", "unknown-vr", "public-un", "undefined-length", "stray-item"],
)
def test_damage_is_declined_not_guessed(raw: bytes, why: str) -> None:
    with pytest.raises(Unsupported, match=why):
        read_elements(Buffer(raw, len(raw)), 0, None, implicit=False, top=True)


def test_element_repr_names_the_tag_and_size_never_the_value() -> None:
    element = Element(0x00100010, "PN", b"DOE^JOHN")
    assert repr(element) == "Element((0010,0010) PN, 8 bytes)"
    assert "DOE" not in repr(element)
