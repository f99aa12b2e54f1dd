"""``dicomflow validate``: files, folders, a manifest, the JSON report and the exit status."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from dicomflow.cli import main
from dicomflow.manifest import ScanManifest, ScanType, files_from_directory
from tests.unit.test_validation_scan import write_series


def scan_with_manifest(root: Path) -> Path:
    write_series(root, phases=2, slices=6)
    manifest = ScanManifest(device_id="ct-01", scan_type=ScanType.FOUR_D_CT, files=files_from_directory(root))
    (root / "manifest.json").write_text(manifest.to_json())
    (root / "ground_truth.json").write_text("{}")  # a known sidecar: never validated nor reported
    (root / "notes.txt").write_text("not DICOM")  # a file the manifest does not declare
    return root / "manifest.json"


def _validate_scan(manifest: Path, report_path: Path) -> tuple[int, dict]:
    """``dicomflow validate`` of a scan folder with its manifest and two workers: (status, report)."""
    code = main(
        [
            "validate",
            str(manifest.parent),
            "--manifest",
            str(manifest),
            "--report",
            str(report_path),
            "--jobs",
            "2",
        ]
    )
    return code, json.loads(report_path.read_text())


def test_a_good_scan_with_its_manifest_exits_0_with_a_json_report(tmp_path: Path) -> None:
    manifest = scan_with_manifest(tmp_path / "scan")
    code, report = _validate_scan(manifest, tmp_path / "out" / "validation.json")
    assert code == 0, report
    assert (report["verdict"], report["files_checked"], report["scan"]["verdict"]) == (
        "accepted",
        12,
        "accepted",
    )
    assert report["not_in_manifest"] == ["notes.txt"]
    assert [f["code"] for f in report["scan"]["findings"]] == ["FILE_UNDECLARED"]  # a warning


def test_a_changed_file_fails_the_sha256_and_the_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = scan_with_manifest(tmp_path / "scan")
    victim = tmp_path / "scan" / "phase_01" / "slice_0003.dcm"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF  # one pixel byte: the header is intact, only the digest can tell
    victim.write_bytes(bytes(data))
    code = main(["validate", str(manifest.parent), "--manifest", str(manifest)])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    rejected = [f for f in report["files"] if f["verdict"] == "rejected"]
    assert [(f["subject"], [x["code"] for x in f["findings"]]) for f in rejected] == [
        ("phase_01/slice_0003.dcm", ["SHA256_MISMATCH"])
    ]
    assert "FILES_REJECTED" in [f["code"] for f in report["scan"]["findings"]]


def test_a_removed_file_rejects_the_scan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = scan_with_manifest(tmp_path / "scan")
    (tmp_path / "scan" / "phase_00" / "slice_0002.dcm").unlink()
    assert main(["validate", str(manifest.parent), "--manifest", str(manifest), "--jobs", "1"]) == 1
    codes = {f["code"] for f in json.loads(capsys.readouterr().out)["scan"]["findings"]}
    assert {"FILE_MISSING", "SLICE_SPACING_UNEVEN", "PHASE_SLICE_COUNT_INCONSISTENT"} <= codes


def test_files_and_folders_without_a_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")
    assert main(["validate", str(tmp_path / "ct.dcm"), "--scan"]) == 0
    (tmp_path / "notes.txt").write_text("not DICOM")
    capsys.readouterr()
    assert main(["validate", str(tmp_path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {f["subject"]: f["verdict"] for f in report["files"]} == {
        "ct.dcm": "accepted",
        "notes.txt": "rejected",
    }
    assert report["scan"] is None


def test_a_path_that_does_not_exist_is_an_error_exit(tmp_path: Path) -> None:
    assert main(["validate", str(tmp_path / "nope")]) == 2


def test_spawned_workers_where_there_is_no_fork_give_the_same_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicomflow.cli import workers

    # Given a scan validated by forked workers (Linux) and again by spawned ones (macOS, Windows)
    manifest = scan_with_manifest(tmp_path / "scan")
    reports = []
    for fork in (True, False):
        monkeypatch.setattr(workers, "FORK", fork)
        reports.append(_validate_scan(manifest, tmp_path / f"report-{fork}.json"))
    # Then both accept it, file by file alike
    (forked_code, forked), (spawned_code, spawned) = reports
    assert forked_code == spawned_code == 0
    assert forked["files"] == spawned["files"] and len(spawned["files"]) == 12
