"""Reading a header against the one before it (``read_raw_header(buf, like=...)``): the next slice of a
series is parsed only where its bytes differ, and comes out exactly as a whole parse gives it;
wherever the layout is not the same, the whole parse decides."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from dicomflow.dicom.elements import Buffer, Element, RawHeader, read_raw_header


def _file(change: Callable[[Dataset], None] | None = None) -> bytes:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    if change is not None:
        change(ds)
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _read(data: bytes, like: RawHeader | None = None) -> RawHeader:
    return read_raw_header(Buffer(data, len(data)), like=like)


def _elements(elements: list[Element]) -> list[object]:
    return [
        (e.tag, e.vr, e.value, e.raw, None if e.items is None else [_elements(i) for i in e.items])
        for e in elements
    ]


def _shape(header: RawHeader) -> tuple[object, ...]:
    return (
        _elements(header.file_meta),
        _elements(header.dataset),
        header.transfer_syntax,
        header.implicit,
        header.header_end,
        header.pixel_tag,
        header.pixel_value_offset,
        header.pixel_length,
        header.file_size,
        header.bytes_read,
    )


def _next_slice(ds: Dataset) -> None:
    # what differs from slice to slice, each value of the same length as before
    ds.SOPInstanceUID = ds.SOPInstanceUID[:-1] + ("3" if ds.SOPInstanceUID[-1] != "3" else "4")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = 2
    ds.ImagePositionPatient = [-158.135803, -179.035797, -74.699997]
    ds.SliceLocation = "-76.2040634155"


def test_the_next_slice_reuses_what_repeats_and_parses_what_differs() -> None:
    first = _read(_file())
    data = _file(_next_slice)
    again = _read(data, like=first)
    assert _shape(again) == _shape(_read(data))
    reused = sum(1 for a, b in zip(again.dataset, first.dataset, strict=True) if a is b)
    changed = [a.tag for a, b in zip(again.dataset, first.dataset, strict=True) if a is not b]
    # the elements of the same bytes are the earlier header's own objects: only those that differ
    # were parsed again
    assert reused == len(first.dataset) - len(changed)
    assert set(changed) == {0x00080018, 0x00200013, 0x00200032, 0x00201041}
    assert again.layout is not None and again.layout.head != first.layout.head  # type: ignore[union-attr]


def _longer_uid(ds: Dataset) -> None:
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".12"


def _another_charset(ds: Dataset) -> None:
    ds.SpecificCharacterSet = "ISO_IR 192"  # the same length as the file's ISO_IR 100


def _lengths_traded(ds: Dataset) -> None:
    # the total is the same: one value grows by as much as the next one shrinks, so the offsets
    # of every later element stay and only the two spans differ
    ds.StudyTime, ds.SeriesTime = "072730.1", "1127"


def _sequence_item(ds: Dataset) -> None:
    item = Dataset()
    item.CodeValue = "ABCD"
    ds.ProcedureCodeSequence = [item]


def _smaller_pixels(ds: Dataset) -> None:
    ds.PixelData = ds.PixelData[:-2]


@pytest.mark.parametrize(
    "change",
    [_longer_uid, _another_charset, _lengths_traded, _sequence_item, _smaller_pixels],
    ids=["longer-uid", "another-charset", "lengths-traded", "sequence-added", "smaller-pixels"],
)
def test_a_file_of_another_layout_is_parsed_whole_and_reads_the_same(
    change: Callable[[Dataset], None],
) -> None:
    first = _read(_file())
    data = _file(change)
    assert _shape(_read(data, like=first)) == _shape(_read(data))


def test_a_changed_character_set_is_never_read_against_values_decoded_in_the_old_one() -> None:
    def latin1(ds: Dataset) -> None:
        ds.SpecificCharacterSet = "ISO_IR 100"

    first = _read(_file(latin1))
    again = _read(_file(_another_charset), like=first)
    assert not any(a is b for a, b in zip(again.dataset, first.dataset, strict=False))


def test_a_value_changed_within_a_sequence_is_the_sequence_parsed_again() -> None:
    def coded(value: str) -> Callable[[Dataset], None]:
        def change(ds: Dataset) -> None:
            item = Dataset()
            item.CodeValue = value
            ds.ProcedureCodeSequence = [item]

        return change

    first = _read(_file(coded("ABCD")))
    data = _file(coded("WXYZ"))
    again = _read(data, like=first)
    assert _shape(again) == _shape(_read(data))
    sequence = next(e for e in again.dataset if e.tag == 0x00081032)
    assert sequence.items is not None and sequence.items[0][0].value == b"WXYZ"


def test_a_header_read_from_a_prefix_is_read_against_too_and_reads_the_same() -> None:
    # Given a header read through a prefix of its file (an object store, a large local file)
    def prefix(data: bytes) -> Buffer:
        return Buffer(None, len(data), lambda start, end: data[start:end], initial=4096)

    first = read_raw_header(prefix(_file()))
    assert first.layout is not None
    data = _file(_next_slice)
    # When the next slice is read against it, through a prefix too
    again = read_raw_header(prefix(data), like=first)
    # Then it is what a whole parse gives, its repeated elements the earlier header's own
    assert _shape(again)[:-1] == _shape(read_raw_header(prefix(data)))[:-1]  # (bytes fetched aside)
    assert sum(a is b for a, b in zip(again.dataset, first.dataset, strict=True)) == len(first.dataset) - 4
