"""Validation of single files: pydicom's whole test corpus, and hand-made broken files."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dicomflow.storage import LocalObjectStore
from dicomflow.validation import FilePolicy, ValidationReport, validate_file, validate_object
from dicomflow.validation.file_rules import uid_problem

CT_SMALL = get_testdata_file("CT_small.dcm")


def ct(**changes: object) -> Dataset:
    """CT_small.dcm (a real CT slice), with ``changes`` applied to the dataset."""
    ds = pydicom.dcmread(CT_SMALL)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def errors(report: ValidationReport) -> set[str]:
    return {f.code for f in report.errors}


# -- pydicom's corpus ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(get_testdata_files()), ids=lambda p: Path(p).name)
def test_every_pydicom_test_file_gets_a_verdict_and_rejections_have_reasons(path: str) -> None:
    # Given any file of pydicom's test data (valid, odd, truncated, not DICOM at all)
    # When it is validated
    report = validate_file(path)
    # Then no exception escapes; a rejection carries at least one coded error with a message
    assert report.verdict.value in {"accepted", "rejected"}
    if not report.accepted:
        assert report.errors
        assert all(f.code.isupper() and f.message for f in report.errors)
    json.dumps(report.to_dict())  # the report is plain data


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("MR_truncated.dcm", "TRUNCATED"),
        ("rtplan_truncated.dcm", "TRUNCATED"),
        ("MR_small.dcm", "SOP_CLASS_NOT_ALLOWED"),
        ("rtstruct.dcm", "NO_PREAMBLE"),
        ("ExplVR_BigEndNoMeta.dcm", "FILE_META_MISSING"),
        ("meta_missing_tsyntax.dcm", "FILE_META_INCOMPLETE"),
        ("rtplan.dcm", "FILE_META_MISMATCH"),
        ("MR_small_padded.dcm", "PIXEL_LENGTH_MISMATCH"),  # 128 bytes more than Rows x Columns x 2
        ("693_J2KI.dcm", "UID_MISSING"),  # a CT image without Frame of Reference UID
        ("rtplan.dump", "NOT_DICOM"),
    ],
)
def test_known_defects_of_pydicom_test_files_are_named(name: str, code: str) -> None:
    assert code in errors(validate_file(get_testdata_file(name)))


def test_a_conformant_ct_slice_is_accepted_with_its_summary() -> None:
    report = validate_file(CT_SMALL, name="slice.dcm")
    assert report.accepted, report.to_dict()
    summary = report.details["summary"]
    assert (summary["rows"], summary["columns"], summary["pixel_spacing"]) == (128, 128, [0.661468, 0.661468])
    assert summary["positions"] == [-75.7]


def test_uncompressed_ycbcr_422_pixel_length_accounts_for_chroma_subsampling() -> None:
    # SC_ybr_full_422_uncompressed.dcm: 100 x 100 x 3 samples, stored as 2 bytes per pixel
    report = validate_file(get_testdata_file("SC_ybr_full_422_uncompressed.dcm"))
    assert "PIXEL_LENGTH_MISMATCH" not in report.codes


# -- hand-made broken files ------------------------------------------------------------------------


def test_a_truncated_file_is_rejected_as_truncated(tmp_path: Path) -> None:
    data = Path(CT_SMALL).read_bytes()
    for cut in (len(data) // 2, 1000):  # inside the pixel data, inside the header
        path = tmp_path / f"cut_{cut}.dcm"
        path.write_bytes(data[:cut])
        assert errors(validate_file(path)) == {"TRUNCATED"}, cut


@pytest.mark.filterwarnings("ignore:.*VR UI:UserWarning")
@pytest.mark.parametrize(
    ("uid", "why"),
    [("1.2.840.01.5", "leading zero"), ("1.2.abc.4", "digits and dots"), ("1." * 33 + "1", "over the limit")],
)
def test_an_invalid_uid_is_rejected(tmp_path: Path, uid: str, why: str) -> None:
    ds = ct(StudyInstanceUID=uid)
    report = validate_file(write(ds, tmp_path / "bad_uid.dcm"))
    assert errors(report) == {"UID_INVALID"}
    (finding,) = report.errors
    assert finding.element == "StudyInstanceUID (0020,000D)"
    assert why in finding.message
    assert uid not in json.dumps(report.to_dict())


def test_a_missing_required_uid_is_rejected(tmp_path: Path) -> None:
    ds = ct()
    del ds.SeriesInstanceUID
    assert errors(validate_file(write(ds, tmp_path / "a.dcm"))) == {"UID_MISSING"}


def test_pixel_data_length_that_disagrees_with_the_image_pixel_module_is_rejected(tmp_path: Path) -> None:
    ds = ct(Rows=100)  # 100 x 128 x 2 bytes expected, 128 x 128 x 2 present
    report = validate_file(write(ds, tmp_path / "rows.dcm"))
    assert errors(report) == {"PIXEL_LENGTH_MISMATCH"}
    assert "25600" in report.errors[0].message


def test_an_odd_length_image_padded_to_even_length_is_accepted(tmp_path: Path) -> None:
    ds = ct(Rows=3, Columns=3, BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0)
    ds.PixelData = bytes(9) + b"\x00"  # 9 bytes of pixels, padded to 10
    assert validate_file(write(ds, tmp_path / "odd.dcm")).accepted


def test_a_dataset_without_preamble_and_file_meta_is_rejected(tmp_path: Path) -> None:
    ds = ct()
    path = tmp_path / "raw.dcm"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.preamble = None
    pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=True)
    assert {"NO_PREAMBLE", "FILE_META_MISSING"} <= errors(validate_file(path))


def test_file_meta_that_disagrees_with_the_dataset_is_rejected(tmp_path: Path) -> None:
    ds = ct()
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = tmp_path / "meta.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=False)  # as is: the writer would otherwise fix it
    report = validate_file(path)
    assert errors(report) == {"FILE_META_MISMATCH"}
    assert report.errors[0].element == "MediaStorageSOPInstanceUID (0002,0003)"


def test_an_unknown_transfer_syntax_is_rejected(tmp_path: Path) -> None:
    path = write(ct(), tmp_path / "ts.dcm")
    data = path.read_bytes()
    # Same length as the Explicit VR Little Endian UID it replaces, so the file meta stays consistent.
    path.write_bytes(data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.99999.1.2.1\x00", 1))
    assert "TRANSFER_SYNTAX_UNKNOWN" in errors(validate_file(path))


def test_sop_classes_outside_the_policy_are_rejected_and_the_policy_is_configurable(tmp_path: Path) -> None:
    ds = ct(SOPClassUID=SecondaryCaptureImageStorage)
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    path = write(ds, tmp_path / "sc.dcm")
    assert errors(validate_file(path)) == {"SOP_CLASS_NOT_ALLOWED"}
    assert validate_file(path, policy=FilePolicy().with_allowed([SecondaryCaptureImageStorage])).accepted


def test_size_and_sha256_are_checked_against_the_manifest(tmp_path: Path) -> None:
    path = write(ct(), tmp_path / "a.dcm")
    good = validate_file(path, expected_size=path.stat().st_size, expected_sha256=sha256(path))
    assert good.accepted and good.details["sha256"] == sha256(path)
    bad = validate_file(path, expected_size=path.stat().st_size + 1, expected_sha256="0" * 64)
    assert errors(bad) == {"SIZE_MISMATCH", "SHA256_MISMATCH"}


def test_a_file_over_the_size_limit_is_rejected(tmp_path: Path) -> None:
    path = write(ct(), tmp_path / "a.dcm")
    assert errors(validate_file(path, policy=FilePolicy(max_file_size=1024))) == {"FILE_TOO_LARGE"}


@pytest.mark.parametrize(
    "content", [b"", b"\x00" * 10, b"hello, not a DICOM file" * 100, bytes(range(256)) * 64]
)
def test_garbage_is_rejected_as_not_dicom(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.dcm"
    path.write_bytes(content)
    report = validate_file(path)
    assert not report.accepted
    assert errors(report) & {"NOT_DICOM", "TRUNCATED", "HEADER_MALFORMED"}


def test_a_directory_or_a_missing_path_is_rejected_not_raised(tmp_path: Path) -> None:
    assert errors(validate_file(tmp_path)) == {"NOT_DICOM"}
    assert errors(validate_file(tmp_path / "absent.dcm")) == {"UNREADABLE"}


@pytest.mark.filterwarnings("ignore:.*VR UI:UserWarning")
def test_patient_values_never_appear_in_a_report(tmp_path: Path) -> None:
    ds = ct(PatientID="PLANTED-ID-4711", PatientName="Planted^Patient", StudyInstanceUID="1.2.3.04")
    report = validate_file(write(ds, tmp_path / "a.dcm"), salt="s")
    text = json.dumps(report.to_dict())
    assert "PLANTED-ID-4711" not in text and "Planted" not in text
    assert report.details["summary"]["patient"]  # a digest stands in for the identity


def test_validation_reads_the_header_not_the_pixels(tmp_path: Path) -> None:
    # Given a 2 MB CT slice in an object store that counts the bytes it serves
    ds = ct(Rows=1024, Columns=1024)
    ds.PixelData = bytes(1024 * 1024 * 2)
    write(ds, tmp_path / "big.dcm")

    class CountingStore(LocalObjectStore):
        served = 0

        def get_range(self, key: str, start: int, end: int) -> bytes:
            data = super().get_range(key, start, end)
            CountingStore.served += len(data)
            return data

    store = CountingStore(tmp_path)
    # When it is validated without a SHA-256 to check
    report = validate_object(store, "big.dcm")
    # Then it is accepted having fetched a small fraction of the object
    assert report.accepted, report.to_dict()
    assert CountingStore.served < 256 * 1024 < store.size("big.dcm")


def test_an_object_store_key_that_does_not_exist_is_reported_missing(tmp_path: Path) -> None:
    assert errors(validate_object(LocalObjectStore(tmp_path), "nope.dcm")) == {"FILE_MISSING"}


def test_the_sha256_of_an_object_is_streamed_from_the_store(tmp_path: Path) -> None:
    shutil.copy(CT_SMALL, tmp_path / "ct.dcm")
    store = LocalObjectStore(tmp_path)
    report = validate_object(store, "ct.dcm", expected_sha256=sha256(tmp_path / "ct.dcm"))
    assert report.accepted and report.details["sha256"] == sha256(tmp_path / "ct.dcm")


@pytest.mark.parametrize(
    ("uid", "valid"),
    [
        ("1.2.840.10008.1.2.1", True),
        ("0.0", True),
        ("1.2.840.", False),
        (".1", False),
        ("1.2.00", False),
        ("1.2 ", False),
        ("1" * 64, True),
        ("1" * 65, False),
    ],
)
def test_uid_syntax(uid: str, valid: bool) -> None:
    assert (uid_problem(uid) is None) is valid


def test_explicit_little_endian_is_what_the_tests_write() -> None:
    # Guard for the byte patch in test_an_unknown_transfer_syntax_is_rejected
    assert ct().file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


_CT_BYTES = Path(CT_SMALL).read_bytes()
_HEADER_END = _CT_BYTES.index(b"\xe0\x7f\x10\x00")  # where Pixel Data starts in CT_small.dcm


@settings(max_examples=80, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, _HEADER_END - 1), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, len(_CT_BYTES))),
)
def test_corrupted_headers_are_rejected_or_accepted_but_never_raise(
    edits: list[tuple[int, int]], cut: int | None
) -> None:
    # Given CT_small.dcm with random bytes of its header overwritten, and perhaps cut short
    data = bytearray(_CT_BYTES)
    for offset, value in edits:
        data[offset] = value
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.dcm"
        path.write_bytes(bytes(data[:cut]))
        # When it is validated, Then a report comes back (no exception), and it is plain data
        report = validate_file(path, expected_sha256="0" * 64)
    json.dumps(report.to_dict())
    assert not report.accepted  # the SHA-256 alone rejects it; the point is that nothing raised
