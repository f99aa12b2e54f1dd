"""A folder without a manifest: ``deid``, ``validate``, ``analyze`` and the upload take the same files as the
scan's, every file but hidden ones (a Mac's ``.DS_Store``, the upload journal, a hidden folder) and
the sidecars at the top (``ground_truth.json``). ``deid`` took them all and rejected the journal
left by an upload as "not DICOM", failing the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicomflow.cli import main
from dicomflow.upload.device import scan_folder
from dicomflow.upload.journal import PARTS_NAME, STATE_NAME
from tests.cli.conftest import Places


@pytest.fixture()
def bare(places: Places) -> tuple[Path, list[str]]:
    """The phantom scan without its manifest, with the files a folder gathers beside a scan."""
    folder = places.scan
    (folder / "manifest.json").unlink()
    dicom = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.dcm"))
    (folder / STATE_NAME).write_text("{}")
    (folder / PARTS_NAME).write_text("")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "phase_00" / "._slice_0000.dcm").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (folder / ".thumbnails").mkdir()
    (folder / ".thumbnails" / "x.dcm").write_bytes(b"not the scan's")
    assert (folder / "ground_truth.json").is_file()
    return folder, dicom


def test_deid_of_a_folder_takes_only_the_scans_files(bare: tuple[Path, list[str]], places: Places) -> None:
    folder, dicom = bare
    out = places.tmp / "out"
    report = places.tmp / "report.json"
    code = main(
        ["deid", str(folder), str(out), "--key-file", str(places.key), "--report", str(report),
         "--workers", "1"]
    )  # fmt: skip
    files = json.loads(report.read_text())["files"]
    assert code == 0, [f for f in files if f["verdict"] != "passed"]
    assert len(files) == len(dicom)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == dicom


def test_validate_of_a_folder_takes_the_same_files(bare: tuple[Path, list[str]], places: Places) -> None:
    folder, dicom = bare
    report = places.tmp / "validation.json"
    code = main(["validate", str(folder), "--report", str(report), "--jobs", "1"])
    out = json.loads(report.read_text())
    assert code == 0, out
    assert out["files_checked"] == len(dicom)


def test_the_upload_takes_the_same_files(bare: tuple[Path, list[str]]) -> None:
    folder, dicom = bare
    assert [f.name for f in scan_folder(folder)] == dicom


def test_analyze_of_a_folder_takes_the_same_files(places: Places, capsys: pytest.CaptureFixture[str]) -> None:
    # Given the de-identified scan without its manifest, beside a Mac's and an upload's hidden files
    (places.deid / "manifest.json").unlink()
    (places.deid / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (places.deid / PARTS_NAME).write_text("")
    # Then it is analysed from its DICOM files alone
    assert main(["analyze", str(places.deid), str(places.tmp / "results"), "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["tidal_volume_ml"] > 0
