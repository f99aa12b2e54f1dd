"""``dicomflow validate SCAN_DIR``: a scan folder is validated with its own manifest, the files
beside the scan are not taken for DICOM, and an empty folder is no scan."""

from __future__ import annotations

import json

import pytest

from dicomflow.cli import main
from dicomflow.upload.journal import PARTS_NAME, STATE_NAME
from tests.cli.conftest import Places


def test_a_scan_folder_is_checked_against_its_manifest_and_its_sidecars_are_skipped(
    places: Places, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a phantom scan folder (manifest.json, ground_truth.json), after an upload (its journal)
    # and an earlier validation whose report was written into the folder
    (places.scan / STATE_NAME).write_text("{}")
    (places.scan / PARTS_NAME).write_text("")
    report = places.scan / "validation.json"
    report.write_text("{}")
    files = len(json.loads((places.scan / "manifest.json").read_text())["files"])
    # When the folder is validated without --manifest, its report again into the folder
    code = main(["validate", str(places.scan), "--report", str(report), "--force", "--jobs", "1"])
    # Then the scan is accepted as a scan (the manifest's sizes and hashes, the scan rules) and
    # only its DICOM files were validated
    out = json.loads(report.read_text())
    assert code == 0, out
    assert out["files_checked"] == files and out["files_rejected"] == 0
    assert out["scan"]["verdict"] == "accepted"
    assert "not_in_manifest" not in out


def test_the_manifest_found_is_the_one_used(places: Places, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a scan folder whose file no longer matches its manifest's SHA-256
    victim = places.scan / "phase_01" / "slice_0001.dcm"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    # Then validating the folder alone catches it
    assert main(["validate", str(places.scan), "--jobs", "1"]) == 1
    out = json.loads(capsys.readouterr().out)
    codes = {
        f["subject"]: [x["code"] for x in f["findings"]] for f in out["files"] if f["verdict"] == "rejected"
    }
    assert codes == {"phase_01/slice_0001.dcm": ["SHA256_MISMATCH"]}


@pytest.mark.parametrize("content", [[], ["ground_truth.json"], [STATE_NAME, PARTS_NAME]], ids=str)
def test_a_folder_without_dicom_files_is_an_empty_scan_and_an_error(
    places: Places, content: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    for name in content:
        (places.empty / name).write_text("{}")
    assert main(["validate", str(places.empty)]) == 2
    captured = capsys.readouterr()
    assert "the scan is empty" in captured.err and captured.out == ""
