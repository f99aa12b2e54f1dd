"""Streaming de-identification: rewrite the header, copy the pixels byte for byte.

One file costs one header parse (ranged reads, :mod:`dicomflow.dicom.header`), one pydicom encode
of the new header, and a copy of ``[header_end, pixel_end)`` -- the Pixel Data element, tag and
length included, never decoded -- so memory does not grow with the file. The copied bytes keep the
original transfer syntax, so the new header declares that same syntax and is encoded with the
original's VR explicitness and byte order (big endian stays big endian).

* Local files: ``os.copy_file_range`` (in-kernel) for the pixels while two threads hash the source
  range and, a chunk behind the copy, the written destination range (hashlib releases the GIL).
  Pixel ranges under 4 MiB (a CT slice) are read once, hashed in memory, written, and read back.
* Object stores (S3): part 1 = new header + the first 5 MiB of pixels (ranged GET); then
  ``copy_part`` (UploadPartCopy, server side) for the rest, in parts of >= 5 MiB; elements after the
  pixels go in the last part. Small objects: one ``put``. Pixel hashes there stream both ranges
  through this process (optional: ``verify_pixels``).
* Elements after Pixel Data: Data Set Trailing Padding (FFFC,FFFC) is dropped (meaningless by
  definition); any other element is de-identified with the same rules and re-encoded after the
  pixels; more than 1 MiB of them, or bytes that do not parse, fail the file (reported).
* Deflated transfer syntax: the data set is one deflate stream, so pixels cannot be copied as
  bytes. The file (up to 256 MiB) is inflated in memory, de-identified whole with pydicom and
  re-deflated; the pixel hash is taken on the Pixel Data value before and after.
* Burned-in annotation: de-identified, leak-checked, and written only to the "held" destination.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import correct_ambiguous_vr, write_dataset, write_file_meta_info
from pydicom.uid import UID

from dicomflow.deid.actions import (
    DICOMFLOW_IMPLEMENTATION_UID,
    Deidentifier,
    DeidOutcome,
    IdentifyingValues,
    patient_identity,
)
from dicomflow.deid.burned_in import burned_in_reasons
from dicomflow.deid.leakcheck import LeakReport, check_leaks
from dicomflow.deid.report import FileReport, Verdict
from dicomflow.dicom.header import (
    DicomFormatError,
    DicomHeader,
    MalformedHeaderError,
    read_header,
    read_header_from_store,
)
from dicomflow.errors import DeidentificationError, StorageError

if TYPE_CHECKING:
    from dicomflow.storage.base import ObjectStore

ReadRange = Callable[[int, int], bytes]

#: Elements after Pixel Data larger than this are not parsed in memory: the file fails.
MAX_TRAILING_BYTES = 1024 * 1024
#: Hash / copy chunk (small: two of them are in memory at once when verifying).
CHUNK = 1024 * 1024
#: Part size when pixels must stream through this process (another store): memory per part.
STREAM_PART = 8 * 1024 * 1024
#: Pixel ranges at least this long are copied and hashed (before and after) in three threads at
#: once; shorter ones (a CT slice: 0.5 MiB) are read once into memory, at most this much.
PARALLEL_HASH_BYTES = 4 * 1024 * 1024
#: In-kernel copy step: how far the copy runs ahead before the destination's hash may follow.
COPY_STEP = 16 * 1024 * 1024
#: S3's minimum part size (every part but the last); the same as ``dicomflow.storage.MIN_PART_SIZE``,
#: repeated here so that local runs do not import boto3 (0.3 s and 30 MB per process).
MIN_PART_SIZE = 5 * 1024 * 1024
#: Largest server-side copy part (S3 allows 5 GiB).
COPY_PART = 1024 * 1024 * 1024
_TRAILING_PADDING = 0xFFFCFFFC


class PixelDataError(DicomFormatError):
    """The encapsulated Pixel Data's items cannot be walked to their end (a malformed file)."""


class NonConformantError(DicomFormatError):
    """The object lacks what a DICOM file must carry (SOP Class and Instance UIDs)."""


