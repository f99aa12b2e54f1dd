"""Pixel Data moved byte for byte, and proved untouched: a BLAKE3 hash of the bytes before and after.

The de-identifier never decodes pixels: it copies the encoded Pixel Data element (and whatever
follows it in the source range) as bytes. :func:`copy_pixels` does that for local files and returns a
:class:`PixelProof`: the hash of the source range ("before") and the hash of the destination range
read back from the destination file ("after", never the buffer we meant to write). Equal digests
prove that the image reached the output unchanged.

Why BLAKE3: it is a cryptographic hash that runs at about 3.6 GB/s on one core here (SHA-256: 1.2
GB/s), so that two hashes of a 1 GB range cost less than the copy itself. The whole-file SHA-256 of
the manifest and of the S3 checksums is a different contract and is not affected.

How a range moves:

* Under :data:`SMALL_RANGE` (a CT slice is 0.5 MiB; a series has hundreds, so per-file overhead
  counts): one ``pread``, hashed in memory, one write; the written range is read back and compared
  byte for byte with the hashed bytes (equal bytes, equal digest; else it is hashed).
* Larger: ``os.copy_file_range`` (in the kernel, page cache to page cache) in steps of
  :data:`WINDOW`, while two threads hash the source and the destination, each a window behind the
  copy, through read-only ``mmap`` windows (no copy into Python, at most one window mapped per
  thread, so memory does not grow with the range). The copy and both hashes run at once on two
  cores (BLAKE3 and the copy release the GIL). For 1 GB here: copy 0.33 s of one core, each hash
  0.23 s, so about 0.45-0.5 s on two idle cores (1.3-1.45x ``cp``, which uses one); when other
  work holds a core it tends to the sum, about 0.8 s. ``scripts/probe_pixel_copy.py`` measures it.
  Where ``copy_file_range`` is missing or refused (``EXDEV``, ``ENOSYS``, some file systems), a
  ``pread``/``pwrite`` loop continues from where it stopped.

The source is hashed only where the copy has already read it, so a source that is shorter than the
range, or shrinks during the copy, ends in :class:`~dicomflow.errors.DeidentificationError` raised by
the copy, never in a read past the end of a mapping. (A file truncated by another process in the
moment between a window's copy and its hash would still fault: de-identifying a file that someone
else is rewriting is not supported.)

Standard library and ``blake3`` only: imported by Lambda cold starts and the CLI alike.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from blake3 import blake3

from dicomflow.errors import DeidentificationError, InvalidInputError

if TYPE_CHECKING:
    from concurrent.futures import Future

    from dicomflow.storage.base import ObjectStore

#: What the hashes take: anything with the buffer protocol that these call sites pass.
Buffer = bytes | bytearray | memoryview | mmap.mmap

#: The pixel hash's name, as reports record it.
ALGORITHM = "blake3"
#: Ranges shorter than this are read into memory once (at most this much); longer ones are copied in
#: the kernel and hashed through mmap windows in two threads.
SMALL_RANGE = 4 * 1024 * 1024
#: Copy step and mmap window: how far the copy runs ahead of the hashes, and what each hashing
#: thread maps at a time (counted in the process's resident memory while mapped).
WINDOW = 8 * 1024 * 1024
#: Buffer of the plain copy when ``copy_file_range`` is not available.
CHUNK = 1024 * 1024
#: Ranged GET size when hashing a range of an object store's object, and how many are in flight.
OBJECT_CHUNK = 8 * 1024 * 1024
OBJECT_WORKERS = 4
#: ``hash_bytes`` lets BLAKE3 use every core from this size on.
_PARALLEL_HASH_BYTES = 16 * 1024 * 1024
_SHRANK = "the source file shrank while being copied"
_THREAD_PREFIX = "dicomflow-pixels"


@dataclass(frozen=True)
class PixelProof:
    """The hashes of a pixel range before (source) and after (destination, read back) a copy.

    Examples
    --------
    >>> proof = PixelProof(ALGORITHM, hash_bytes(b"\\x00\\x01"), hash_bytes(b"\\x00\\x01"))
    >>> proof.identical
    True
    >>> PixelProof(ALGORITHM, None, None).identical is None
    True
    """

    algorithm: str
    #: Hex digest of the source range; None when not verified or the range is empty.
    before: str | None
    #: Hex digest of the destination range read back from the destination; None likewise.
    after: str | None

    @property
    def identical(self) -> bool | None:
        """Whether the two digests are equal; None when the copy was not verified."""
        if self.before is None or self.after is None:
            return None
        return self.before == self.after


_UNVERIFIED = PixelProof(ALGORITHM, None, None)


def hash_bytes(data: Buffer) -> str:
    """The BLAKE3 hex digest of ``data`` (bytes, bytearray, memoryview, mmap).

    Examples
    --------
    >>> hash_bytes(b"")
    'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262'
    """
    size = memoryview(data).nbytes
    threads = blake3.AUTO if size >= _PARALLEL_HASH_BYTES else 1
    return blake3(data, max_threads=threads).hexdigest()


def copy_pixels(
    src_fd: int,
    start: int,
    length: int,
    dst_fd: int,
    *,
    verify: bool = True,
    before: str | Callable[[], str] | None = None,
    source: Buffer | None = None,
) -> PixelProof:
    """Append bytes ``[start, start + length)`` of ``src_fd`` at ``dst_fd``'s current position.

    The caller has written the new header already and writes the trailing elements after: on
    return, ``dst_fd``'s position is just past the copied range. ``dst_fd`` must be open for
    reading as well as writing (``O_RDWR``, not ``O_APPEND``): "after" is read back from it.

    Parameters
    ----------
    src_fd, dst_fd
        Open file descriptors of regular files.
    start, length
        The byte range of the source to copy (the Pixel Data element and what follows it).
    verify
        Hash the source range and the written destination range (default). Off: copy only.
    before
        The source range's digest, taken already (:func:`hash_file_range`, while the caller was
        busy with the header), or a function that returns it once it is taken (called after the
        copy: the copy need not wait for the hash): only the destination is hashed here. A source
        that changed since shows as a mismatch.
    source
        The range's bytes, read already by the caller (a small file read whole in one call):
        used instead of reading the range again. Ignored for ranges of :data:`SMALL_RANGE` and more.

    Returns
    -------
    PixelProof
        ``before`` and ``after`` digests; both None when ``verify`` is off or ``length`` is 0.

    Raises
    ------
    DeidentificationError
        The source ends before ``start + length`` (it was shorter, or it shrank during the copy).
        Nothing is left running; what was written to ``dst_fd`` is the caller's to discard.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryFile() as src, tempfile.TemporaryFile("w+b") as dst:
    ...     _ = src.write(b"header" + bytes(range(256)))
    ...     src.flush()
    ...     _ = dst.write(b"new header")
    ...     dst.flush()
    ...     proof = copy_pixels(src.fileno(), 6, 256, dst.fileno())
    ...     _ = dst.seek(0)
    ...     (proof.algorithm, proof.identical, dst.read() == b"new header" + bytes(range(256)))
    ('blake3', True, True)
    """
    if start < 0 or length < 0:
        raise InvalidInputError(f"pixel range start {start}, length {length} is not valid")
    base = os.lseek(dst_fd, 0, os.SEEK_CUR)
    if length == 0:
        return _UNVERIFIED
    if os.fstat(src_fd).st_size < start + length:
        raise DeidentificationError(_SHRANK)
    if length < SMALL_RANGE:
        digest = before() if callable(before) else before
        proof = _copy_small(src_fd, start, length, dst_fd, base, verify, digest, source)
    elif verify:
        proof = _copy_verified(src_fd, start, length, dst_fd, base, before)
    else:
        _copy(src_fd, start, length, dst_fd, base, None)
        proof = _UNVERIFIED
    os.lseek(dst_fd, base + length, os.SEEK_SET)
    return proof


def hash_file_range(fd: int, start: int, length: int, stop: threading.Event | None = None) -> str:
    """The BLAKE3 hex digest of ``[start, start + length)`` of ``fd``, through read-only mmap windows
    of :data:`WINDOW` hashed on every core (the GIL is released: run it beside other work).

    The file's size is checked before each window is mapped, so a source truncated meanwhile ends
    in an error rather than a fault, except in the moment a window is being hashed (see above:
    de-identifying a file that another process is rewriting is not supported). Reading into a
    buffer instead avoids even that, but costs 0.2-0.3 s more per GB here, beside the header work.

    ``stop``: set it to end the hash early (between windows), with a DeidentificationError.

    Raises
    ------
    DeidentificationError
        The file ends before the range does, or ``stop`` was set.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryFile() as f:
    ...     _ = f.write(b"headerPIXELS")
    ...     f.flush()
    ...     hash_file_range(f.fileno(), 6, 6) == hash_bytes(b"PIXELS")
    True
    """
    hasher = blake3(max_threads=blake3.AUTO)
    pos = 0
    while pos < length:
        if stop is not None and stop.is_set():
            raise DeidentificationError("the pixel hash was stopped: its file is done with")
        end = min(length, pos + WINDOW)
        if os.fstat(fd).st_size < start + end:
            raise DeidentificationError(_SHRANK)
        _hash_mapped(fd, start + pos, end - pos, hasher)
        pos = end
    return hasher.hexdigest()


def hash_object_range(
    store: ObjectStore,
    key: str,
    start: int,
    end: int,
    *,
    chunk: int = OBJECT_CHUNK,
    workers: int = OBJECT_WORKERS,
) -> str:
    """The BLAKE3 hex digest of bytes ``[start, end)`` of an object, read with ranged GETs.

    Up to ``workers`` GETs of ``chunk`` bytes are in flight at once (S3 serves parallel ranges
    faster than one stream), hashed in order: memory is about ``chunk * (workers + 1)``.

    Raises
    ------
    DeidentificationError
        The object ends before ``end``.

    Examples
    --------
    >>> import tempfile
    >>> from dicomflow.storage import LocalObjectStore
    >>> store = LocalObjectStore(tempfile.mkdtemp())
    >>> store.put("a.dcm", b"headerPIXELS")
    >>> hash_object_range(store, "a.dcm", 6, 12) == hash_bytes(b"PIXELS")
    True
    """
    if start < 0 or end < start or chunk <= 0 or workers <= 0:
        raise InvalidInputError(f"byte range [{start}, {end}) is not valid")
    hasher = blake3()
    ranges = deque((pos, min(end, pos + chunk)) for pos in range(start, end, chunk))
    if len(ranges) <= 1:
        for a, b in ranges:
            hasher.update(_whole_range(store, key, a, b))
        return hasher.hexdigest()
    from concurrent.futures import ThreadPoolExecutor  # 8 ms to import: only for large ranges

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=_THREAD_PREFIX) as pool:
        pending: deque[tuple[int, int, Future[bytes]]] = deque()
        try:
            while ranges or pending:
                while ranges and len(pending) < workers:
                    a, b = ranges.popleft()
                    pending.append((a, b, pool.submit(_whole_range, store, key, a, b)))
                _, _, future = pending.popleft()
                hasher.update(future.result())
        finally:
            for _, _, future in pending:
                future.cancel()
    return hasher.hexdigest()


# -- internals ------------------------------------------------------------------------------------------


def _whole_range(store: ObjectStore, key: str, start: int, end: int) -> bytes:
    data = store.get_range(key, start, end)
    if len(data) != end - start:
        raise DeidentificationError("the object ends before the end of the pixel range")
    return data


def _pwrite_all(fd: int, data: Buffer, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _copy_small(
    src_fd: int,
    start: int,
    length: int,
    dst_fd: int,
    base: int,
    verify: bool,
    before: str | None,
    source: Buffer | None,
) -> PixelProof:
    data = source if source is not None else os.pread(src_fd, length, start)
    if memoryview(data).nbytes != length:
        raise DeidentificationError(_SHRANK)
    hashed_here = verify and before is None
    if hashed_here:
        before = hash_bytes(data)
    _pwrite_all(dst_fd, data, base)
    if not verify:
        return _UNVERIFIED
    # Read back: "after" is what the destination holds, not what we meant to write. When it is
    # byte for byte the range just hashed (a memcmp), its digest is that digest; otherwise it is
    # hashed, and the digests differ.
    back = _readback(length)
    got = os.preadv(dst_fd, [back], base)
    if hashed_here and got == length and back == data:
        return PixelProof(ALGORITHM, before, before)
    return PixelProof(ALGORITHM, before, hash_bytes(memoryview(back)[:got]))


class _Readback(threading.local):
    buffer: bytearray | None = None


_READBACK = _Readback()


def _readback(length: int) -> bytearray:
    """This thread's buffer for reading a written range back, exactly ``length`` long (kept from
    file to file: the slices of a series are one size, and a fresh buffer costs page faults)."""
    buffer = _READBACK.buffer
    if buffer is None or len(buffer) != length:
        buffer = _READBACK.buffer = bytearray(length)
    return buffer


def _hash_mapped(fd: int, offset: int, length: int, hasher: blake3) -> blake3:
    """Feed ``[offset, offset + length)`` of ``fd`` to ``hasher`` through one read-only mapping
    (from the page boundary below ``offset``, unmapped before returning)."""
    aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
    window = mmap.mmap(fd, offset + length - aligned, access=mmap.ACCESS_READ, offset=aligned)
    with window, memoryview(window) as view:
        hasher.update(view[offset - aligned :])
    return hasher


class _Progress:
    """How many bytes the copy has written, for the hashes that follow it; or that it stopped."""

    def __init__(self) -> None:
        self._done = 0
        self._stopped = False
        self._cond = threading.Condition()

    def advance(self, done: int) -> bool:
        """Record ``done`` bytes copied; False if a hash has failed (the copy should stop)."""
        with self._cond:
            self._done = done
            self._cond.notify_all()
            return not self._stopped

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def wait_for(self, done: int) -> bool:
        """Block until ``done`` bytes are copied (True) or the copy has stopped short (False)."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopped or self._done >= done)
            return self._done >= done


def _copy(src_fd: int, start: int, length: int, dst_fd: int, base: int, progress: _Progress | None) -> None:
    """Copy the range to ``base`` of ``dst_fd`` (explicit offsets: the fd position is not used)."""
    done = 0
    try:
        # Looked up at each call, not at import: it is absent on some platforms (and tests replace it).
        copy_file_range = getattr(os, "copy_file_range", None)
        if copy_file_range is not None:
            try:
                while done < length:
                    n = copy_file_range(src_fd, dst_fd, min(WINDOW, length - done), start + done, base + done)
                    if n == 0:
                        raise DeidentificationError(_SHRANK)
                    done += n
                    if progress is not None and not progress.advance(done):
                        return
            except OSError:
                pass  # not across these file systems (EXDEV, ENOSYS, EINVAL...): go on with pread/pwrite
        while done < length:
            data = os.pread(src_fd, min(CHUNK, length - done), start + done)
            if not data:
                raise DeidentificationError(_SHRANK)
            _pwrite_all(dst_fd, data, base + done)
            done += len(data)
            if progress is not None and not progress.advance(done):
                return
    finally:
        if progress is not None and done < length:
            progress.stop()


def _hash_behind(fd: int, offset: int, length: int, progress: _Progress) -> str | None:
    """BLAKE3 of ``[offset, offset + length)`` of ``fd``, each window once the copy has passed it.

    Read through read-only mmap windows of at most :data:`WINDOW` (plus page alignment), one mapped
    at a time. None if the copy stopped short.
    """
    hasher = blake3()
    try:
        pos = 0
        while pos < length:
            end = min(length, pos + WINDOW)
            if not progress.wait_for(end):
                return None
            _hash_mapped(fd, offset + pos, end - pos, hasher)
            pos = end
    except BaseException:
        progress.stop()  # no point copying on: the proof cannot be made
        raise
    return hasher.hexdigest()


def _copy_verified(
    src_fd: int,
    start: int,
    length: int,
    dst_fd: int,
    base: int,
    source_hash: str | Callable[[], str] | None,
) -> PixelProof:
    """The copy in this thread; the source's (unless given, or being taken) and the destination's
    hashes in two others, behind it."""
    progress = _Progress()
    from concurrent.futures import ThreadPoolExecutor  # 8 ms to import: only for large ranges

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix=_THREAD_PREFIX) as pool:
        before = pool.submit(_hash_behind, src_fd, start, length, progress) if source_hash is None else None
        after = pool.submit(_hash_behind, dst_fd, base, length, progress)
        _copy(src_fd, start, length, dst_fd, base, progress)
        # A hash that failed stopped the copy: its exception is the one to raise.
        if before is not None:
            digest: str | None = before.result()
        else:
            digest = source_hash() if callable(source_hash) else source_hash
        proof = PixelProof(ALGORITHM, digest, after.result())
    if proof.before is None or proof.after is None:  # pragma: no cover - a stop always has a cause
        raise DeidentificationError("the pixel copy stopped before its end")
    return proof
