"""The cyclic garbage collector is held off while a header is rewritten, and always given back."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from dicomflow.deid import Deidentifier, LocalKey, Verdict, deidentify_file, stream
from dicomflow.dicom.errors import DicomFormatError

KEY = LocalKey(b"test-key-0123456789abcdef")


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_the_collector_is_off_during_the_rewrite_and_on_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collector_on: None
) -> None:
    # Given the byte-level engine watched while it rewrites a header
    seen: list[bool] = []
    real = stream.prepare_raw

    def watched(*args: object, **kwargs: object) -> object:
        seen.append(gc.isenabled())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(stream, "prepare_raw", watched)
    # When a file is de-identified
    report = deidentify_file(get_testdata_file("CT_small.dcm"), tmp_path / "out.dcm", Deidentifier(KEY))
    # Then the collector was off during the rewrite, and is on again
    assert report.verdict is Verdict.PASSED
    assert seen == [False]
    assert gc.isenabled()


def test_the_collector_comes_back_after_a_refused_file(tmp_path: Path, collector_on: None) -> None:
    # Given a file that is not DICOM at all (both engines refuse it, by raising)
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom file" * 100)
    with pytest.raises(DicomFormatError):
        stream.prepare(lambda a, b: bad.read_bytes()[a:b], bad.stat().st_size, Deidentifier(KEY))
    # Then the collector is on again
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off(tmp_path: Path) -> None:
    was = gc.isenabled()
    gc.disable()
    try:
        deidentify_file(get_testdata_file("CT_small.dcm"), tmp_path / "out.dcm", Deidentifier(KEY))
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()


def test_threads_give_the_collector_back_only_when_the_last_is_done(collector_on: None) -> None:
    # Given two threads inside the pause at once, the first leaving while the second is still in
    inside, leave_first, first_left = threading.Event(), threading.Event(), threading.Event()
    states: dict[str, bool] = {}

    def first() -> None:
        with stream._collector_paused():
            inside.set()
            leave_first.wait(10)
        first_left.set()

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(10)
    with stream._collector_paused():
        leave_first.set()
        first_left.wait(10)
        states["second still in"] = gc.isenabled()
    thread.join(10)
    # Then the collector stayed off until the second left, and is on after both
    assert states == {"second still in": False}
    assert gc.isenabled()