@dataclass
class Prepared:
    """A file's new header and everything decided before a byte of pixels is moved."""

    header: DicomHeader
    outcome: DeidOutcome
    new_header: bytes
    pixel_start: int
    pixel_end: int
    new_trailing: bytes
    trailing_note: str | None
    leak: LeakReport
    held: list[str]

    @property
    def pixel_length(self) -> int:
        return self.pixel_end - self.pixel_start


# -- the pure part: header in, new header out ---------------------------------------------------------


def find_pixel_end(header: DicomHeader, read_range: ReadRange) -> int:
    """Offset just past the pixel element (its sequence delimiter when encapsulated)."""
    if header.pixel_data_value_offset is None:
        return header.header_end
    if header.pixel_data_length is not None:
        return header.pixel_data_value_offset + header.pixel_data_length
    endian = "<" if header.is_little_endian else ">"
    delimiter = struct.pack(endian + "HHL", 0xFFFE, 0xE0DD, 0)
    size = header.file_size
    if size - header.pixel_data_value_offset >= 8 and read_range(size - 8, size) == delimiter:
        return size  # the common case: nothing after the pixels, no need to walk the items
    pos = header.pixel_data_value_offset
    while pos + 8 <= size:
        group, elem, length = struct.unpack(endian + "HHL", read_range(pos, pos + 8))
        if (group, elem) == (0xFFFE, 0xE0DD):
            return pos + 8
        if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            raise PixelDataError("encapsulated Pixel Data holds something other than items")
        pos += 8 + length
    raise PixelDataError("encapsulated Pixel Data has no sequence delimiter before the end of the file")


def encode_header(meta: FileMetaDataset, ds: Dataset, *, implicit: bool, little: bool) -> bytes:
    """Preamble (zeros: the original's may hold anything), ``DICM``, file meta, then the data set
    encoded as the copied pixel bytes are."""
    fp = DicomBytesIO()
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    correct_ambiguous_vr(ds, little)
    write_dataset(fp, ds)
    return bytes(fp.getvalue())


