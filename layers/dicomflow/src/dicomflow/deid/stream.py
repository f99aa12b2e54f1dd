"""Streaming de-identification: rewrite the header, copy the pixels byte for byte.

One file costs one header parse and rewrite, and a copy of the pixel element -- tag and length
included, never decoded -- so memory does not grow with the file. Two engines make the new header:
:mod:`dicomflow.deid.rewrite` works on the header's bytes (little endian, well formed: scanner
output), and :mod:`dicomflow.deid.pydicom_engine` takes every other file (pydicom is imported only
then). Both apply the same policy (:mod:`dicomflow.deid.policy`); the report says which one ran.
The copied bytes keep the original transfer syntax, so the new header declares that same syntax.

* Local files: the pixels are copied in the kernel and proven with BLAKE3 hashes of the source
  and of the destination read back (:mod:`dicomflow.deid.pixels`).
* Object stores (S3): part 1 = new header + the first 5 MiB of pixels (ranged GET); then
  ``copy_part`` (UploadPartCopy, server side) for the rest, in parts of >= 5 MiB; elements after the
  pixels go in the last part. Small objects: one ``put``. Pixel hashes there stream both ranges
  through this process (optional: ``verify_pixels``).
* Deflated files are inflated and de-identified whole (see :mod:`dicomflow.deid.pydicom_engine`).
* Burned-in annotation: de-identified, leak-checked, and written only to the "held" destination.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from dicomflow.deid.pixels import ALGORITHM, SMALL_RANGE, copy_pixels, hash_file_range, hash_object_range
from dicomflow.deid.policy import Deidentifier
from dicomflow.deid.prepared import Prepared, judge
from dicomflow.deid.report import FileReport, Verdict
from dicomflow.deid.rewrite import prepare_raw
from dicomflow.dicom.elements import Buffer
from dicomflow.dicom.errors import DicomFormatError, NotDicomError
from dicomflow.errors import ConfigurationError, DeidentificationError, StorageError

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from dicomflow.deid.pydicom_engine import Deflated
    from dicomflow.storage.base import ObjectStore

ReadRange = Callable[[int, int], bytes]

#: Files up to this size are read whole, in one call (a CT slice: 0.5 MiB).
SMALL_FILE = 4 * 1024 * 1024
#: Part size when pixels must stream through this process (another store): memory per part.
STREAM_PART = 8 * 1024 * 1024
#: S3's minimum part size (every part but the last); the same as ``dicomflow.storage.MIN_PART_SIZE``,
#: repeated here so that local runs do not import boto3 (0.3 s and 30 MB per process).
MIN_PART_SIZE = 5 * 1024 * 1024
#: Largest server-side copy part (S3 allows 5 GiB).
COPY_PART = 1024 * 1024 * 1024


def prepare(
    read_range: ReadRange,
    size: int,
    deid: Deidentifier,
    on_pixels: Callable[[int, int], None] | None = None,
    whole: bytes | memoryview | None = None,
) -> Prepared | Deflated:
    """The new header of the file behind ``read_range``: by the byte-level engine if it takes the
    file, else by pydicom (which also decides what is wrong with a file nobody can take).

    Raises
    ------
    DicomFormatError
        Not a DICOM file either engine can de-identify (the message says why).
    """
    if size == 0:
        raise NotDicomError("the file is empty")
    with _collector_paused():
        return _prepare(read_range, size, deid, on_pixels, whole)


class _CollectorPause:
    """The cyclic garbage collector held off while headers are rewritten, then given back.

    A header makes tens of thousands of short-lived records (a 2000-frame enhanced CT: about
    40 000 elements, their outcomes and encodings), and the collector, counting allocations,
    runs generation after generation over them and over what the de-identifier remembers: 30 %
    of that header's time here (0.18 s -> 0.125 s, measured). Nothing the rewrite builds needs the
    collector to be freed (reference counting frees it); any cycle waits for the next collection,
    made as usual once the collector is back. Counted, so that threads de-identifying at once
    (a workflow batch) give it back only when the last one is done, and only if it was on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._was_enabled:
                    gc.enable()


_collector_paused = _CollectorPause()


def _prepare(
    read_range: ReadRange,
    size: int,
    deid: Deidentifier,
    on_pixels: Callable[[int, int], None] | None,
    whole: bytes | memoryview | None,
) -> Prepared | Deflated:
    buf = (
        Buffer(whole, size, read_range)
        if whole is not None and len(whole) == size
        else Buffer(None, size, read_range)
    )
    try:
        return prepare_raw(buf, deid, on_pixels)
    except (StorageError, ConfigurationError):
        # the workflow retries transient storage errors; a storage or key failure (KMS key
        # disabled, access denied) fails the scan: neither is a verdict on the file
        raise
    except Exception:  # noqa: BLE001 - Unsupported, or input the byte-level engine did not foresee
        pass
    from dicomflow.deid.pydicom_engine import deidentify_deflated, prepare_pydicom
    from dicomflow.dicom.header import read_header

    def cached(start: int, end: int) -> bytes:
        # the bytes the byte-level engine fetched already are not fetched again (S3: one GET less)
        return buf.read(start, end) if end <= len(buf.data) else read_range(start, end)

    header = read_header(cached, size)
    if header.deflated:
        return deidentify_deflated(header, read_range, deid)
    return prepare_pydicom(header, read_range, deid)


# -- local files ----------------------------------------------------------------------------------------


def deidentify_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    deid: Deidentifier,
    *,
    held_dst: str | os.PathLike[str] | None = None,
    verify_pixels: bool = True,
) -> FileReport:
    """De-identify one local file into ``dst`` (or ``held_dst`` if held for review).

    Nothing is left at ``dst`` unless the verdict is PASSED: the output is written to a temporary
    name and renamed at the end.

    Examples
    --------
    >>> import tempfile
    >>> from pydicom.data import get_testdata_file
    >>> from dicomflow.deid.keys import LocalKey
    >>> out = Path(tempfile.mkdtemp()) / "ct.dcm"
    >>> report = deidentify_file(get_testdata_file("CT_small.dcm"), out, Deidentifier(LocalKey(b"k" * 32)))
    >>> report.verdict.value, report.pixels_identical, report.engine
    ('passed', True, 'raw')
    """
    started = time.perf_counter()
    src_path, dst_path = Path(src), Path(dst)
    report = FileReport(source=str(src))
    fd = os.open(src_path, os.O_RDONLY)
    early: _EarlyHash | None = None
    try:
        size = os.fstat(fd).st_size
        # A small file (a CT slice) is read in one call, header and pixels, and never again.
        whole = _read_small(fd, size) if size <= SMALL_FILE else None

        def read_range(start: int, end: int) -> bytes:
            return bytes(whole[start:end]) if whole is not None else os.pread(fd, end - start, start)

        # Only a file too large to read whole has its pixels hashed early (see _EarlyHash).
        early = _EarlyHash(fd) if verify_pixels and whole is None else None
        try:
            prepared = prepare(read_range, size, deid, early.start if early else None, whole)
        except Exception as exc:  # noqa: BLE001 - one odd file must not stop a tree; nothing written
            if early is not None:
                early.discard()
            return _refused(report, exc)
        # The source's pixel hash, if it is being taken: the copy starts without waiting for it.
        before = early.digest_for(prepared) if early is not None else None
        if not isinstance(prepared, Prepared):
            return _write_deflated_local(prepared, report, dst_path, held_dst)
        prepared.fill(report)
        target = _target(report, dst_path, held_dst)
        if target is None:
            return report
        partial = target.with_name(target.name + ".partial")
        out_fd = _create(partial)
        try:
            _write_all(out_fd, prepared.new_header)
            source = (
                memoryview(whole)[prepared.pixel_start : prepared.pixel_end] if whole is not None else None
            )
            proof = copy_pixels(
                fd,
                prepared.pixel_start,
                prepared.pixel_length,
                out_fd,
                verify=verify_pixels,
                before=before,
                source=source,
            )
            _write_all(out_fd, prepared.new_trailing)
        except BaseException as exc:
            os.close(out_fd)
            partial.unlink(missing_ok=True)
            if isinstance(exc, DeidentificationError):  # e.g. the source shrank: this file fails, not the run
                return _refused(report, exc)
            raise
        os.close(out_fd)
        if verify_pixels and prepared.pixel_length:
            report.pixel_hash_algorithm = proof.algorithm
            report.pixel_hash_before, report.pixel_hash_after = proof.before, proof.after
            report.pixels_identical = proof.identical
            if not report.pixels_identical:
                partial.unlink()
                report.verdict = Verdict.FAILED
                report.reasons.append("pixel data differs after copying")
                return report
        os.replace(partial, target)
        report.destination = str(target)
        return report
    finally:
        if early is not None:
            early.discard()  # a file that ends before its copy: the hash stops, then the fd closes
        os.close(fd)
        report.seconds = round(time.perf_counter() - started, 4)


