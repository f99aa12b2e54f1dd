"""The header reader: ranged reads up to Pixel Data, exact offsets, precise rejections."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomflow.dicom.header import (
    DicomFormatError,
    NotDicomError,
    TruncatedHeaderError,
    read_header,
    read_header_from_path,
    read_header_from_store,
)
from dicomflow.storage import LocalObjectStore

TESTDATA = sorted(f for f in get_testdata_files() if os.path.isfile(f))


def _recording_reader(data: bytes) -> tuple[list[tuple[int, int]], object]:
    calls: list[tuple[int, int]] = []

    def read_range(start: int, end: int) -> bytes:
        calls.append((start, end))
        return data[start:end]

    return calls, read_range


@pytest.mark.parametrize("path", TESTDATA, ids=lambda p: Path(p).name)
def test_every_pydicom_test_file_is_read_or_rejected_with_a_reason(path: str) -> None:
    # Given one of pydicom's bundled test files (valid, odd and broken ones)
    data = Path(path).read_bytes()
    # When its header is read from ranges
    try:
        header = read_header(lambda s, e: data[s:e], len(data))
    except DicomFormatError as exc:
        # Then a malformed file is rejected with a reason, never an unhandled exception
        assert str(exc)
        return
    # Then the Pixel Data offsets point at the very bytes pydicom reads as the value
    if header.pixel_data_value_offset is not None and header.pixel_data_length is not None:
        full = pydicom.dcmread(path, force=True)
        start = header.pixel_data_value_offset
        assert data[start : start + header.pixel_data_length] == full[header.pixel_data_tag].value
    if not header.deflated:
        assert header.header_end <= header.file_size
        assert (header.header_end == header.file_size) == (header.pixel_data_tag is None)


@pytest.mark.parametrize(
    ("syntax", "tag_bytes"),
    [
        (ExplicitVRLittleEndian, b"\xe0\x7f\x10\x00"),
        (ImplicitVRLittleEndian, b"\xe0\x7f\x10\x00"),
        (ExplicitVRBigEndian, b"\x7f\xe0\x00\x10"),
    ],
)
def test_a_large_file_is_parsed_from_a_small_prefix(tmp_path: Path, syntax: str, tag_bytes: bytes) -> None:
    # Given a 16 MiB image in each native transfer syntax
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows, ds.Columns = 2048, 4096
    ds.PixelData = np.arange(2048 * 4096, dtype=np.uint16).tobytes()
    ds.file_meta.TransferSyntaxUID = syntax
    out = tmp_path / "big.dcm"
    pydicom.dcmwrite(
        out,
        ds,
        little_endian=syntax != ExplicitVRBigEndian,
        implicit_vr=syntax == ImplicitVRLittleEndian,
        force_encoding=True,
    )
    data = out.read_bytes()
    calls, read_range = _recording_reader(data)
    # When its header is read
    header = read_header(read_range, len(data))  # type: ignore[arg-type]
    # Then only the first block was fetched, the pixel element starts at header_end, and the
    # declared length is the pixel payload
    assert sum(e - s for s, e in calls) <= 64 * 1024
    assert data[header.header_end : header.header_end + 4] == tag_bytes
    assert header.pixel_data_length == 2048 * 4096 * 2
    # (CT_small.dcm ends with Data Set Trailing Padding after Pixel Data: 126 bytes + its header)
    trailing = len(data) - header.pixel_data_value_offset - header.pixel_data_length
    assert trailing == 126 + (8 if syntax == ImplicitVRLittleEndian else 12)
    assert header.transfer_syntax == syntax
    assert header.dataset.PatientName == ds.PatientName
    assert "PixelData" not in header.dataset


def test_encapsulated_pixel_data_has_undefined_length() -> None:
    # Given a JPEG 2000 file
    header = read_header_from_path(get_testdata_file("MR_small_jp2klossless.dcm"))
    # Then the reader reports an undefined length and where the fragments start
    assert header.pixel_data_length is None
    assert header.pixel_data_value_offset == header.header_end + 12


def test_a_file_cut_inside_its_header_is_truncated() -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    header = read_header(lambda s, e: data[s:e], len(data))
    cut = data[: header.header_end - 7]
    with pytest.raises(TruncatedHeaderError):
        read_header(lambda s, e: cut[s:e], len(cut))


def test_a_file_cut_inside_its_pixels_is_truncated() -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()[:-300]
    with pytest.raises(TruncatedHeaderError):
        read_header(lambda s, e: data[s:e], len(data))


@pytest.mark.parametrize("data", [b"", b"hello world, not dicom" * 10, bytes(range(256)) * 3])
def test_non_dicom_bytes_are_rejected(data: bytes) -> None:
    with pytest.raises(DicomFormatError):
        read_header(lambda s, e: data[s:e], len(data))


def test_a_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(NotDicomError):
        read_header_from_path(tmp_path)


def test_store_and_path_agree(tmp_path: Path) -> None:
    # Given a file in a local object store
    src = get_testdata_file("JPEG2000.dcm")
    shutil.copy(src, tmp_path / "a.dcm")
    # When read through the store and through the path
    by_store = read_header_from_store(LocalObjectStore(tmp_path), "a.dcm")
    by_path = read_header_from_path(src)
    # Then both agree
    assert by_store.header_end == by_path.header_end
    assert by_store.dataset == by_path.dataset
    assert isinstance(by_store.file_meta, FileMetaDataset)


def test_deflated_file_is_inflated_and_flagged() -> None:
    header = read_header_from_path(get_testdata_file("image_dfl.dcm"))
    assert header.deflated
    assert header.header_end == header.file_size
    assert header.pixel_data_value_offset is None
    assert header.pixel_data_tag == 0x7FE00010
