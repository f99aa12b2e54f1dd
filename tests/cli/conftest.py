"""Inputs for the command-line tests: a tiny phantom scan (identified, as a device writes it), its
de-identified twin, a key file, an empty folder, a non-DICOM file. Built once per session; each
test gets its own copies (the commands under test may write, or wrongly write, into them)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from dicomflow.cli import main
from dicomflow.phantom import generate_phantom

KEY_HEX = "5a" * 32


@pytest.fixture(scope="session")
def _originals(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli-originals")
    scan = root / "scan"
    generate_phantom(scan, phases=2, slices=4, size=32, seed=3, workers=1)
    key = root / "key"
    key.write_text(KEY_HEX)
    deid = root / "deid"
    assert main(["deid", str(scan), str(deid), "--key-file", str(key), "--workers", "1"]) == 0
    return scan, deid


@dataclass(frozen=True)
class Places:
    """Paths a bad-input case may name (``{name}`` in its argv)."""

    tmp: Path
    scan: Path  # a phantom scan folder with manifest.json and ground_truth.json (identified)
    deid: Path  # the same scan de-identified (with its manifest)
    key: Path  # a key file
    empty: Path  # an empty folder
    notdicom: Path  # a text file
    file: Path  # an existing file (not DICOM)
    dir: Path  # a folder holding a file

    def format(self, text: str) -> str:
        return text.format(**{k: str(v) for k, v in vars(self).items()})


@pytest.fixture()
def places(tmp_path: Path, _originals: tuple[Path, Path]) -> Places:
    scan, deid = _originals
    shutil.copytree(scan, tmp_path / "scan")
    shutil.copytree(deid, tmp_path / "deid")
    (tmp_path / "key").write_text(KEY_HEX)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not DICOM, just notes\n")
    (tmp_path / "existing.json").write_text("{}\n")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "earlier.dcm").write_bytes(b"from an earlier run")
    return Places(
        tmp=tmp_path,
        scan=tmp_path / "scan",
        deid=tmp_path / "deid",
        key=tmp_path / "key",
        empty=tmp_path / "empty",
        notdicom=tmp_path / "notes.txt",
        file=tmp_path / "existing.json",
        dir=tmp_path / "used",
    )
