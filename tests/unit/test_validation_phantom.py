"""The phantom scan passes validation in both layouts; a broken phantom is caught by the scan rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest

from dicomflow.cli import main
from dicomflow.manifest import ScanManifest
from dicomflow.phantom import generate_phantom
from dicomflow.validation import ValidationReport, validate_file, validate_scan

PHASES, SLICES, SIZE = 2, 8, 64


@pytest.fixture(scope="module", params=["single-frame", "multi-frame"])
def phantom(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp(request.param) / "scan"
    generate_phantom(root, phases=PHASES, slices=SLICES, size=SIZE, multiframe=request.param == "multi-frame")
    return root


@pytest.fixture
def scan(phantom: Path, tmp_path: Path) -> Path:
    """A private copy of the phantom, free to break."""
    return Path(shutil.copytree(phantom, tmp_path / "scan"))


def dicom_files(root: Path) -> list[Path]:
    manifest = ScanManifest.load(root / "manifest.json")
    return [root / f.name for f in manifest.files]


def reports(root: Path) -> list[ValidationReport]:
    return [validate_file(p, name=p.relative_to(root).as_posix(), salt="s") for p in dicom_files(root)]


def scan_errors(root: Path) -> set[str]:
    return {f.code for f in validate_scan(reports(root)).errors}


def test_the_phantom_is_accepted_with_its_manifest(scan: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # When the phantom is validated as the device would upload it (files + manifest)
    code = main(["validate", str(scan), "--manifest", str(scan / "manifest.json"), "--jobs", "2"])
    report = json.loads(capsys.readouterr().out)
    # Then every file and the scan are accepted, with the phantom's phases and slices
    assert code == 0, json.dumps(report, indent=1)[:3000]
    assert report["scan"]["phases"] == PHASES
    assert report["scan"]["slices_per_phase"] == [SLICES]


def test_a_removed_slice_rejects_the_scan(scan: Path) -> None:
    files = dicom_files(scan)
    if len(files) == PHASES:
        # multi-frame: take a middle frame out of phase 2's file (functional groups and pixels)
        ds = pydicom.dcmread(files[1])
        frame_bytes = len(ds.PixelData) // int(ds.NumberOfFrames)
        del ds.PerFrameFunctionalGroupsSequence[SLICES // 2]
        ds.NumberOfFrames = int(ds.NumberOfFrames) - 1
        ds.PixelData = ds.PixelData[: frame_bytes * int(ds.NumberOfFrames)]
        ds.save_as(files[1])
        expected = {"SLICE_SPACING_UNEVEN", "PHASE_SLICE_COUNT_INCONSISTENT"}
    else:
        sorted(p for p in files if "phase_01" in p.as_posix())[SLICES // 2].unlink()
        expected = {"FILE_MISSING", "SLICE_SPACING_UNEVEN", "PHASE_SLICE_COUNT_INCONSISTENT"}
    present = [validate_file(p, name=p.relative_to(scan).as_posix()) for p in files if p.exists()]
    result = validate_scan(present, manifest=ScanManifest.load(scan / "manifest.json"))
    assert expected <= {f.code for f in result.errors}


def test_a_duplicated_position_rejects_the_scan(scan: Path) -> None:
    files = dicom_files(scan)
    if len(files) == PHASES:
        ds = pydicom.dcmread(files[0])
        frames = ds.PerFrameFunctionalGroupsSequence
        frames[1].PlanePositionSequence[0].ImagePositionPatient = list(
            frames[2].PlanePositionSequence[0].ImagePositionPatient
        )
        ds.save_as(files[0])
    else:
        first, second = sorted(p for p in files if "phase_00" in p.as_posix())[:2]
        ds = pydicom.dcmread(second)
        ds.ImagePositionPatient = list(pydicom.dcmread(first, stop_before_pixels=True).ImagePositionPatient)
        ds.save_as(second)
    assert "SLICE_POSITION_DUPLICATE" in scan_errors(scan)


def test_a_mixed_patient_rejects_the_scan(scan: Path) -> None:
    victim = dicom_files(scan)[-1]
    ds = pydicom.dcmread(victim)
    ds.PatientID = "SOMEONE-ELSE-42"
    ds.save_as(victim)
    result = validate_scan(reports(scan))
    assert "PATIENT_MIXED" in {f.code for f in result.errors}
    assert "SOMEONE-ELSE-42" not in json.dumps(result.to_dict())
