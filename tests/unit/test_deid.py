"""De-identification end to end on files: pydicom's test data, planted identities, options, syntaxes."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import blake3
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from dicomflow.deid import Deidentifier, DeidOptions, LocalKey, Verdict, deidentify_file
from dicomflow.deid.dates import shift_days
from dicomflow.deid.profile import load_profile, table

KEY = LocalKey(b"test-key-0123456789abcdef")
OTHER_KEY = LocalKey(b"another-key-0123456789abcdef")
TESTDATA = sorted(f for f in get_testdata_files() if os.path.isfile(f))
#: pydicom's DICOMDIRs name files by patient ID in Referenced File ID: a true leak, rightly failed.
DICOMDIR_LEAKS = {"DICOMDIR", "DICOMDIR-bigEnd", "DICOMDIR-implicit", "DICOMDIR-nooffset",
                  "DICOMDIR-nopatient", "DICOMDIR-reordered"}  # fmt: skip

PLANTED = {
    "name": "Quixote^Alonso^Quijano",
    "pid": "MRN-88412093",
    "other_pid": "ALT-5521-XZ",
    "birth": "19530417",
    "institution": "Saint Elsewhere Hospital",
    "physician": "Kildare^James",
    "address": "221B Baker Street London",
    "accession": "ACC99120034",
    "study_id": "STUDY-7781",
    "station": "CTSCANNER-NORTH",
    "operator": "Nightingale^Florence",
    "comment": "patient Quixote anxious",
    "private": "Rocinante Private Note",
    "overlay": "Dulcinea overlay label",
    "ae": "SRCAE_ELSEWHERE",
}


def planted_ct(
    path: Path,
    *,
    syntax: str = ExplicitVRLittleEndian,
    values: dict[str, str] | None = None,
    study_uid: str | None = None,
    referenced_uid: str | None = None,
    trailing: bool = True,
    rows: int = 32,
) -> Dataset:
    """A small CT slice carrying identifying values almost everywhere they can hide."""
    v = {**PLANTED, **(values or {})}
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientName = v["name"]
    ds.PatientID = v["pid"]
    ds.OtherPatientIDs = v["other_pid"]
    ds.PatientBirthDate = v["birth"]
    ds.PatientSex = "F"
    ds.PatientAge = "071Y"
    ds.PatientAddress = v["address"]
    ds.InstitutionName = v["institution"]
    ds.ReferringPhysicianName = v["physician"]
    ds.OperatorsName = v["operator"]
    ds.AccessionNumber = v["accession"]
    ds.StudyID = v["study_id"]
    ds.StationName = v["station"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240315"
    ds.StudyTime = "101530"
    ds.AcquisitionDateTime = "20240315101530.250000"
    ds.SeriesDescription = f"CT chest inspiration for {v['name'].split('^')[0]}"
    ds.ImageComments = v["comment"]
    ds.Manufacturer = "ACME Medical"
    ds.DeviceSerialNumber = "SN-000123"
    ds.BurnedInAnnotation = "NO"
    # nested: a request with identifying values inside a sequence inside a sequence
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "123", "99LOCAL", "Chest"
    request = Dataset()
    request.RequestedProcedureID = v["accession"]
    request.RequestingPhysician = v["physician"]
    request.RequestedProcedureCodeSequence = Sequence([code])
    ds.RequestAttributesSequence = Sequence([request])
    if referenced_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = CTImageStorage
        ref.ReferencedSOPInstanceUID = referenced_uid
        ds.ReferencedImageSequence = Sequence([ref])
    # repeating groups: overlay comments (60xx,4000) and a curve (50xx)
    ds.add_new(0x60004000, "LT", v["overlay"])
    ds.add_new(0x50000030, "SH", v["overlay"][:16])
    # private: an unknown creator block with a name in it
    block = ds.private_block(0x0011, "ACME PRIVATE", create=True)
    block.add_new(0x01, "LO", v["private"])
    # an unlisted public text element carrying the name (Image Comments is listed; this is not)
    ds.add_new(0x00181030, "LO", f"protocol {v['name']}")  # ProtocolName (Clean Descriptors: C)
    ds.Rows = ds.Columns = rows
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = (np.arange(rows * rows, dtype=np.uint16) % 4096).tobytes()
    if trailing:
        ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 64)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.SourceApplicationEntityTitle = v["ae"]
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    pydicom.dcmwrite(
        path,
        ds,
        implicit_vr=syntax == ImplicitVRLittleEndian,
        little_endian=syntax != ExplicitVRBigEndian,
        force_encoding=True,
    )
    return ds


def _raw_contains(data: bytes, value: str) -> bool:
    """An independent search: the value, its ^-separated parts, any case, in the bytes."""
    haystack = data.upper()
    needles = {value.upper(), value.upper().replace("^", " ")}
    needles |= {p.upper() for p in value.split("^") if len(p) >= 4}
    return any(n.encode("latin-1") in haystack for n in needles)


def _pixels(path: str | Path) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
    return ds.PixelData if "PixelData" in ds else b""


@pytest.fixture(scope="module")
def deid() -> Deidentifier:
    return Deidentifier(KEY)


@pytest.mark.parametrize("path", TESTDATA, ids=lambda p: Path(p).name)
def test_every_pydicom_test_file_is_handled(path: str, tmp_path: Path, deid: Deidentifier) -> None:
    # Given any of pydicom's test files
    out, held = tmp_path / "out.dcm", tmp_path / "held.dcm"
    # When it is de-identified (warnings: pydicom's about the odd files themselves)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = deidentify_file(path, out, deid, held_dst=held)
    # Then it gets a verdict with reasons; readable ones come out as valid DICOM with identical pixels
    assert report.verdict in set(Verdict)
    if report.verdict in (Verdict.REJECTED, Verdict.FAILED):
        assert report.reasons
        assert not out.exists()
        if report.verdict is Verdict.FAILED:
            assert Path(path).name in DICOMDIR_LEAKS, report.reasons
        return
    written = out if report.verdict is Verdict.PASSED else held
    assert Path(report.destination or "") == written
    assert not (out.exists() and report.verdict is Verdict.HELD)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = pydicom.dcmread(written)
    assert result.PatientIdentityRemoved == "YES"
    if "SOPInstanceUID" in result:
        assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID
    assert _pixels(written) == _pixels(path)
    if report.pixel_bytes:
        assert report.pixels_identical is True
        assert report.pixel_hash_before == report.pixel_hash_after


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_no_planted_value_survives_in_any_native_syntax(
    tmp_path: Path, deid: Deidentifier, syntax: str
) -> None:
    # Given a CT slice with identifying values in the header, sequences, private and repeating groups,
    # the file meta and after Pixel Data
    src = tmp_path / "in.dcm"
    original = planted_ct(src, syntax=syntax)
    # When it is de-identified
    report = deidentify_file(src, tmp_path / "out.dcm", deid)
    # Then it passed, and an independent byte search finds none of the planted values
    assert report.verdict is Verdict.PASSED, report.reasons
    data = (tmp_path / "out.dcm").read_bytes()
    for name, value in PLANTED.items():
        if name != "station":  # Station Name is device identity: kept by Retain Device Identity
            assert not _raw_contains(data, value), name
    for uid in (original.SOPInstanceUID, original.StudyInstanceUID, original.SeriesInstanceUID):
        assert uid.encode() not in data
    # and the transfer syntax and the pixels are the original's, byte for byte
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.file_meta.TransferSyntaxUID == syntax
    assert out.PixelData == original.PixelData
    assert report.pixels_identical
    # and what the lung analysis needs is kept
    assert (out.PatientSex, out.PatientAge, out.Modality, out.Manufacturer) == (
        "F",
        "071Y",
        "CT",
        "ACME Medical",
    )
    assert out.DeviceSerialNumber == "SN-000123"  # Retain Device Identity
    assert out.StudyTime == "101530"
    assert "ACME PRIVATE" not in data.decode("latin-1")
    assert 0xFFFCFFFC not in out
    assert report.trailing == "Data Set Trailing Padding dropped"


def test_what_was_done_is_recorded(tmp_path: Path, deid: Deidentifier) -> None:
    src = tmp_path / "in.dcm"
    planted_ct(src)
    deidentify_file(src, tmp_path / "out.dcm", deid)
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "2026c" in out.DeidentificationMethod
    codes = {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113105", "113107", "113108", "113109", "113111"}
    assert all(item.CodingSchemeDesignator == "DCM" for item in out.DeidentificationMethodCodeSequence)
    assert "SourceApplicationEntityTitle" not in out.file_meta


def test_a_scan_keeps_its_references_and_one_date_shift(tmp_path: Path, deid: Deidentifier) -> None:
    # Given two slices of one study, the second referencing the first
    study = generate_uid()
    first = planted_ct(tmp_path / "a.dcm", study_uid=study)
    planted_ct(tmp_path / "b.dcm", study_uid=study, referenced_uid=first.SOPInstanceUID)
    # When both are de-identified
    for name in ("a", "b"):
        assert (
            deidentify_file(tmp_path / f"{name}.dcm", tmp_path / f"{name}.out", deid).verdict
            is Verdict.PASSED
        )
    a, b = pydicom.dcmread(tmp_path / "a.out"), pydicom.dcmread(tmp_path / "b.out")
    # Then the study UID is the same new one, the reference points at the new SOP Instance UID
    assert a.StudyInstanceUID == b.StudyInstanceUID != study
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert b.ReferencedImageSequence[0].ReferencedSOPClassUID == CTImageStorage
    # And every UID is a valid 2.25 UID of at most 64 characters
    for uid in (a.SOPInstanceUID, a.StudyInstanceUID, a.SeriesInstanceUID, a.FrameOfReferenceUID):
        assert uid.startswith("2.25.") and len(uid) <= 64 and uid.is_valid
    # And dates moved back by the patient's keyed shift, in DA and DT alike, times kept
    days = shift_days(KEY, PLANTED["pid"].upper())
    assert a.StudyDate == b.StudyDate == (np.datetime64("2024-03-15") - days).astype(str).replace("-", "")
    assert a.AcquisitionDateTime[:8] == a.StudyDate and a.AcquisitionDateTime[8:] == "101530.250000"
    # And the pseudonym is the same for both and reveals nothing
    assert a.PatientID == b.PatientID and a.PatientName == b.PatientName
    assert "MRN" not in a.PatientID and "QUIXOTE" not in str(a.PatientName).upper()


def test_same_key_same_output_another_key_other_uids(tmp_path: Path) -> None:
    src = tmp_path / "in.dcm"
    planted_ct(src)
    deidentify_file(src, tmp_path / "1.dcm", Deidentifier(KEY))
    deidentify_file(src, tmp_path / "2.dcm", Deidentifier(LocalKey(bytes(KEY._secret))))
    deidentify_file(src, tmp_path / "3.dcm", Deidentifier(OTHER_KEY))
    assert (tmp_path / "1.dcm").read_bytes() == (tmp_path / "2.dcm").read_bytes()
    one, three = pydicom.dcmread(tmp_path / "1.dcm"), pydicom.dcmread(tmp_path / "3.dcm")
    assert one.SOPInstanceUID != three.SOPInstanceUID
    assert one.PatientID != three.PatientID


def test_basic_profile_without_options_removes_dates_and_device(tmp_path: Path) -> None:
    src = tmp_path / "in.dcm"
    planted_ct(src)
    deid = Deidentifier(KEY, DeidOptions.from_spec("basic"))
    report = deidentify_file(src, tmp_path / "out.dcm", deid)
    assert report.verdict is Verdict.PASSED, report.reasons
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.StudyDate == ""  # Z
    assert out.AcquisitionDateTime == ""  # X/Z/D: Z, kept present and empty
    assert out.DeviceSerialNumber == ""  # X/Z/D
    assert out.StationName == ""
    data = (tmp_path / "out.dcm").read_bytes()
    assert not any(_raw_contains(data, v) for v in PLANTED.values())
    assert "PatientSex" in out and out.PatientSex == ""
    assert "SeriesDescription" not in out
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence] == ["113100"]


def test_burned_in_annotation_is_held_not_passed(tmp_path: Path, deid: Deidentifier) -> None:
    src = tmp_path / "in.dcm"
    ds = planted_ct(src)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(src)
    report = deidentify_file(src, tmp_path / "out.dcm", deid, held_dst=tmp_path / "held" / "out.dcm")
    assert report.verdict is Verdict.HELD
    assert report.reasons == ["BurnedInAnnotation is YES"]
    assert not (tmp_path / "out.dcm").exists()
    held = (tmp_path / "held" / "out.dcm").read_bytes()
    assert not any(_raw_contains(held, v) for k, v in PLANTED.items() if k != "station")


def test_a_leak_fails_the_file_and_nothing_is_written(tmp_path: Path) -> None:
    # Given a profile that keeps an identifying value (Retain Device Identity keeps Station Name)
    # and a patient whose name is also the station's
    src = tmp_path / "in.dcm"
    planted_ct(src, values={"station": "QUIXOTE CT"})
    report = deidentify_file(src, tmp_path / "out.dcm", Deidentifier(KEY))
    # Then the leak check catches the name in Station Name, and nothing is written
    assert report.verdict is Verdict.FAILED
    assert "(0008,1010)" in report.leak_check["element_hits"]
    assert not (tmp_path / "out.dcm").exists()


def test_names_that_are_also_words_we_write_do_not_fail_the_file(tmp_path: Path, deid: Deidentifier) -> None:
    # Given a patient whose name components occur in the text the de-identifier records itself
    # ("Retain Longitudinal Temporal Information ... Option", "ANONYMIZED" dummies)
    src = tmp_path / "in.dcm"
    planted_ct(src, values={"name": "Long^Option", "operator": "Patient^Dates"})
    # When de-identified
    report = deidentify_file(src, tmp_path / "out.dcm", deid)
    # Then the leak check does not mistake our own words for the patient's, and finds nothing else
    assert report.verdict is Verdict.PASSED, report.reasons
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert "LONG" not in str(out.PatientName).upper() and out.OperatorsName == ""


def test_a_short_numeric_patient_id_is_matched_as_a_number(tmp_path: Path, deid: Deidentifier) -> None:
    # Given patient ID "1024", echoed in the protocol name, and a rescale intercept of -10245
    src = tmp_path / "in.dcm"
    ds = planted_ct(src, values={"pid": "1024"})
    ds.ProtocolName = "lung 1024 protocol"
    ds.RescaleIntercept = "-10245"
    ds.save_as(src)
    # When de-identified
    report = deidentify_file(src, tmp_path / "out.dcm", deid)
    # Then the ID is scrubbed where it stands alone, and the intercept is not taken for a leak
    assert report.verdict is Verdict.PASSED, report.reasons
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.ProtocolName == "LUNG PROTOCOL" and out.RescaleIntercept == -10245


def test_encapsulated_pixels_with_trailing_elements(tmp_path: Path, deid: Deidentifier) -> None:
    # Given a JPEG 2000 file followed by trailing padding and a private element with a name in it
    src = tmp_path / "in.dcm"
    data = Path(get_testdata_file("MR_small_jp2klossless.dcm")).read_bytes()
    tail = Dataset()
    tail.add_new(0xFFFCFFFC, "OB", b"\x00" * 16)
    block = tail.private_block(0xFFF1, "TRAILER", create=True)
    block.add_new(0x01, "LO", "Sancho Panza trailer")
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, tail)
    src.write_bytes(data + fp.getvalue())
    # When de-identified
    report = deidentify_file(src, tmp_path / "out.dcm", deid)
    # Then pixels are identical, the padding dropped and the private trailer removed, all reported
    assert report.verdict is Verdict.PASSED, report.reasons
    assert report.pixels_identical
    out = (tmp_path / "out.dcm").read_bytes()
    assert b"Sancho" not in out
    assert "Trailing Padding dropped" in (report.trailing or "")
    assert (
        pydicom.dcmread(tmp_path / "out.dcm").PixelData
        == pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm")).PixelData
    )


def test_every_table_attribute_is_handled_per_its_action(tmp_path: Path) -> None:
    # Given one data set holding every single-tag attribute of Table E.1-1 that has a dictionary VR
    from pydicom.datadict import dictionary_VR

    deid = Deidentifier(KEY, DeidOptions.from_spec("basic"))
    profile = load_profile(DeidOptions.from_spec("basic"))
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    planted: dict[int, str] = {}
    for row in table()["attributes"]:
        if "x" in row["tag"] or row["tag"].startswith(("0000", "0002")):
            continue  # repeating groups, file meta: tested apart; command elements: always removed
        tag = int(row["tag"], 16)
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            continue
        if vr == "SQ":
            item = Dataset()
            item.CodeMeaning = f"item of {tag:08X}"
            ds.add_new(tag, vr, Sequence([item]))
        elif vr == "UI":
            ds.add_new(tag, vr, generate_uid())
        elif vr in ("DA",):
            ds.add_new(tag, vr, "20200102")
        elif vr in ("DT",):
            ds.add_new(tag, vr, "20200102030405")
        elif vr in ("TM",):
            ds.add_new(tag, vr, "030405")
        elif vr in ("LO", "SH", "PN", "LT", "ST", "UT", "UC", "CS", "AE"):
            ds.add_new(tag, vr, f"V{tag:08X}"[:16])
        else:
            continue
        planted[tag] = vr
    # When de-identified under the Basic Profile
    out = deid.deidentify(ds, None).dataset
    # Then each attribute ends as its action says
    checked = 0
    for tag, vr in planted.items():
        action = profile.action(tag)
        present = tag in out
        if tag in (0x00100010, 0x00100020, 0x00080018, 0x00080016, 0x00120062, 0x00120063, 0x00120064):
            continue  # pseudonyms and the attributes recording the de-identification itself
        if action == "X" or (vr == "SQ" and action in ("X/Z", "X/D", "X/Z/D")):
            assert not present, f"{tag:08X} {action}"
        elif action in ("Z", "X/Z", "Z/D", "X/Z/D") and vr != "SQ":
            assert present and out[tag].value in ("", None), f"{tag:08X} {action}"
        elif action == "U" or (action == "X/Z/U*" and vr == "UI"):
            assert present and out[tag].value != ds[tag].value, f"{tag:08X} {action} {vr}"
            assert vr != "UI" or out[tag].value.startswith("2.25.")
        elif action in ("D", "X/D") and vr != "SQ":
            assert present and out[tag].value not in ("", None) and out[tag].value != ds[tag].value
        elif action == "K":
            assert present and out[tag].value == ds[tag].value
        checked += 1
    assert checked > 400


def test_command_and_group_length_elements_are_not_carried_over(deid: Deidentifier) -> None:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.add_new(0x00001001, "UI", generate_uid())  # Requested SOP Instance UID (U in Table E.1-1)
    ds.add_new(0x00080000, "UL", 1234)  # a group length that would be wrong after the rewrite
    out = deid.deidentify(ds, None)
    assert 0x00001001 not in out.dataset and 0x00080000 not in out.dataset
    assert out.actions["X_structural"] == 2


def test_safe_private_attributes_are_kept_with_their_creator(tmp_path: Path, deid: Deidentifier) -> None:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0C, "IS", "1000")  # B_value: safe
    block.add_new(0x10, "LO", "not safe")
    out = deid.deidentify(ds, None).dataset
    kept = out.private_block(0x0019, "SIEMENS MR HEADER")
    assert kept[0x0C].value == "1000"
    assert 0x0019_1010 not in out


def test_pixel_bytes_are_hashed_not_decoded(tmp_path: Path, deid: Deidentifier) -> None:
    src = tmp_path / "in.dcm"
    planted_ct(src, rows=256, trailing=False)
    report = deidentify_file(src, tmp_path / "out.dcm", deid)
    data = src.read_bytes()
    tag_at = data.rfind(b"\xe0\x7f\x10\x00")
    assert report.pixel_hash_before == blake3.blake3(data[tag_at:]).hexdigest()
    assert report.pixel_bytes == len(data) - tag_at
    assert report.header_bytes_read <= 64 * 1024
