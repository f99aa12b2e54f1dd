"""Nothing lost, nothing mixed: the commands never write over their input, over an existing file
or into another run's folder unless asked (``--force``), and a key is written whole or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dicomflow.cli import main
from dicomflow.deid.keys import LocalKey
from tests.cli.conftest import Places


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "dest",
    ["{scan}", "{scan}/out", "{scan}/phase_00/out", "{tmp}/link", "{tmp}/link/out"],
    ids=["same", "inside", "deeper", "symlink-to-src", "inside-through-symlink"],
)
def test_deid_never_writes_into_its_source(
    places: Places, dest: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a scan, and a symlink to it
    (places.tmp / "link").symlink_to(places.scan)
    before = _tree(places.scan)
    # When it is de-identified into itself (or a folder inside it), however spelled
    code = main(["deid", str(places.scan), places.format(dest), "--key-file", str(places.key)])
    # Then it is refused in one line and the originals are as they were, nothing added
    assert code == 2
    assert "SRC" in capsys.readouterr().err
    assert _tree(places.scan) == before


def test_deid_into_a_folder_holding_src_is_refused_even_with_force(
    places: Places, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree(places.scan)
    code = main(
        ["deid", str(places.scan / "phase_00"), str(places.scan), "--key-file", str(places.key), "--force"]
    )
    assert code == 2 and "contains SRC" in capsys.readouterr().err
    assert _tree(places.scan) == before


def test_deid_into_a_used_dest_refuses_and_force_makes_it_one_scan(
    places: Places, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a DEST holding another run's file
    args = ["deid", str(places.scan), str(places.dir), "--key-file", str(places.key), "--workers", "1"]
    # When de-identifying into it: refused, and the earlier file is untouched
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert (places.dir / "earlier.dcm").read_bytes() == b"from an earlier run"
    # When asked with --force: DEST holds this scan only (its manifest's files and the manifest)
    assert main([*args, "--force"]) == 0
    manifest = json.loads((places.dir / "manifest.json").read_text())
    assert sorted(_tree(places.dir)) == sorted([f["name"] for f in manifest["files"]] + ["manifest.json"])


def test_deid_file_and_report_are_not_written_over_without_force(
    places: Places, capsys: pytest.CaptureFixture[str]
) -> None:
    src = places.scan / "phase_00" / "slice_0000.dcm"
    out, report = places.tmp / "one.dcm", places.tmp / "report.json"
    out.write_bytes(b"keep me")
    report.write_text("keep me too")
    args = ["deid", str(src), str(out), "--key-file", str(places.key), "--report", str(report)]
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out.read_bytes(), report.read_text()) == (b"keep me", "keep me too")
    assert main([*args, "--force"]) == 0
    assert out.read_bytes()[128:132] == b"DICM" and json.loads(report.read_text())["counts"]["passed"] == 1


def test_validate_report_is_not_written_over_without_force(
    places: Places, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["validate", str(places.scan), "--report", str(places.file)]
    assert main(args) == 2
    assert places.file.read_text() == "{}\n"
    assert main([*args, "--force"]) == 0
    assert json.loads(places.file.read_text())["verdict"] == "accepted"
    assert not [p for p in places.tmp.iterdir() if ".tmp-" in p.name]  # written whole, then renamed


def test_phantom_into_a_used_folder_refuses_and_force_leaves_no_stale_phase(
    places: Places, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a 2-phase phantom folder
    assert (places.scan / "phase_01").is_dir()
    small = ["phantom", str(places.scan), "--phases", "1", "--slices", "2", "--size", "16"]
    # When a 1-phase phantom is written there: refused; with --force, only the new scan is there
    assert main(small) == 2
    assert "not empty" in capsys.readouterr().err
    assert main([*small, "--force"]) == 0
    assert sorted(p.name for p in places.scan.iterdir()) == ["ground_truth.json", "manifest.json", "phase_00"]


def test_phantom_with_a_bad_seed_fails_while_parsing_and_leaves_no_folder(
    places: Places, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["phantom", str(places.tmp / "new"), "--seed", "-5"]) == 2
    err = capsys.readouterr().err
    assert "--seed" in err and len(err.strip().splitlines()) == 1
    assert not (places.tmp / "new").exists()


def test_analyze_does_not_write_over_earlier_outputs(
    places: Places, capsys: pytest.CaptureFixture[str]
) -> None:
    out = places.tmp / "results"
    out.mkdir()
    (out / "results.json").write_text("earlier")
    assert main(["analyze", str(places.deid), str(out), "--threads", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "results.json").read_text() == "earlier"
    assert main(["analyze", str(places.deid), str(out), "--threads", "1", "--force"]) == 0
    assert json.loads((out / "results.json").read_text())["tidal_volume_ml"] > 0


def test_a_generated_key_is_0600_and_never_replaces_an_existing_one(tmp_path: Path) -> None:
    # Given a new key file
    path = tmp_path / "deid.key"
    key = LocalKey.generate_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert LocalKey.from_file(path).key_id == key.key_id
    # When another key is generated at the same path
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        LocalKey.generate_file(path)
    # Then the first key is intact, and no temporary file is left beside it
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["deid.key"]


def test_a_key_file_in_a_missing_folder_is_refused_and_nothing_is_made(
    places: Places, capsys: pytest.CaptureFixture[str]
) -> None:
    key = places.tmp / "typo" / "deid.key"
    assert main(["deid", str(places.scan), str(places.tmp / "out"), "--key-file", str(key)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not key.parent.exists() and not (places.tmp / "out").exists()


def test_a_key_that_cannot_be_written_whole_leaves_no_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a disk that fills up while the new key is written
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fh: object) -> None:
            self.fh = fh

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()  # type: ignore[attr-defined]

        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))
    path = tmp_path / "deid.key"
    # When a key is generated, it fails; and no truncated key is left that a later run would read
    with pytest.raises(Exception, match="No space left"):
        LocalKey.generate_file(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []
