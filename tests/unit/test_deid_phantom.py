"""De-identification of the phantom scan through the command line: nothing planted survives, every
Table E.1-1 attribute present is handled per its action, pixels identical."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomflow import phantom
from dicomflow.cli import main
from dicomflow.deid.options import DeidOptions
from dicomflow.deid.profile import ConfidentialityProfile, load_profile
from dicomflow.manifest import ScanManifest, sha256_file

#: Recorded by the de-identifier itself or replaced by pseudonyms.
RECORDING = {0x00100010, 0x00100020, 0x00120062, 0x00120063, 0x00120064, 0x00280303}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, dict]:
    root = tmp_path_factory.mktemp("phantom")
    src, dst = root / "scan", root / "deid"
    phantom.generate_phantom(src, phases=2, slices=8, size=64, seed=3)
    key = root / "key"
    key.write_text("11" * 32)
    status = main(
        [
            "deid",
            str(src),
            str(dst),
            "--key-file",
            str(key),
            "--report",
            str(root / "r.json"),
            "--workers",
            "2",
        ]
    )
    report = json.loads((root / "r.json").read_text())
    truth = json.loads((src / "ground_truth.json").read_text())
    # The folder is a scan (it has a manifest): exactly the listed files are de-identified, every one
    # passes, the ground truth sidecar (which holds the very identity) is never copied, and DEST gets
    # the de-identified scan's manifest with the new files' sizes and SHA-256.
    listed = ScanManifest.load(src / "manifest.json")
    assert sorted(Path(f["source"]).relative_to(src).as_posix() for f in report["files"]) == sorted(
        f.name for f in listed.files
    )
    assert status == 0, report["counts"]
    assert [p.name for p in dst.rglob("*.json")] == ["manifest.json"]
    out = ScanManifest.load(dst / "manifest.json")
    assert [f.name for f in out.files] == [f.name for f in listed.files]
    assert all(f.sha256 == sha256_file(dst / f.name) for f in out.files)
    return src, dst, report, truth


def _dicoms(folder: Path) -> Iterator[Path]:
    yield from sorted(folder.rglob("*.dcm"))


def test_every_phantom_file_passes_with_identical_pixels(run: tuple[Path, Path, dict, dict]) -> None:
    src, dst, report, _ = run
    assert report["counts"]["passed"] == len(list(_dicoms(src))) > 0
    for entry in report["files"]:
        if entry["verdict"] == "rejected":
            continue
        assert entry["leak_check"]["passed"]
        assert entry["pixels_identical"] is True
    for path in _dicoms(src):
        out = dst / path.relative_to(src)
        assert pydicom.dcmread(out).PixelData == pydicom.dcmread(path).PixelData


def test_no_planted_value_is_found_by_an_independent_byte_search(run: tuple[Path, Path, dict, dict]) -> None:
    _, dst, _, truth = run
    values = [str(v) for v in truth["identifying_values"].values()]
    uids: list[str] = []
    for value in truth["original_uids"].values():
        uids += [str(u) for u in value] if isinstance(value, list) else [str(value)]
    assert values and uids
    for path in _dicoms(dst):
        data = path.read_bytes().upper()
        for value in values:
            for needle in {value.upper(), value.upper().replace("^", " ")}:
                assert needle.encode("utf-8") not in data, (path.name, len(value))
        for uid in uids:
            assert uid.encode() not in data


def _check(original: Dataset, out: Dataset, profile: ConfidentialityProfile, seen: dict[str, int]) -> None:
    for elem in original:
        tag = int(elem.tag)
        if elem.tag.is_private or tag in RECORDING:
            continue
        action = profile.action(tag)
        if action is None:
            if elem.VR == "SQ" and tag in out:
                for a, b in zip(elem.value, out[tag].value, strict=True):
                    _check(a, b, profile, seen)
            continue
        seen[action] = seen.get(action, 0) + 1
        present = tag in out
        label = f"{elem.tag} {elem.keyword} {action}"
        if action == "X" or (elem.VR == "SQ" and action in ("X/Z", "X/D", "X/Z/D")):
            assert not present, label
        elif action in ("Z", "X/Z", "Z/D", "X/Z/D"):
            assert present and not out[tag].value, label
        elif action == "U" or (action == "X/Z/U*" and elem.VR == "UI"):
            assert present and out[tag].value != elem.value, label
        elif action == "K":
            if elem.VR == "SQ":
                for a, b in zip(elem.value, out[tag].value, strict=True):
                    _check(a, b, profile, seen)
            else:
                assert present and out[tag].value == elem.value, label
        elif (action == "C" and elem.VR in ("DA", "DT")) or (action == "D" and elem.VR != "SQ"):
            assert present and out[tag].value != elem.value, label


def test_every_table_attribute_present_is_handled_per_its_action(run: tuple[Path, Path, dict, dict]) -> None:
    src, dst, _, _ = run
    profile = load_profile(DeidOptions())
    seen: dict[str, int] = {}
    for path in _dicoms(src):
        _check(pydicom.dcmread(path), pydicom.dcmread(dst / path.relative_to(src)), profile, seen)
    assert seen  # the phantom carries Table E.1-1 attributes


def test_enhanced_multiframe_phantom_passes_clean(tmp_path: Path) -> None:
    # Given the phantom as one Enhanced CT file per phase (per-frame functional groups, dates in them)
    src, dst = tmp_path / "scan", tmp_path / "deid"
    phantom.generate_phantom(src, phases=2, slices=8, size=64, multiframe=True, seed=5)
    key = tmp_path / "key"
    key.write_text("22" * 32)
    main(
        [
            "deid",
            str(src),
            str(dst),
            "--key-file",
            str(key),
            "--report",
            str(tmp_path / "r.json"),
            "--workers",
            "1",
        ]
    )
    report = json.loads((tmp_path / "r.json").read_text())
    truth = json.loads((src / "ground_truth.json").read_text())
    # Then both files pass with identical pixels and none of the planted values is in their bytes
    passed = [f for f in report["files"] if f["verdict"] == "passed"]
    assert len(passed) == 2 and all(f["pixels_identical"] for f in passed)
    for path in _dicoms(dst):
        data = path.read_bytes().upper()
        for value in truth["identifying_values"].values():
            assert str(value).upper().replace("^", " ").encode() not in data
            assert str(value).upper().encode() not in data