class _SmallFiles(threading.local):
    """One buffer per thread that small files are read into, reused from file to file: a fresh
    0.5 MiB ``bytes`` per slice costs twice the read itself in page faults. Nothing outlives the
    file in it: the engines copy the values they keep, and the pixels are written from it."""

    buffer: bytearray | None = None


_SMALL = _SmallFiles()


def _read_small(fd: int, size: int) -> memoryview:
    """The file's first ``size`` bytes (fewer if it shrank), in this thread's reused buffer."""
    buffer = _SMALL.buffer
    if buffer is None:
        buffer = _SMALL.buffer = bytearray(SMALL_FILE)  # zero pages: resident only once read into
    view = memoryview(buffer)[:size]
    got = os.preadv(fd, [view], 0)
    return view[:got]


class _EarlyHash:
    """The source's pixel hash, taken in a thread while the header is rewritten (BLAKE3 releases
    the GIL; the rewrite holds it) and, if need be, while the copy runs. Only for ranges the
    small-file path would not read into memory anyway.

    Beside the rewrite the thread gets the GIL back only at the interpreter's switch interval, once
    per mmap window at least: on a 1 GB file it finishes during the copy rather than before it
    (measured: 0.6-0.8 s instead of 0.25 s alone). A shorter switch interval let it finish first
    but did not shorten the run (the rewrite slowed as much), so the default is kept."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._range: tuple[int, int] | None = None
        self._future: Future[str] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()

    def start(self, start: int, end: int) -> None:
        if end - start < SMALL_RANGE:
            return
        from concurrent.futures import ThreadPoolExecutor  # 8 ms to import: only for large files

        self._range = (start, end)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dicomflow-early-hash")
        self._future = self._pool.submit(hash_file_range, self._fd, start, end - start, self._stop)

    def digest_for(self, prepared: Prepared | Deflated) -> Callable[[], str] | None:
        """A function returning the digest (waiting for it) if it is being taken over the range
        ``prepared`` copies; else None (the hash is stopped: the copy hashes as usual). The
        function raises what the hash raised (the source shrank: a DeidentificationError)."""
        future, pool = self._future, self._pool
        if future is None or pool is None:
            return None
        if not (isinstance(prepared, Prepared) and self._range == (prepared.pixel_start, prepared.pixel_end)):
            self.discard()
            return None

        def digest() -> str:
            try:
                return future.result()
            finally:
                pool.shutdown()

        return digest

    def discard(self) -> None:
        """Stop the hash (at its next window) and wait for its thread: nothing uses the file
        after this returns. Harmless after the digest was taken."""
        if self._pool is not None:
            self._stop.set()
            self._pool.shutdown(cancel_futures=True)


_MADE: set[Path] = set()


def _make_parent(target: Path) -> None:
    """``mkdir -p`` of the target's folder, once per folder per process (a series: 300 files, one folder)."""
    parent = target.parent
    if parent not in _MADE:
        parent.mkdir(parents=True, exist_ok=True)
        if len(_MADE) > 4096:
            _MADE.clear()
        _MADE.add(parent)


