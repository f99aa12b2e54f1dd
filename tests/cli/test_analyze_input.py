"""``dicomflow analyze``: only de-identified input (unless asked, and then loudly), and a file at
fault named by its path inside SCAN_DIR, never by a hash."""

from __future__ import annotations

import json

import pydicom
import pytest

from dicomflow.cli import main
from dicomflow.privacy import fingerprint
from tests.cli.conftest import Places


def test_an_identified_scan_is_refused_with_what_to_do(
    places: Places, capsys: pytest.CaptureFixture[str]
) -> None:
    out = places.tmp / "results"
    assert main(["analyze", str(places.scan), str(out), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "not de-identified" in err and "--allow-identified" in err and "dicomflow deid" in err
    assert not out.exists()


def test_allow_identified_analyses_it_and_warns_that_the_outputs_carry_the_identity(
    places: Places, capsys: pytest.CaptureFixture[str]
) -> None:
    out = places.tmp / "results"
    assert main(["analyze", str(places.scan), str(out), "--threads", "1", "--allow-identified"]) == 0
    captured = capsys.readouterr()
    assert "WARNING" in captured.err and "identity" in captured.err
    assert json.loads(captured.out)["tidal_volume_ml"] > 0
    # The warning is the truth: the SEG carries the patient's name
    planted = pydicom.dcmread(next(places.scan.rglob("*.dcm"))).PatientName
    assert pydicom.dcmread(out / "seg.dcm").PatientName == planted


def test_a_de_identified_scan_is_analysed_without_a_word_on_stderr(
    places: Places, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["analyze", str(places.deid), str(places.tmp / "results"), "--threads", "1"]) == 0
    assert capsys.readouterr().err == ""


def test_an_unreadable_scan_file_is_named_by_its_path_in_the_scan(
    places: Places, capsys: pytest.CaptureFixture[str]
) -> None:
    (places.deid / "phase_01" / "slice_0002.dcm").write_bytes(b"\0" * 300)
    assert main(["analyze", str(places.deid), str(places.tmp / "results"), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "phase_01/slice_0002.dcm" in err and "not readable DICOM" in err


def test_a_file_without_pixel_data_is_named(places: Places, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a de-identified slice whose Pixel Data was removed (its header still says YES)
    path = places.deid / "phase_00" / "slice_0001.dcm"
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    assert main(["analyze", str(places.deid), str(places.tmp / "results"), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "phase_00/slice_0001.dcm" in err and "Pixel Data" in err


def test_an_empty_scan_says_so_and_shows_no_hash_as_a_path(
    places: Places, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["analyze", str(places.empty), str(places.tmp / "results")]) == 2
    err = capsys.readouterr().err
    assert "no DICOM files in SCAN_DIR" in err and fingerprint("") not in err
