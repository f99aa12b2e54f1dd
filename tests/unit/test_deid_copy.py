"""The local copy of the pixels and their before/after BLAKE3 hashes, through ``deidentify_file``:
the in-memory path for small pixel ranges and the three-thread path (copy, source hash, destination
hash a window behind) for large ones (:mod:`dicomflow.deid.pixels` has the copy's own tests)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import blake3
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomflow.deid import Deidentifier, LocalKey, Verdict, deidentify_file, pixels, stream
from dicomflow.errors import DeidentificationError

KEY = LocalKey(b"test-key-0123456789abcdef")


def _pixel_value_hash(path: Path) -> str:
    return hashlib.sha256(pydicom.dcmread(path).PixelData).hexdigest()


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_bigendian.dcm", "693_J2KI.dcm", "SC_rgb_rle.dcm"])
def test_pixels_are_copied_and_hashed_from_source_and_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, threaded: bool
) -> None:
    # Given a file, and (threaded) a copy step and hash chunk far smaller than its pixels, so that the
    # destination's hash really follows the copy chunk by chunk
    src = Path(str(get_testdata_file(name)))
    if threaded:
        monkeypatch.setattr(pixels, "SMALL_RANGE", 1)
        monkeypatch.setattr(pixels, "WINDOW", 4096)
    # When it is de-identified
    report = deidentify_file(src, tmp_path / "out.dcm", Deidentifier(KEY), held_dst=tmp_path / "held.dcm")
    # Then both hashes are of the pixel element's bytes, identical, and the output's pixels are the source's
    assert report.verdict in (Verdict.PASSED, Verdict.HELD), report.reasons
    written = Path(str(report.destination))
    assert report.pixels_identical is True
    assert report.pixel_hash_algorithm == "blake3"
    assert report.pixel_hash_before == report.pixel_hash_after
    data = src.read_bytes()
    out = written.read_bytes()
    start = report.header_bytes_written
    assert blake3.blake3(out[start : start + report.pixel_bytes]).hexdigest() == report.pixel_hash_after
    assert out[start : start + report.pixel_bytes] in data
    assert _pixel_value_hash(written) == _pixel_value_hash(src)
    assert not list(tmp_path.glob("*.partial"))


def test_a_copy_that_fails_midway_stops_the_destination_hash_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the threaded path, and a copy that breaks after its first step
    monkeypatch.setattr(pixels, "SMALL_RANGE", 1)
    monkeypatch.setattr(pixels, "WINDOW", 4096)
    calls = {"n": 0}
    real = os.copy_file_range

    def flaky(src: int, dst: int, count: int, offset_src: int | None = None, *a: object) -> int:
        calls["n"] += 1
        if calls["n"] > 1:
            return 0  # the source "shrank"
        return real(src, dst, count, offset_src, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(pixels.os, "copy_file_range", flaky)
    out = tmp_path / "out.dcm"
    # When it is de-identified, the file fails with the reason (no hang waiting for bytes never
    # written, and the error does not stop a run over a tree)
    report = deidentify_file(get_testdata_file("CT_small.dcm"), out, Deidentifier(KEY))
    assert report.verdict is Verdict.FAILED
    assert report.reasons == ["DeidentificationError: the source file shrank while being copied"]
    # Then nothing is left at the destination, not even the partial file
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def _large_ct(tmp_path: Path) -> Path:
    """A CT file whose pixels (8 MiB) are over the small-range limit: the early source hash runs."""
    from tests.unit.test_deid import planted_ct

    path = tmp_path / "large.dcm"
    ds = planted_ct(path, rows=16, trailing=False)
    ds.Rows = ds.Columns = 2048
    ds.PixelData = os.urandom(2048 * 2048 * 2)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_large_file_is_hashed_while_its_header_is_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a file with 8 MiB of pixels, and a count of the early source hashes
    src = _large_ct(tmp_path)
    calls: list[tuple[int, int]] = []
    real = stream.hash_file_range

    def counting(fd: int, start: int, length: int, stop: threading.Event | None = None) -> str:
        calls.append((start, length))
        return real(fd, start, length, stop)

    monkeypatch.setattr(stream, "hash_file_range", counting)
    # When it is de-identified
    report = deidentify_file(src, tmp_path / "out.dcm", Deidentifier(KEY))
    # Then the source's pixels were hashed once, early, over exactly the copied range, and the proof holds
    assert report.verdict is Verdict.PASSED, report.reasons
    assert report.engine == "raw"
    assert len(calls) == 1 and calls[0][1] == report.pixel_bytes
    data = src.read_bytes()
    start = calls[0][0]
    assert report.pixel_hash_before == blake3.blake3(data[start : start + report.pixel_bytes]).hexdigest()
    assert report.pixel_hash_before == report.pixel_hash_after


def test_an_early_hash_still_running_when_its_file_fails_is_stopped_before_the_file_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a large file whose early source hash is slow (it runs until told to stop), and a copy that fails
    src = _large_ct(tmp_path)
    seen: list[bool] = []

    def slow(fd: int, start: int, length: int, stop: threading.Event | None = None) -> str:
        assert stop is not None
        seen.append(stop.wait(timeout=30))
        os.fstat(fd)  # the file is still open while the hash runs
        raise DeidentificationError("the pixel hash was stopped: its file is done with")

    def failing_copy(*args: object, **kwargs: object) -> None:
        raise DeidentificationError("the source file shrank while being copied")

    monkeypatch.setattr(stream, "hash_file_range", slow)
    monkeypatch.setattr(stream, "copy_pixels", failing_copy)
    # When it is de-identified
    started = time.monotonic()
    report = deidentify_file(src, tmp_path / "out.dcm", Deidentifier(KEY))
    # Then the file fails with the copy's reason, at once (the hash was stopped, not waited for to
    # its end), and no hashing thread outlives the call
    assert report.verdict is Verdict.REJECTED or report.verdict is Verdict.FAILED
    assert "shrank" in " ".join(report.reasons)
    assert seen == [True] and time.monotonic() - started < 20
    assert not [t for t in threading.enumerate() if t.name.startswith("dicomflow-early-hash")]
    assert not (tmp_path / "out.dcm").exists() and not list(tmp_path.glob("*.partial"))


def test_a_source_that_changed_after_its_early_hash_fails_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an early hash that does not match what is then copied (the source changed in between)
    src = _large_ct(tmp_path)
    monkeypatch.setattr(stream, "hash_file_range", lambda fd, start, length, stop=None: "0" * 64)
    # When it is de-identified
    out = tmp_path / "out.dcm"
    report = deidentify_file(src, out, Deidentifier(KEY))
    # Then the copy is not trusted: FAILED, nothing at the destination
    assert report.verdict is Verdict.FAILED
    assert report.reasons == ["pixel data differs after copying"]
    assert report.pixels_identical is False
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
