"""Validation of scans as a whole: single-frame series and enhanced multi-frame files."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedCTImageStorage, generate_uid

from dicomflow.manifest import DeviceSettings, ScanManifest, ScanType, files_from_directory
from dicomflow.validation import FileSummary, ValidationReport, validate_file, validate_scan
from dicomflow.validation.scan_rules import check_scan, summarize

SIZE = 16  # pixels a side: the rules read headers, so images stay tiny
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def ct_slice(
    *,
    z: float,
    series: str,
    study: str,
    frame_of_reference: str,
    patient: str = "PAT-1",
    orientation: list[float] = AXIAL,
    spacing: float = 0.7,
    position: list[float] | None = None,
) -> Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
    ds.PatientID = patient
    ds.Rows = ds.Columns = SIZE
    ds.PixelData = bytes(SIZE * SIZE * 2)
    ds.ImageOrientationPatient = orientation
    ds.ImagePositionPatient = position if position is not None else [-100.0, -100.0, z]
    ds.PixelSpacing = [spacing, spacing]
    return ds


def write_series(
    root: Path,
    *,
    phases: int = 2,
    slices: int = 8,
    step: float = 2.5,
    edit: Callable[[int, int, Dataset], Dataset | None] = lambda p, s, ds: ds,
) -> Path:
    """A 4D-CT: one series per phase, one file per slice; ``edit`` may change or drop (None) a slice."""
    study, frame_of_reference = generate_uid(), generate_uid()
    for phase in range(phases):
        series = generate_uid()
        folder = root / f"phase_{phase:02d}"
        folder.mkdir(parents=True)
        for index in range(slices):
            ds = ct_slice(z=index * step, series=series, study=study, frame_of_reference=frame_of_reference)
            edited = edit(phase, index, ds)
            if edited is not None:
                edited.save_as(folder / f"slice_{index:04d}.dcm", enforce_file_format=True)
    return root


def reports_of(root: Path, salt: str = "scan-salt") -> list[ValidationReport]:
    return [
        validate_file(p, name=p.relative_to(root).as_posix(), salt=salt) for p in sorted(root.rglob("*.dcm"))
    ]


def scan_codes(root: Path, **kwargs: object) -> set[str]:
    return {f.code for f in validate_scan(reports_of(root), **kwargs).errors}  # type: ignore[arg-type]


def enhanced_ct(*, phases: int, slices: int, step: float = 2.5, duplicate: bool = False) -> Dataset:
    """An Enhanced CT Image with all phases in one file (temporal position per frame)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
        delattr(ds, keyword)
    ds.Rows = ds.Columns = SIZE
    frames = phases * slices
    ds.NumberOfFrames = frames
    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = AXIAL
    measures.PixelSpacing, measures.SliceThickness = [0.7, 0.7], step
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = (
        Sequence([orientation]),
        Sequence([measures]),
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for phase in range(phases):
        for index in range(slices):
            item, position, content = Dataset(), Dataset(), Dataset()
            z = (index - 1 if duplicate and phase == 0 and index == slices - 1 else index) * step
            position.ImagePositionPatient = [-100.0, -100.0, z]
            content.TemporalPositionIndex = phase + 1
            item.PlanePositionSequence, item.FrameContentSequence = Sequence([position]), Sequence([content])
            per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = bytes(SIZE * SIZE * 2 * frames)
    return ds


# -- single-frame series ---------------------------------------------------------------------------


def test_a_consistent_single_frame_4d_ct_is_accepted(tmp_path: Path) -> None:
    root = write_series(tmp_path, phases=3, slices=8)
    scan = validate_scan(
        reports_of(root),
        device_settings=DeviceSettings(
            phases=3, slices_per_phase=8, matrix=(SIZE, SIZE), voxel_size_mm=(0.7, 0.7, 2.5)
        ),
    )
    assert scan.accepted, scan.to_dict()
    assert (scan.details["phases"], scan.details["slices_per_phase"]) == (3, [8])


def test_a_removed_slice_is_found_as_a_gap_and_a_short_phase(tmp_path: Path) -> None:
    root = write_series(tmp_path, edit=lambda p, s, ds: None if (p, s) == (1, 4) else ds)
    assert scan_codes(root) == {"SLICE_SPACING_UNEVEN", "PHASE_SLICE_COUNT_INCONSISTENT"}


def test_a_removed_end_slice_leaves_a_short_phase(tmp_path: Path) -> None:
    root = write_series(tmp_path, edit=lambda p, s, ds: None if (p, s) == (0, 7) else ds)
    assert scan_codes(root, device_settings=DeviceSettings(slices_per_phase=8)) == {
        "PHASE_SLICE_COUNT_INCONSISTENT",
        "DEVICE_SETTINGS_MISMATCH",
    }


def test_a_duplicated_slice_position_is_rejected(tmp_path: Path) -> None:
    def duplicate(p: int, s: int, ds: Dataset) -> Dataset:
        if (p, s) == (0, 3):
            ds.ImagePositionPatient = [-100.0, -100.0, 2 * 2.5]
        return ds

    assert "SLICE_POSITION_DUPLICATE" in scan_codes(write_series(tmp_path, edit=duplicate))


def test_a_mixed_patient_is_rejected_without_naming_the_patient(tmp_path: Path) -> None:
    def intruder(p: int, s: int, ds: Dataset) -> Dataset:
        if (p, s) == (1, 2):
            ds.PatientID = "INTRUDER-0815"
        return ds

    root = write_series(tmp_path, edit=intruder)
    reports = reports_of(root)
    scan = validate_scan(reports)
    assert {f.code for f in scan.errors} == {"PATIENT_MIXED"}
    text = json.dumps([scan.to_dict(), *(r.to_dict() for r in reports)])
    assert "INTRUDER" not in text and "PAT-1" not in text


def test_a_mixed_study_is_rejected(tmp_path: Path) -> None:
    def other_study(p: int, s: int, ds: Dataset) -> Dataset:
        if p == 1:
            ds.StudyInstanceUID = "1.2.3.4.5"
        return ds

    assert scan_codes(write_series(tmp_path, edit=other_study)) == {"STUDY_MIXED"}


def test_a_phase_with_two_frames_of_reference_is_rejected(tmp_path: Path) -> None:
    def other_frame(p: int, s: int, ds: Dataset) -> Dataset:
        if (p, s) == (0, 5):
            ds.FrameOfReferenceUID = generate_uid()
        return ds

    assert scan_codes(write_series(tmp_path, edit=other_frame)) == {"FRAME_OF_REFERENCE_INCONSISTENT"}


def test_orientation_and_pixel_spacing_must_be_consistent(tmp_path: Path) -> None:
    def tilt(p: int, s: int, ds: Dataset) -> Dataset:
        if (p, s) == (1, 0):
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.9, 0.1]
            ds.PixelSpacing = [0.8, 0.8]
        return ds

    codes = scan_codes(write_series(tmp_path, edit=tilt))
    assert {"ORIENTATION_INCONSISTENT", "PIXEL_SPACING_INCONSISTENT"} <= codes


