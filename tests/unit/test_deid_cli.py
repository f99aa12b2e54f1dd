"""``dicomflow deid``: a tree in, a mirrored tree of passed files out, a JSON report, exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from dicomflow.cli import main
from tests.unit.test_deid import PLANTED, _raw_contains, planted_ct


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "scan"
    (src / "phase_00").mkdir(parents=True)
    (src / "phase_01").mkdir()
    planted_ct(src / "phase_00" / "slice_0001.dcm")
    planted_ct(src / "phase_01" / "slice_0001.dcm")
    burned = planted_ct(src / "phase_01" / "burned.dcm")
    burned.BurnedInAnnotation = "YES"
    burned.save_as(src / "phase_01" / "burned.dcm")
    (src / "notes.txt").write_text("not dicom")
    return src


def _deid_tree(tree: Path, tmp_path: Path) -> tuple[int, dict, Path]:
    """``dicomflow deid TREE OUT`` with a key file, a report and two workers: (status, report, OUT)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    key = tmp_path / "deid.key"
    key.write_text("ab" * 32)
    dest, report_path = tmp_path / "out", tmp_path / "report.json"
    status = main(
        ["deid", str(tree), str(dest), "--key-file", str(key), "--report", str(report_path), "--workers", "2"]
    )
    return status, json.loads(report_path.read_text()), dest


def test_a_tree_is_mirrored_with_only_passed_files(tree: Path, tmp_path: Path) -> None:
    # When the tree is de-identified with two workers
    status, report, dest = _deid_tree(tree, tmp_path)
    # Then the exit status says not everything passed, and the report says what happened to each file
    assert status == 1
    assert report["counts"] == {"passed": 2, "held": 1, "failed": 0, "rejected": 1}
    assert "2026c" in report["profile"] and report["key_id"].startswith("local:")
    by_name = {Path(f["source"]).name: f for f in report["files"]}
    assert by_name["notes.txt"]["reasons"][0].startswith("NotDicomError")
    assert by_name["burned.dcm"]["reasons"] == ["BurnedInAnnotation is YES"]
    # And only passed files are in DEST (mirrored), the held one in DEST_held
    written = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert written == ["phase_00/slice_0001.dcm", "phase_01/slice_0001.dcm"]
    assert (tmp_path / "out_held" / "phase_01" / "burned.dcm").exists()
    for path in dest.rglob("*.dcm"):
        data = path.read_bytes()
        assert not any(_raw_contains(data, v) for k, v in PLANTED.items() if k != "station")
        assert pydicom.dcmread(path).PatientIdentityRemoved == "YES"


def test_same_key_file_same_output_across_runs(tree: Path, tmp_path: Path) -> None:
    key = tmp_path / "deid.key"
    key.write_text("cd" * 32)
    for name in ("a", "b"):
        main(["deid", str(tree / "phase_00"), str(tmp_path / name), "--key-file", str(key), "--workers", "1"])
    assert (tmp_path / "a" / "slice_0001.dcm").read_bytes() == (
        tmp_path / "b" / "slice_0001.dcm"
    ).read_bytes()


def test_without_a_key_file_a_user_key_is_created_once_and_reused(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    src = tree / "phase_00" / "slice_0001.dcm"
    assert main(["deid", str(src), str(tmp_path / "one.dcm")]) == 0
    assert "created a new pseudonym key" in capsys.readouterr().err
    key_file = tmp_path / "home" / ".config" / "dicomflow" / "deid.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert main(["deid", str(src), str(tmp_path / "two.dcm")]) == 0
    assert "created" not in capsys.readouterr().err
    assert (tmp_path / "one.dcm").read_bytes() == (tmp_path / "two.dcm").read_bytes()


def test_an_unknown_option_is_refused(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "deid.key"
    key.write_text("ef" * 32)
    status = main(
        ["deid", str(tree), str(tmp_path / "out"), "--key-file", str(key), "--options", "retain-everything"]
    )
    assert status == 2
    assert "unknown de-identification option" in capsys.readouterr().err


def test_a_worker_killed_mid_file_fails_that_file_only_and_leaves_nothing_of_it(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal

    from dicomflow.cli import deid as deid_cli

    # Given a worker that is killed while writing one file (say, by the out-of-memory killer)
    real = deid_cli._one

    def dies_on_phase_00(job: tuple[str, str, str]) -> object:
        if "phase_00" in job[0]:
            Path(job[1]).parent.mkdir(parents=True, exist_ok=True)
            Path(job[1] + ".partial").write_bytes(b"half a file")
            os.kill(os.getpid(), signal.SIGKILL)
        return real(job)

    monkeypatch.setattr(deid_cli, "_one", dies_on_phase_00)
    # When the tree is de-identified with two workers
    status, report, dest = _deid_tree(tree, tmp_path)
    # Then the run finishes: that file FAILED with the reason, nothing of it in DEST, and the files
    # the killed worker had not reached are reported too (failed, or done by the other worker)
    assert status == 1
    by_name = {str(Path(f["source"]).relative_to(tree)): f for f in report["files"]}
    assert len(by_name) == 4
    killed = by_name["phase_00/slice_0001.dcm"]
    assert killed["verdict"] == "failed" and "killed by signal 9" in killed["reasons"][0]
    assert not list(dest.rglob("*.partial")) and not (dest / "phase_00" / "slice_0001.dcm").exists()
    assert by_name["notes.txt"]["verdict"] in ("rejected", "failed")


def test_spawned_workers_where_there_is_no_fork_write_what_forked_ones_write(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicomflow.cli import workers

    # Given the tree de-identified by forked workers (Linux)
    _, forked_report, forked = _deid_tree(tree, tmp_path / "forked")
    # When it is de-identified again by spawned workers (macOS, Windows), same key
    monkeypatch.setattr(workers, "FORK", False)
    status, report, spawned = _deid_tree(tree, tmp_path / "spawned")
    # Then the same files come out, byte for byte, with the same verdicts
    assert status == 1
    assert report["counts"] == forked_report["counts"]
    names = sorted(str(p.relative_to(forked)) for p in forked.rglob("*.dcm"))
    assert names == sorted(str(p.relative_to(spawned)) for p in spawned.rglob("*.dcm")) and names
    assert all((forked / n).read_bytes() == (spawned / n).read_bytes() for n in names)