def _create(partial: Path) -> int:
    """Open the output's temporary file, its folder made first; a folder made earlier in this
    process and removed since (a long-lived worker whose output tree was cleaned) is made again."""
    _make_parent(partial)
    try:
        return os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    except FileNotFoundError:
        _MADE.discard(partial.parent)
        _make_parent(partial)
        return os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _refused(report: FileReport, exc: BaseException) -> FileReport:
    """Record why a file is not written: input that is not (well-formed) DICOM is REJECTED; a file
    that cannot be made safe, or an unexpected error, FAILED. Our messages carry no patient data;
    an unexpected exception's message might, so only its type is kept."""
    if isinstance(exc, DicomFormatError):
        report.verdict = Verdict.REJECTED
        report.reasons.append(f"{type(exc).__name__}: {exc}")
    elif isinstance(exc, DeidentificationError):
        report.verdict = Verdict.FAILED
        report.reasons.append(f"{type(exc).__name__}: {exc}")
    else:
        report.verdict = Verdict.FAILED
        report.reasons.append(f"unexpected {type(exc).__name__} while de-identifying (nothing written)")
    return report


def _target(report: FileReport, dst: Path, held_dst: str | os.PathLike[str] | None) -> Path | None:
    if report.verdict is Verdict.PASSED:
        return dst
    if report.verdict is Verdict.HELD and held_dst is not None:
        return Path(held_dst)
    return None


def _fill_deflated(report: FileReport, deflated: Deflated) -> None:
    from dicomflow.deid.burned_in import burned_in_reasons

    outcome, leak = deflated.outcome, deflated.leak
    before, after = deflated.pixel_hash_before, deflated.pixel_hash_after
    report.engine = "pydicom"
    report.transfer_syntax = str(outcome.file_meta.get("TransferSyntaxUID", "")) or None
    report.sop_instance_uid = str(outcome.dataset.get("SOPInstanceUID", "")) or None
    report.leak_check = leak.as_dict()
    report.actions = dict(outcome.actions)
    report.header_bytes_read = deflated.bytes_read
    report.header_bytes_written = len(deflated.data)
    report.pixel_hash_before, report.pixel_hash_after = before, after
    report.pixel_hash_algorithm = ALGORITHM if before else None
    report.pixels_identical = before == after if before else None
    report.trailing = "deflated: inflated in memory, de-identified whole, re-deflated"
    differ = "pixel data differs after re-encoding" if before and before != after else None
    judge(report, leak, burned_in_reasons(deflated.original), differ)


def _write_deflated_local(
    deflated: Deflated, report: FileReport, dst: Path, held_dst: str | os.PathLike[str] | None
) -> FileReport:
    _fill_deflated(report, deflated)
    target = _target(report, dst, held_dst)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(deflated.data)
        os.replace(partial, target)
        report.destination = str(target)
    return report


# -- object stores ----------------------------------------------------------------------------------------


def copy_plan(start: int, end: int, part: int = COPY_PART) -> tuple[int, list[tuple[int, int]]]:
    """Split the pixel range for a multipart upload: (bytes sent with the header in part 1,
    server-side copy ranges, each >= 5 MiB except possibly the last).

    Examples
    --------
    >>> MiB = 1024 * 1024
    >>> first, ranges = copy_plan(100, 100 + 12 * MiB)
    >>> first == 5 * MiB, [(s - 100, e - 100) for s, e in ranges] == [(5 * MiB, 12 * MiB)]
    (True, True)
    """
    first = min(end - start, MIN_PART_SIZE)
    ranges: list[tuple[int, int]] = []
    pos = start + first
    while pos < end:
        stop = min(end, pos + part)
        if end - stop < MIN_PART_SIZE:
            stop = end  # fold a short tail into this part
        ranges.append((pos, stop))
        pos = stop
    return first, ranges