def test_an_oblique_series_is_measured_along_its_slice_normal(tmp_path: Path) -> None:
    # Given slices tilted 30 degrees about x, stepped 2 mm along their normal (positions in y and z)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    orientation = [1.0, 0.0, 0.0, 0.0, c, s]
    normal = (0.0, -s, c)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    reports = []
    for index in range(6):
        position = [0.0, 10 + 2.0 * index * normal[1], 2.0 * index * normal[2]]
        ds = ct_slice(
            z=0,
            series=series,
            study=study,
            frame_of_reference=frame,
            orientation=orientation,
            position=position,
        )
        path = tmp_path / f"{index}.dcm"
        ds.save_as(path, enforce_file_format=True)
        reports.append(validate_file(path))
    # Then the spacing is even and the device's 2 mm slice spacing matches
    scan = validate_scan(reports, device_settings=DeviceSettings(voxel_size_mm=(0.7, 0.7, 2.0)))
    assert scan.accepted, scan.to_dict()


def test_the_manifest_makes_missing_and_rejected_files_reject_the_scan(tmp_path: Path) -> None:
    root = write_series(tmp_path / "scan", phases=1, slices=4)
    manifest = ScanManifest(
        device_id="ct-01", scan_type=ScanType.INSPIRATION_HOLD, files=files_from_directory(root)
    )
    reports = reports_of(root)
    assert validate_scan(reports, manifest=manifest).accepted
    # the first slice gone: the rest is still evenly spaced, only the manifest knows
    assert {f.code for f in validate_scan(reports[1:], manifest=manifest).errors} == {"FILE_MISSING"}
    broken = ValidationReport(reports[0].subject, (), reports[0].details).with_findings(
        validate_file(tmp_path / "absent").findings
    )
    assert "FILES_REJECTED" in {
        f.code for f in validate_scan([broken, *reports[1:]], manifest=manifest).errors
    }


def test_summaries_survive_json_as_a_map_step_would_pass_them(tmp_path: Path) -> None:
    root = write_series(tmp_path, edit=lambda p, s, ds: None if (p, s) == (1, 4) else ds)
    reports = reports_of(root)
    through_json = [ValidationReport.from_dict(json.loads(json.dumps(r.to_dict()))) for r in reports]
    bare = [FileSummary.from_dict(r.details["summary"]) for r in through_json]
    assert validate_scan(through_json).codes == validate_scan(reports).codes == validate_scan(bare).codes


# -- enhanced multi-frame --------------------------------------------------------------------------


def test_an_enhanced_multiframe_4d_ct_in_one_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "enhanced.dcm"
    enhanced_ct(phases=3, slices=6).save_as(path, enforce_file_format=True)
    report = validate_file(path)
    assert report.accepted, report.to_dict()
    scan = validate_scan([report], device_settings=DeviceSettings(phases=3, slices_per_phase=6))
    assert scan.accepted, scan.to_dict()
    assert (scan.details["phases"], scan.details["slices_per_phase"]) == (3, [6])


def test_a_duplicated_frame_position_in_a_multiframe_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "enhanced.dcm"
    enhanced_ct(phases=2, slices=6, duplicate=True).save_as(path, enforce_file_format=True)
    assert "SLICE_POSITION_DUPLICATE" in {f.code for f in validate_scan([validate_file(path)]).errors}


def test_a_multiframe_summary_stays_small_enough_for_a_workflow_payload() -> None:
    # A 2000-frame header (no pixels needed: summaries come from the header alone)
    summary, findings = summarize(enhanced_ct(phases=10, slices=200), "big.dcm", salt="s")
    assert findings == []
    assert len(summary.positions) == 2000
    assert len(json.dumps(summary.to_dict())) < 64 * 1024  # Step Functions allows 256 KiB in all


@pytest.mark.parametrize("broken", ["PlanePositionSequence", "SharedFunctionalGroupsSequence"])
def test_a_multiframe_file_without_geometry_is_rejected_not_raised(tmp_path: Path, broken: str) -> None:
    ds = enhanced_ct(phases=1, slices=4)
    if broken == "PlanePositionSequence":
        del ds.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence
    else:
        del ds.SharedFunctionalGroupsSequence
    path = tmp_path / "e.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert "GEOMETRY_MISSING" in {f.code for f in validate_file(path).errors}


def test_an_empty_scan_is_rejected() -> None:
    assert [f.code for f in check_scan([])] == ["SCAN_EMPTY"]
