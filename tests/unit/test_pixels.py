"""Pixel bytes are copied exactly and the BLAKE3 proof is made from the source and the written file."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from blake3 import blake3

from dicomflow.deid import pixels
from dicomflow.deid.pixels import (
    ALGORITHM,
    SMALL_RANGE,
    PixelProof,
    copy_pixels,
    hash_bytes,
    hash_object_range,
)
from dicomflow.errors import DeidentificationError
from dicomflow.storage import LocalObjectStore

MiB = 1024 * 1024
HEADER = b"DICM-new-header:" * 7 + b"odd"  # an odd length: the destination range is not page aligned
TRAILER = b"\xfc\xff\xfc\xff trailing elements"


@pytest.fixture(scope="module")
def noise() -> bytes:
    return random.Random(20261122).randbytes(40 * MiB + 12345)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def pixel_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dicomflow-pixels")]


def copy_into_new_file(src: Path, dst: Path, start: int, length: int, *, verify: bool = True) -> PixelProof:
    """Header, copy_pixels, trailer: how the de-identifier uses it."""
    src_fd = os.open(src, os.O_RDONLY)
    dst_fd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(dst_fd, HEADER)
        proof = copy_pixels(src_fd, start, length, dst_fd, verify=verify)
        assert os.lseek(dst_fd, 0, os.SEEK_CUR) == len(HEADER) + length
        os.write(dst_fd, TRAILER)
        return proof
    finally:
        os.close(src_fd)
        os.close(dst_fd)


@pytest.mark.parametrize(
    "size",
    [1, 4097, SMALL_RANGE - 1, SMALL_RANGE, 40 * MiB + 12345],
    ids=["1 B", "odd", "4 MiB - 1", "4 MiB", "40 MiB odd"],
)
def test_copy_is_exact_and_proved_identical_with_blake3(tmp_path, noise, size):
    # Given a source of random bytes of this size
    data = noise[:size]
    src = write(tmp_path / "src.bin", data)
    # When it is copied after a new header, with a trailer written after the copy
    proof = copy_into_new_file(src, tmp_path / "dst.bin", 0, size)
    # Then the destination is header + the exact bytes + trailer, and the proof says so in BLAKE3
    assert (tmp_path / "dst.bin").read_bytes() == HEADER + data + TRAILER
    expected = blake3(data).hexdigest()
    assert proof == PixelProof(ALGORITHM, expected, expected)
    assert proof.algorithm == "blake3"
    assert proof.identical is True
    assert pixel_threads() == []


def test_empty_range_copies_nothing_and_is_not_verified(tmp_path):
    src = write(tmp_path / "src.bin", b"only a header")
    proof = copy_into_new_file(src, tmp_path / "dst.bin", 5, 0)
    assert (tmp_path / "dst.bin").read_bytes() == HEADER + TRAILER
    assert proof == PixelProof(ALGORITHM, None, None)
    assert proof.identical is None


@pytest.mark.parametrize("length", [777_777, 9 * MiB + 3], ids=["small", "large"])
def test_range_at_an_unaligned_offset_of_the_source(tmp_path, noise, length):
    # Given pixels that start at an odd offset behind an original header, with bytes after them
    start = 1_234_567
    src = write(tmp_path / "src.bin", noise[: start + length + 1000])
    # When only that range is copied
    proof = copy_into_new_file(src, tmp_path / "dst.bin", start, length)
    # Then only that range arrives, and both digests are of exactly that range
    wanted = noise[start : start + length]
    assert (tmp_path / "dst.bin").read_bytes() == HEADER + wanted + TRAILER
    assert proof.before == proof.after == blake3(wanted).hexdigest()


def test_copy_only_mode_copies_without_hashing(tmp_path, noise):
    src = write(tmp_path / "src.bin", noise[: 9 * MiB])
    proof = copy_into_new_file(src, tmp_path / "dst.bin", 100, 9 * MiB - 100, verify=False)
    assert (tmp_path / "dst.bin").read_bytes() == HEADER + noise[100 : 9 * MiB] + TRAILER
    assert proof.identical is None and proof.before is None and proof.after is None


@pytest.mark.parametrize("fail_after", [0, 1], ids=["refused at once", "refused after one step"])
def test_plain_copy_takes_over_when_copy_file_range_is_refused(tmp_path, noise, monkeypatch, fail_after):
    # Given a kernel (or pair of file systems) that refuses copy_file_range, at once or midway
    real = os.copy_file_range
    calls = []

    def refusing(*args):
        calls.append(args)
        if len(calls) > fail_after:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real(*args)

    monkeypatch.setattr(os, "copy_file_range", refusing)
    data = noise[: 20 * MiB + 1]
    src = write(tmp_path / "src.bin", data)
    # When a large range is copied
    proof = copy_into_new_file(src, tmp_path / "dst.bin", 0, len(data))
    # Then pread/pwrite finish the job from where the kernel copy stopped
    assert calls, "the kernel copy was tried first"
    assert (tmp_path / "dst.bin").read_bytes() == HEADER + data + TRAILER
    assert proof.identical is True and proof.after == blake3(data).hexdigest()


def test_plain_copy_when_the_platform_has_no_copy_file_range(tmp_path, noise, monkeypatch):
    monkeypatch.delattr(os, "copy_file_range")
    data = noise[: 9 * MiB]
    proof = copy_into_new_file(write(tmp_path / "src.bin", data), tmp_path / "dst.bin", 0, len(data))
    assert (tmp_path / "dst.bin").read_bytes() == HEADER + data + TRAILER
    assert proof.identical is True


@pytest.mark.parametrize("size", [1000, 9 * MiB], ids=["small", "large"])
def test_after_is_read_back_from_the_destination(tmp_path, noise, monkeypatch, size):
    # Given a write path that corrupts one byte on its way to the destination
    real_cfr, real_pwrite = os.copy_file_range, os.pwrite

    def corrupt(fd, offset):
        byte = os.pread(fd, 1, offset)
        real_pwrite(fd, bytes([byte[0] ^ 0xFF]), offset)

    def corrupting_cfr(src, dst, count, offset_src, offset_dst):
        n = real_cfr(src, dst, count, offset_src, offset_dst)
        corrupt(dst, offset_dst + n // 2)
        return n

    def corrupting_pwrite(fd, data, offset):
        n = real_pwrite(fd, data, offset)
        corrupt(fd, offset)
        return n

    monkeypatch.setattr(os, "copy_file_range", corrupting_cfr)
    monkeypatch.setattr(os, "pwrite", corrupting_pwrite)
    data = noise[:size]
    # When the range is copied
    proof = copy_into_new_file(write(tmp_path / "src.bin", data), tmp_path / "dst.bin", 0, size)
    # Then "before" is the source's hash, "after" the corrupted file's: the proof catches it
    written = (tmp_path / "dst.bin").read_bytes()[len(HEADER) : len(HEADER) + size]
    assert written != data
    assert proof.before == blake3(data).hexdigest()
    assert proof.after == blake3(written).hexdigest()
    assert proof.identical is False


@pytest.mark.parametrize("length", [1000, 9 * MiB], ids=["small", "large"])
def test_range_past_the_end_of_the_source_raises(tmp_path, noise, length):
    src = write(tmp_path / "src.bin", noise[: length - 1])
    with pytest.raises(DeidentificationError, match="shrank"):
        copy_into_new_file(src, tmp_path / "dst.bin", 0, length)
    assert pixel_threads() == []


@pytest.mark.parametrize("kernel_copy", [True, False], ids=["copy_file_range", "pread/pwrite"])
def test_source_that_shrinks_midway_raises_and_leaves_no_thread(tmp_path, noise, monkeypatch, kernel_copy):
    # Given a source that another process cuts short once the copy has started
    data = noise[: 40 * MiB]
    src = write(tmp_path / "src.bin", data)
    real_cfr, real_pread = os.copy_file_range, os.pread
    calls = []

    def cut_after_first_step(step):
        calls.append(step)
        if len(calls) == 2:
            os.truncate(src, 10 * MiB)

    def cfr(*args):
        cut_after_first_step(args)
        return real_cfr(*args)

    def pread(fd, n, offset):  # only the copy reads with pread here (the hashes map windows)
        cut_after_first_step(offset)
        return real_pread(fd, n, offset)

    if kernel_copy:
        monkeypatch.setattr(os, "copy_file_range", cfr)
    else:
        monkeypatch.delattr(os, "copy_file_range")
        monkeypatch.setattr(os, "pread", pread)
    src_fd = os.open(src, os.O_RDONLY)
    dst_fd = os.open(tmp_path / "dst.bin", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # When it is copied, Then the copy fails with the de-identification error
        with pytest.raises(DeidentificationError, match="the source file shrank while being copied"):
            copy_pixels(src_fd, 0, len(data), dst_fd)
    finally:
        os.close(src_fd)
        os.close(dst_fd)
    # And the hashing threads are gone, not left waiting for bytes that never come
    assert len(calls) >= 2
    assert pixel_threads() == []


def test_a_hash_that_fails_stops_the_copy_and_its_error_is_raised(tmp_path, noise):
    # Given a destination opened write-only (the read-back hash cannot map it)
    data = noise[: 40 * MiB]
    src = write(tmp_path / "src.bin", data)
    src_fd = os.open(src, os.O_RDONLY)
    dst_fd = os.open(tmp_path / "dst.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        # When pixels are copied with verification, Then the mapping error comes out
        with pytest.raises(PermissionError):
            copy_pixels(src_fd, 0, len(data), dst_fd)
    finally:
        os.close(src_fd)
        os.close(dst_fd)
    # And the copy stopped early instead of running to the end, with no thread left behind
    assert (tmp_path / "dst.bin").stat().st_size < len(data)
    assert pixel_threads() == []


def test_hash_bytes_is_blake3_of_any_buffer(noise):
    assert hash_bytes(b"") == blake3(b"").hexdigest()
    assert hash_bytes(noise[:1000]) == blake3(noise[:1000]).hexdigest()
    assert hash_bytes(memoryview(noise)[5:]) == blake3(noise[5:]).hexdigest()  # multi-threaded size


@pytest.mark.parametrize(
    ("start", "end", "chunk"),
    [(0, 0, MiB), (10, 1000, MiB), (3, 5 * MiB + 7, MiB), (0, 40 * MiB + 12345, 8 * MiB)],
    ids=["empty", "one GET", "several GETs in flight", "whole object"],
)
def test_hash_object_range_matches_the_bytes(tmp_path, noise, start, end, chunk):
    store = LocalObjectStore(tmp_path / "store")
    store.put("scan/phase_00.dcm", noise)
    digest = hash_object_range(store, "scan/phase_00.dcm", start, end, chunk=chunk)
    assert digest == blake3(noise[start:end]).hexdigest()
    assert pixel_threads() == []


def test_hash_object_range_refuses_a_range_past_the_object(tmp_path, noise):
    store = LocalObjectStore(tmp_path / "store")
    store.put("a.dcm", noise[: 3 * MiB])
    with pytest.raises(DeidentificationError, match="ends before"):
        hash_object_range(store, "a.dcm", 0, 3 * MiB + 1, chunk=MiB)
    assert pixel_threads() == []


def test_module_imports_neither_pydicom_nor_boto3_nor_numpy():
    # The package's __init__ may import more; the module itself must stay light (Lambda cold starts).
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('pixels_alone', {pixels.__file__!r})\n"
        "module = sys.modules['pixels_alone'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(sorted(m for m in ('pydicom', 'boto3', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