def deidentify_object(
    store: ObjectStore,
    src_key: str,
    dst_key: str,
    deid: Deidentifier,
    *,
    held_key: str | None = None,
    verify_pixels: bool = True,
    dst_store: ObjectStore | None = None,
    held_store: ObjectStore | None = None,
    copy_between_buckets: bool = False,
    pixel_proof: str = "full",
    whole: bytes | None = None,
) -> FileReport:
    """De-identify ``src_key`` into ``dst_key``, copying pixels server side within one store.

    Memory and bytes through this process stay near 5 MiB + header whatever the object's size
    (plus two streamed reads of the pixel range when ``verify_pixels``). With a ``dst_store``
    other than ``store`` (another bucket), pixels stream through this process in 8 MiB parts:
    memory stays constant, bytes moved do not -- unless ``copy_between_buckets`` and the
    destination can read the source server side (``can_copy_from``: S3 to S3 on one endpoint),
    where UploadPartCopy copies across buckets.

    A HELD file goes to ``held_key`` in ``held_store`` (default: the destination store); a
    workflow keeps held files beside the originals, never where de-identified data is published.

    ``pixel_proof``: ``"full"`` hashes the whole pixel range of the source and of the output
    (reads both through this process); ``"sampled"`` keeps bytes read independent of the file's
    size: see :func:`_sampled_proof` for what it proves and why that suffices.

    ``whole``: the object's bytes, when the caller holds all of them already (a slice read in one
    GET): the header is parsed from them in place, as from a local file read whole, instead of
    through ``read_range`` in growing blocks (each a copy).
    """
    if pixel_proof not in ("full", "sampled"):
        raise ValueError(f"pixel_proof must be 'full' or 'sampled', not {pixel_proof!r}")
    out_store = dst_store if dst_store is not None else store
    started = time.perf_counter()
    report = FileReport(source=src_key)

    def read_range(start: int, end: int) -> bytes:
        return store.get_range(src_key, start, end)

    try:
        try:
            prepared = prepare(read_range, store.size(src_key), deid, whole=whole)
        except (StorageError, ConfigurationError):
            raise  # the workflow retries or fails the scan (see prepare): not a verdict on the file
        except Exception as exc:  # noqa: BLE001 - one odd object must not stop a scan; nothing written
            return _refused(report, exc)
        if not isinstance(prepared, Prepared):
            _fill_deflated(report, prepared)
            key = _target_key(report, dst_key, held_key)
            if key is not None:
                _target_store(report, out_store, held_store).put(
                    key, prepared.data, content_type="application/dicom"
                )
                report.destination = key
            return report
        prepared.fill(report)
        key = _target_key(report, dst_key, held_key)
        if key is None:
            return report
        target = _target_store(report, out_store, held_store)
        start, end = prepared.pixel_start, prepared.pixel_end
        source_bucket = _copy_source(store, target, copy_between_buckets)
        server_side = source_bucket is not None
        cuts: list[int] = []
        in_memory: bytes | None = None
        if prepared.pixel_length < 2 * MIN_PART_SIZE:
            in_memory = read_range(start, end)
            body = prepared.new_header + in_memory + prepared.new_trailing
            target.put(key, body, content_type="application/dicom")
        else:
            first, ranges = copy_plan(start, end, COPY_PART if server_side else STREAM_PART)
            with target.multipart_put(key) as writer:
                writer.upload_part(prepared.new_header + read_range(start, start + first))
                for range_start, range_end in ranges:
                    cuts.append(range_start)
                    if target is store:
                        writer.copy_part(src_key, range_start, range_end)
                        report.bytes_copied_server_side += range_end - range_start
                    elif server_side:
                        writer.copy_part(  # type: ignore[call-arg]
                            src_key, range_start, range_end, source_bucket=source_bucket
                        )
                        report.bytes_copied_server_side += range_end - range_start
                    else:
                        writer.upload_part(read_range(range_start, range_end))
                if prepared.new_trailing:
                    writer.upload_part(prepared.new_trailing)
        if verify_pixels and prepared.pixel_length:
            offset = len(prepared.new_header)
            if pixel_proof == "sampled":
                report.pixel_hash_algorithm = SAMPLED_ALGORITHM
                before, after = _sampled_proof(store, src_key, target, key, prepared, cuts, in_memory)
                report.pixel_hash_before, report.pixel_hash_after = before, after
            else:
                report.pixel_hash_algorithm = ALGORITHM
                report.pixel_hash_before = hash_object_range(store, src_key, start, end)
                report.pixel_hash_after = hash_object_range(
                    target, key, offset, offset + prepared.pixel_length
                )
            report.pixels_identical = report.pixel_hash_before == report.pixel_hash_after
            if not report.pixels_identical:
                target.delete(key)
                report.verdict = Verdict.FAILED
                report.reasons.append("pixel data differs after copying")
                return report
        report.destination = key
        return report
    finally:
        report.seconds = round(time.perf_counter() - started, 4)