def _encode_dataset(ds: Dataset, *, implicit: bool, little: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    correct_ambiguous_vr(ds, little)
    write_dataset(fp, ds)
    return bytes(fp.getvalue())


def prepare(header: DicomHeader, read_range: ReadRange, deid: Deidentifier) -> Prepared:
    """De-identify the header (and trailing elements) and leak-check the result."""
    implicit, little = header.is_implicit_vr, header.is_little_endian
    meta = header.file_meta
    if len(header.dataset) == 0:
        raise NonConformantError("the data set is empty: nothing to de-identify")
    for keyword, meta_keyword in (
        ("SOPClassUID", "MediaStorageSOPClassUID"),
        ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
    ):
        try:
            value = header.dataset.get(keyword) or meta.get(meta_keyword)
        except Exception as exc:  # pydicom cannot decode it: a corrupt file
            raise MalformedHeaderError(f"{keyword} cannot be decoded ({type(exc).__name__})") from exc
        if not value:
            raise NonConformantError(f"no {keyword}: not a composite DICOM object that can be de-identified")
        if not UID(str(value).rstrip("\0 ")).is_valid:
            raise MalformedHeaderError(f"{keyword} is not a valid UID")
    syntax = Deidentifier.syntax_for(header.transfer_syntax, implicit, little)
    held = burned_in_reasons(header.dataset)
    outcome = deid.deidentify(header.dataset, header.file_meta, transfer_syntax=syntax, consume=True)
    pixel_end = find_pixel_end(header, read_range)
    new_trailing, trailing_note, trailing_ds = _trailing(
        header, read_range, pixel_end, deid, outcome.identifying
    )
    try:
        new_header = encode_header(outcome.file_meta, outcome.dataset, implicit=implicit, little=little)
    except Exception as exc:
        raise MalformedHeaderError(
            f"the header cannot be re-encoded ({type(exc).__name__} in pydicom)"
        ) from exc
    datasets = [outcome.dataset, outcome.file_meta] + ([trailing_ds] if trailing_ds is not None else [])
    leak = check_leaks(
        outcome.identifying, datasets, new_header + new_trailing, _own_uids(outcome), outcome.own_text
    )
    return Prepared(
        header=header,
        outcome=outcome,
        new_header=new_header,
        pixel_start=header.header_end,
        pixel_end=pixel_end,
        new_trailing=new_trailing,
        trailing_note=trailing_note,
        leak=leak,
        held=held,
    )


def _own_uids(outcome: DeidOutcome) -> set[str]:
    """UIDs we wrote: masked in the raw search (a 39-digit UID may contain any short digit run)."""
    return set(outcome.uid_map.values()) | {DICOMFLOW_IMPLEMENTATION_UID}


def _trailing(
    header: DicomHeader,
    read_range: ReadRange,
    pixel_end: int,
    deid: Deidentifier,
    identifying: IdentifyingValues,
) -> tuple[bytes, str | None, Dataset | None]:
    size = header.file_size - pixel_end
    if size <= 0:
        return b"", None, None
    if size > MAX_TRAILING_BYTES:
        raise DeidentificationError(f"{size} bytes of elements after Pixel Data (limit {MAX_TRAILING_BYTES})")
    raw = read_range(pixel_end, header.file_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = read_dataset(io.BytesIO(raw), header.is_implicit_vr, header.is_little_endian)
            tags = list(parsed.keys())
    except Exception as exc:
        raise DeidentificationError(
            f"{size} bytes after Pixel Data do not parse as data elements ({type(exc).__name__})"
        ) from exc
    padding = _TRAILING_PADDING in parsed
    if padding:
        del parsed[_TRAILING_PADDING]
    notes = []
    if padding:
        notes.append("Data Set Trailing Padding dropped")
    if len(parsed) == 0:
        return b"", "; ".join(notes) or None, None
    outcome = deid.deidentify(
        parsed, None, identifying=identifying, patient=patient_identity(header.dataset), top_level=False
    )
    encoded = _encode_dataset(outcome.dataset, implicit=header.is_implicit_vr, little=header.is_little_endian)
    notes.append(
        f"{len(tags) - int(padding)} element(s) after Pixel Data de-identified, {len(outcome.dataset)} kept"
    )
    return encoded, "; ".join(notes), outcome.dataset


def _report_from(prepared: Prepared, report: FileReport) -> None:
    report.transfer_syntax = prepared.outcome.file_meta.get("TransferSyntaxUID")
    report.sop_instance_uid = str(prepared.outcome.dataset.get("SOPInstanceUID", "")) or None
    report.leak_check = prepared.leak.as_dict()
    report.trailing = prepared.trailing_note
    report.actions = dict(prepared.outcome.actions)
    report.header_bytes_read = prepared.header.bytes_read
    report.header_bytes_written = len(prepared.new_header)
    report.pixel_bytes = prepared.pixel_length
    if not prepared.leak.passed:
        report.verdict = Verdict.FAILED
        report.reasons.append(
            f"leak check: {len(prepared.leak.element_hits)} element hit(s), "
            f"{prepared.leak.raw_hits} raw hit(s)"
        )
    elif prepared.held:
        report.verdict = Verdict.HELD
        report.reasons.extend(prepared.held)
    else:
        report.verdict = Verdict.PASSED


# -- local files ----------------------------------------------------------------------------------------


def _sha256_fd(fd: int, start: int, end: int, progress: _Progress | None = None) -> str | None:
    """SHA-256 of bytes ``[start, end)`` of ``fd`` (positional reads into one reused buffer).

    With ``progress``, each chunk is read only once the writer says it is in the file: the hash of
    the destination follows the copy a chunk behind, from the page cache. ``None`` if the copy was
    abandoned.
    """
    digest = hashlib.sha256()
    buf = bytearray(min(CHUNK, max(end - start, 1)))
    view = memoryview(buf)
    pos = start
    while pos < end:
        want = min(len(buf), end - pos)
        if progress is not None and not progress.wait_for(pos + want):
            return None
        got = os.preadv(fd, [view[:want]], pos)
        if got <= 0:
            break
        digest.update(view[:got])
        pos += got
    return digest.hexdigest()


class _Progress:
    """How far the copy has got (an offset in the destination), for the hash that follows it."""

    def __init__(self) -> None:
        self._done = 0
        self._failed = False
        self._cond = threading.Condition()

    def advance(self, done: int) -> None:
        with self._cond:
            self._done = done
            self._cond.notify_all()

    def fail(self) -> None:
        with self._cond:
            self._failed = True
            self._cond.notify_all()

    def wait_for(self, offset: int) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: self._failed or self._done >= offset)
            return not self._failed


def _copy_range(
    src_fd: int, dst_fd: int, start: int, length: int, progress: _Progress | None = None, base: int = 0
) -> None:
    """Copy ``length`` bytes from ``start`` of ``src_fd`` to ``dst_fd``'s position (in steps of
    :data:`COPY_STEP`, reporting ``base`` + bytes copied to ``progress``)."""
    offset = start
    remaining = length
    try:
        while remaining:
            n = os.copy_file_range(src_fd, dst_fd, min(remaining, COPY_STEP), offset)
            if n == 0:
                raise DeidentificationError("the source file shrank while being copied")
            offset += n
            remaining -= n
            if progress is not None:
                progress.advance(base + offset - start)
    except OSError:
        # copy_file_range is not available across every pair of file systems: plain copy.
        while remaining:
            chunk = os.pread(src_fd, min(CHUNK, remaining), offset)
            if not chunk:
                raise DeidentificationError("the source file shrank while being copied") from None
            os.write(dst_fd, chunk)
            offset += len(chunk)
            remaining -= len(chunk)
            if progress is not None:
                progress.advance(base + offset - start)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_output(fd: int, out_fd: int, prepared: Prepared, verify: bool) -> tuple[str | None, str | None]:
    """Write header, pixels and trailing elements to ``out_fd``; (pixel SHA-256 before, after).

    "Before" is hashed from the source, "after" from the written file read back (the page cache),
    never from the bytes we meant to write. Small pixel ranges: one read, hashed in memory, written
    as read, then the written range read back. Large ones: the in-kernel copy, the source's hash and
    the destination's hash (a chunk behind the copy) run at once in three threads (hashlib and the
    copy release the GIL), so that the hashes cost little more than one pass over the pixels.
    """
    header = prepared.new_header
    start, length = prepared.pixel_start, prepared.pixel_length
    if length < PARALLEL_HASH_BYTES:
        pixels = os.pread(fd, length, start)
        if len(pixels) != length:
            raise DeidentificationError("the source file shrank while being copied")
        before = hashlib.sha256(pixels).hexdigest() if verify and length else None
        _write_all(out_fd, header)
        _write_all(out_fd, pixels)
        _write_all(out_fd, prepared.new_trailing)
        del pixels
        after = _sha256_fd(out_fd, len(header), len(header) + length) if verify and length else None
        return before, after
    _write_all(out_fd, header)
    if not verify:
        _copy_range(fd, out_fd, start, length)
        if prepared.new_trailing:
            _write_all(out_fd, prepared.new_trailing)
        return None, None
    progress = _Progress()
    with ThreadPoolExecutor(max_workers=2) as pool:
        before_f = pool.submit(_sha256_fd, fd, start, start + length)
        after_f = pool.submit(_sha256_fd, out_fd, len(header), len(header) + length, progress)
        try:
            _copy_range(fd, out_fd, start, length, progress, base=len(header))
            if prepared.new_trailing:
                _write_all(out_fd, prepared.new_trailing)
        except BaseException:
            progress.fail()
            raise
        return before_f.result(), after_f.result()


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
    >>> report.verdict.value, report.pixels_identical
    ('passed', True)
    """
    started = time.perf_counter()
    src_path, dst_path = Path(src), Path(dst)
    report = FileReport(source=str(src))
    fd = os.open(src_path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size

        def read_range(start: int, end: int) -> bytes:
            return os.pread(fd, end - start, start)

        try:
            header = read_header(read_range, size)
        except DicomFormatError as exc:
            return _refused(report, exc)
        try:
            if header.deflated:
                return _deflated_local(header, read_range, deid, report, dst_path, held_dst)
            prepared = prepare(header, read_range, deid)
        except Exception as exc:  # noqa: BLE001 - one odd file must not stop a tree; nothing written
            return _refused(report, exc)
        _report_from(prepared, report)
        target = _target(report, dst_path, held_dst)
        if target is None:
            return report
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        out_fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            before, after = _write_output(fd, out_fd, prepared, verify_pixels)
        except BaseException:
            os.close(out_fd)
            partial.unlink(missing_ok=True)
            raise
        os.close(out_fd)
        if verify_pixels and prepared.pixel_length:
            report.pixel_sha256_before, report.pixel_sha256_after = before, after
            report.pixels_identical = before is not None and before == after
            if not report.pixels_identical:
                partial.unlink()
                report.verdict = Verdict.FAILED
                report.reasons.append("pixel data differs after copying")
                return report
        os.replace(partial, target)
        report.destination = str(target)
        return report
    finally:
        os.close(fd)
        report.seconds = round(time.perf_counter() - started, 4)


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


def _deflated_dataset(
    header: DicomHeader, read_range: ReadRange, deid: Deidentifier
) -> tuple[bytes, DeidOutcome, LeakReport, str | None, str | None]:
    """Inflate, de-identify whole, re-deflate: (bytes, outcome, leak, pixel hash before, after)."""
    whole = read_range(0, header.file_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = pydicom.dcmread(io.BytesIO(whole), force=True)
    outcome = deid.deidentify(full, full.file_meta, transfer_syntax=str(header.transfer_syntax))
    new = outcome.dataset
    before = after = None
    if "PixelData" in full:
        before = hashlib.sha256(full.PixelData).hexdigest()
        after = hashlib.sha256(new.PixelData).hexdigest() if "PixelData" in new else None
    out = FileDataset("", new, file_meta=outcome.file_meta, preamble=b"\x00" * 128)
    buf = io.BytesIO()
    out.save_as(buf, enforce_file_format=True)
    without_pixels = Dataset({e.tag: e for e in new if e.tag != 0x7FE00010})
    raw = encode_header(outcome.file_meta, without_pixels, implicit=False, little=True)
    leak = check_leaks(
        outcome.identifying, [new, outcome.file_meta], raw, _own_uids(outcome), outcome.own_text
    )
    return buf.getvalue(), outcome, leak, before, after


def _fill_deflated(
    report: FileReport,
    header: DicomHeader,
    outcome: DeidOutcome,
    leak: LeakReport,
    before: str | None,
    after: str | None,
    size: int,
) -> None:
    report.transfer_syntax = str(header.transfer_syntax)
    report.sop_instance_uid = str(outcome.dataset.get("SOPInstanceUID", "")) or None
    report.leak_check = leak.as_dict()
    report.actions = dict(outcome.actions)
    report.header_bytes_read = header.file_size
    report.header_bytes_written = size
    report.pixel_sha256_before, report.pixel_sha256_after = before, after
    report.pixels_identical = before == after if before else None
    report.trailing = "deflated: inflated in memory, de-identified whole, re-deflated"
    held = burned_in_reasons(header.dataset)
    if not leak.passed:
        report.verdict = Verdict.FAILED
        report.reasons.append(
            f"leak check: {len(leak.element_hits)} element hit(s), {leak.raw_hits} raw hit(s)"
        )
    elif before and before != after:
        report.verdict = Verdict.FAILED
        report.reasons.append("pixel data differs after re-encoding")
    elif held:
        report.verdict = Verdict.HELD
        report.reasons.extend(held)
    else:
        report.verdict = Verdict.PASSED


def _deflated_local(
    header: DicomHeader,
    read_range: ReadRange,
    deid: Deidentifier,
    report: FileReport,
    dst: Path,
    held_dst: str | os.PathLike[str] | None,
) -> FileReport:
    data, outcome, leak, before, after = _deflated_dataset(header, read_range, deid)
    _fill_deflated(report, header, outcome, leak, before, after, len(data))
    target = _target(report, dst, held_dst)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, target)
        report.destination = str(target)
    return report


# -- object stores ----------------------------------------------------------------------------------------


def _sha256_object_range(store: ObjectStore, key: str, start: int, end: int) -> str:
    digest = hashlib.sha256()
    pos = start
    while pos < end:
        chunk = store.get_range(key, pos, min(end, pos + CHUNK))
        if not chunk:
            break
        digest.update(chunk)
        pos += len(chunk)
    return digest.hexdigest()


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
) -> FileReport:
    """De-identify ``src_key`` into ``dst_key``, copying pixels server side within one store.

    Memory and bytes through this process stay near 5 MiB + header whatever the object's size
    (plus two streamed reads of the pixel range when ``verify_pixels``). With a ``dst_store``
    other than ``store`` (another bucket), pixels stream through this process in 8 MiB parts:
    memory stays constant, bytes moved do not (``MultipartWriter.copy_part`` copies within its
    own store only).
    """
    out_store = dst_store if dst_store is not None else store
    started = time.perf_counter()
    report = FileReport(source=src_key)

    def read_range(start: int, end: int) -> bytes:
        return store.get_range(src_key, start, end)

    try:
        try:
            header = read_header_from_store(store, src_key)
        except DicomFormatError as exc:
            return _refused(report, exc)
        try:
            if header.deflated:
                data, outcome, leak, before, after = _deflated_dataset(header, read_range, deid)
                _fill_deflated(report, header, outcome, leak, before, after, len(data))
                key = _target_key(report, dst_key, held_key)
                if key is not None:
                    out_store.put(key, data, content_type="application/dicom")
                    report.destination = key
                return report
            prepared = prepare(header, read_range, deid)
        except StorageError:
            raise  # the workflow retries transient storage errors: not a verdict on the file
        except Exception as exc:  # noqa: BLE001 - one odd object must not stop a scan; nothing written
            return _refused(report, exc)
        _report_from(prepared, report)
        key = _target_key(report, dst_key, held_key)
        if key is None:
            return report
        start, end = prepared.pixel_start, prepared.pixel_end
        server_side = out_store is store
        if prepared.pixel_length < 2 * MIN_PART_SIZE:
            body = prepared.new_header + read_range(start, end) + prepared.new_trailing
            out_store.put(key, body, content_type="application/dicom")
        else:
            first, ranges = copy_plan(start, end, COPY_PART if server_side else STREAM_PART)
            with out_store.multipart_put(key) as writer:
                writer.upload_part(prepared.new_header + read_range(start, start + first))
                for range_start, range_end in ranges:
                    if server_side:
                        writer.copy_part(src_key, range_start, range_end)
                        report.bytes_copied_server_side += range_end - range_start
                    else:
                        writer.upload_part(read_range(range_start, range_end))
                if prepared.new_trailing:
                    writer.upload_part(prepared.new_trailing)
        if verify_pixels and prepared.pixel_length:
            offset = len(prepared.new_header)
            report.pixel_sha256_before = _sha256_object_range(store, src_key, start, end)
            report.pixel_sha256_after = _sha256_object_range(
                out_store, key, offset, offset + prepared.pixel_length
            )
            report.pixels_identical = report.pixel_sha256_before == report.pixel_sha256_after
            if not report.pixels_identical:
                out_store.delete(key)
                report.verdict = Verdict.FAILED
                report.reasons.append("pixel data differs after copying")
                return report
        report.destination = key
        return report
    finally:
        report.seconds = round(time.perf_counter() - started, 4)


def _target_key(report: FileReport, dst_key: str, held_key: str | None) -> str | None:
    if report.verdict is Verdict.PASSED:
        return dst_key
    if report.verdict is Verdict.HELD and held_key is not None:
        return held_key
    return None