#: ``pixel_hash_algorithm`` of the sampled proof.
SAMPLED_ALGORITHM = "blake3-sampled"
#: Bytes on each side of a part boundary, and of each interior window, that the sampled proof reads.
SAMPLE_WINDOW = 64 * 1024
#: Interior windows of the sampled proof, spread evenly over the pixel range.
SAMPLE_WINDOWS = 8


def _sampled_proof(
    store: ObjectStore,
    src_key: str,
    target: ObjectStore,
    key: str,
    prepared: Prepared,
    cuts: list[int],
    in_memory: bytes | None,
) -> tuple[str, str]:
    """BLAKE3 of the same sampled windows of the source's and the output's pixel data.

    Why sampling suffices here: the bytes that went through this process (the header part, or a
    small object written whole) are compared in full; the rest was copied by S3 itself
    (UploadPartCopy), whose integrity S3 guarantees. What our code can get wrong is *where*: a
    shifted, missing, repeated or foreign range. The output's size is checked exactly (a missing or
    repeated part changes it), and windows on both sides of every part boundary, at both ends and
    at evenly spread points are compared byte for byte (a shifted or foreign range differs there,
    unless the image is constant over every window: then the bytes are the same anyway at those
    points). Bytes read: at most about 2 x (64 KiB x (2 x parts + 10)), whatever the file's size.
    The full proof (hashing the whole range on both sides) stays available as ``pixel_proof="full"``.
    """
    from blake3 import blake3

    start, end, offset = prepared.pixel_start, prepared.pixel_end, len(prepared.new_header)
    expected_size = offset + prepared.pixel_length + len(prepared.new_trailing)
    before, after = blake3(), blake3()
    if in_memory is not None:
        # Written whole from these very bytes: read the whole output back, one byte past its
        # planned end, and compare its pixels in full; the length read is then its size (no HEAD).
        before.update(in_memory)
        back = target.get_range(key, 0, expected_size + 1)
        after.update(back[offset : offset + prepared.pixel_length])
        size = len(back)
    else:
        for lo, hi in _windows(start, end, cuts):
            before.update(store.get_range(src_key, lo, hi))
            after.update(target.get_range(key, offset + lo - start, offset + hi - start))
        size = target.size(key)
    if size != expected_size:
        after.update(f"size:{size}".encode())  # the proof fails: the object is not what was planned
    return before.hexdigest(), after.hexdigest()


def _windows(start: int, end: int, cuts: list[int]) -> list[tuple[int, int]]:
    """Sorted, merged windows of at most :data:`SAMPLE_WINDOW` bytes each side of every point
    (the range's ends, every part boundary, evenly spread interior points), inside ``[start, end)``."""
    length = end - start
    points = [start, end, *cuts]
    points += [start + length * i // (SAMPLE_WINDOWS + 1) for i in range(1, SAMPLE_WINDOWS + 1)]
    spans = sorted((max(start, p - SAMPLE_WINDOW), min(end, p + SAMPLE_WINDOW)) for p in points)
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if lo >= hi:
            continue
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _copy_source(store: ObjectStore, target: ObjectStore, across: bool) -> str | None:
    """The bucket UploadPartCopy reads from, if ``target`` can copy ``store``'s objects server side."""
    if target is store:
        return str(getattr(store, "bucket", "")) or "same"
    can_copy = getattr(target, "can_copy_from", None)
    if across and can_copy is not None and can_copy(store):
        return str(store.bucket)  # type: ignore[attr-defined]
    return None


def _target_store(report: FileReport, out_store: ObjectStore, held_store: ObjectStore | None) -> ObjectStore:
    if report.verdict is Verdict.HELD and held_store is not None:
        return held_store
    return out_store


def _target_key(report: FileReport, dst_key: str, held_key: str | None) -> str | None:
    if report.verdict is Verdict.PASSED:
        return dst_key
    if report.verdict is Verdict.HELD and held_key is not None:
        return held_key
    return None
