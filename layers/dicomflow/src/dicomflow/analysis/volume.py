"""Assemble a 4D-CT scan into one HU volume per respiratory phase.

Files are grouped into phases by series and temporal position (Temporal Position Identifier of a
single-frame image, Temporal Position Index of an enhanced multi-frame frame), sorted by position
along the slice normal, rescaled to Hounsfield units and checked: one orientation, one matrix, unique
positions, uniform spacing, and the same slice positions in every phase. A phase is an int16 array
(2 bytes a voxel), never float64.

Reading is the hot part of an analysis (1500 files for a 10-phase scan), so it is done in two steps:

1. every file's header is read (:func:`read_frames` over the first bytes of the file, with the
   byte-level reader of :mod:`dicomflow.dicom.elements`; pydicom only for files that reader does not
   handle) into :class:`Frame` records that say where each frame's stored pixels are (file, offset,
   type, rescale), and :func:`plan_phases` groups, orders and checks them: the whole scan's geometry
   is known, and refused if wrong, before a pixel is read;
2. a phase's pixels are then read straight into a preallocated volume (:func:`read_phase`; the
   stored bytes land in their slice of the array, rescaled there in place), so that a scan is read
   one phase at a time into buffers that are reused.

The pixel bytes are taken as they are stored (no decoding step) and only uncompressed transfer
syntaxes are accepted, which is what the scanner and the de-identifier produce.
"""

from __future__ import annotations

import io
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

import numpy as np

from dicomflow.dicom.elements import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    Buffer,
    Element,
    RawHeader,
    Unsupported,
    read_raw_header,
)
from dicomflow.errors import AnalysisError

#: Relative tolerance on slice spacing before a phase is refused as non-uniform.
SPACING_TOLERANCE = 0.01
_PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*%")
HU_MIN, HU_MAX = -32768, 32767
_STORED_DTYPES = {(16, False): "<u2", (16, True): "<i2", (8, False): "u1", (8, True): "i1"}
_NATIVE_SYNTAXES = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN})

#: Fills each buffer with the bytes of object ``key`` from ``offset`` (see reading.py).
Fetch = Callable[[list[tuple[str, int, memoryview]]], None]


class SourceHeader:
    """One source file's header: its bytes as read, parsed by pydicom only if an output needs the
    whole data set (the SEG of the inhale phase, the first instance of the SR's evidence).

    Keeping bytes rather than 1500 pydicom data sets keeps the read fast and small; the few that
    are needed are parsed when asked for, once.
    """

    __slots__ = (
        "_data",
        "_dataset",
        "series_instance_uid",
        "sop_class_uid",
        "sop_instance_uid",
        "study_instance_uid",
    )

    def __init__(
        self,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        study_instance_uid: str,
        series_instance_uid: str,
        data: bytes | None = None,
        dataset: Any = None,
    ) -> None:
        self._data = data
        self._dataset = dataset
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid
        self.study_instance_uid = study_instance_uid
        self.series_instance_uid = series_instance_uid

    @property
    def dataset(self) -> Any:
        """The file's attributes (a pydicom ``Dataset``), without Pixel Data."""
        if self._dataset is None:
            from pydicom import dcmread

            if self._data is None:
                raise AnalysisError("a source header was released before an output needed it")
            self._dataset = dcmread(io.BytesIO(self._data), stop_before_pixels=True)
            self._data = None
        return self._dataset

    def release(self) -> None:
        """Forget the header's bytes (its UIDs stay): no output will need the whole data set."""
        self._data = None

    def evidence(self) -> Any:
        """The four UIDs by which a report lists this instance as evidence (a small ``Dataset``)."""
        from pydicom.dataset import Dataset

        ds = Dataset()
        ds.SOPClassUID = self.sop_class_uid
        ds.SOPInstanceUID = self.sop_instance_uid
        ds.StudyInstanceUID = self.study_instance_uid
        ds.SeriesInstanceUID = self.series_instance_uid
        return ds


@dataclass(frozen=True)
class StoredPixels:
    """Where one frame's stored values are in its file, and how they become HU."""

    key: str
    offset: int
    dtype: str  # numpy dtype of the stored values: "<u2", "<i2", "u1", "i1"
    slope: float
    intercept: float


@dataclass(frozen=True)
class Frame:
    """One image plane of a file: where it lies, which phase it belongs to, and its pixels (in
    memory as HU, or where they are stored)."""

    series_instance_uid: str
    sop_instance_uid: str
    frame_number: int | None  # 1-based in an enhanced multi-frame file; None for a single frame
    temporal_position: int | None
    phase_percent: float | None
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]  # row spacing, column spacing (mm)
    rows: int
    columns: int
    header: SourceHeader = field(repr=False, compare=False)
    label: str = ""  # Series Description
    slice_thickness: float | None = None
    stored: StoredPixels | None = field(default=None, repr=False)
    hu: np.ndarray | None = field(default=None, repr=False, compare=False)  # int16 [rows, columns]

    @property
    def phase_key(self) -> tuple[str, int, str]:
        # Enhanced files without a temporal index are one phase each: key them by instance.
        if self.temporal_position is None and self.frame_number is not None:
            return (self.series_instance_uid, -1, self.sop_instance_uid)
        return (
            self.series_instance_uid,
            -1 if self.temporal_position is None else self.temporal_position,
            "",
        )


@dataclass(frozen=True)
class Phase:
    """One respiratory phase, slices ordered along the normal (increasing).

    ``hu`` is set by :func:`assemble` (in memory); the pipeline reads a planned phase's pixels
    with :func:`read_phase` into a buffer of its own instead.
    """

    index: int
    label: str
    percent: float | None
    series_instance_uid: str
    positions: np.ndarray  # float64 [slices, 3]
    orientation: tuple[float, ...]
    spacing_mm: tuple[float, float, float]  # slice, row, column
    frames: tuple[Frame, ...] = field(repr=False)  # source frames in slice order
    shape: tuple[int, int, int] = (0, 0, 0)  # slices, rows, columns
    hu: np.ndarray | None = field(default=None, repr=False)  # int16 [slices, rows, columns]

    @property
    def voxel_volume_ml(self) -> float:
        s, r, c = self.spacing_mm
        return s * r * c / 1000.0

    @property
    def headers(self) -> list[SourceHeader]:
        """The distinct source files of this phase, in slice order (one if multi-frame)."""
        seen: dict[str, SourceHeader] = {}
        for frame in self.frames:
            seen.setdefault(frame.sop_instance_uid, frame.header)
        return list(seen.values())

    @property
    def source_headers(self) -> list[Any]:
        """The distinct source data sets (pydicom, without Pixel Data) of this phase, in slice order."""
        return [h.dataset for h in self.headers]


@dataclass(frozen=True)
class Scan:
    """All phases of one scan, in temporal order."""

    phases: tuple[Phase, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.phases[0].shape

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return self.phases[0].spacing_mm

    @property
    def voxel_volume_ml(self) -> float:
        return self.phases[0].voxel_volume_ml

    def evidence(self) -> list[Any]:
        """Every source instance, phase by phase in slice order, as a report's evidence: the first
        whole (a report copies the patient and study from it), the others by their UIDs."""
        headers = [h for p in self.phases for h in p.headers]
        return [headers[0].dataset, *(h.evidence() for h in headers[1:])]

    def release_headers(self, keep: int) -> None:
        """Forget the header bytes that no output needs: all but phase ``keep``'s (the SEG's
        sources) and the first instance (the report's first evidence); about 50 MB at 1500 files."""
        first = self.phases[0].frames[0].header
        for phase in self.phases:
            if phase.index != keep:
                for header in phase.headers:
                    if header is not first:
                        header.release()


# -- reading a file's header ---------------------------------------------------------------------


class LastHeader(threading.local):
    """The header a thread read last, which the next file of the series is read against
    (:func:`~dicomflow.dicom.elements.read_raw_header`'s ``like``: only the elements whose bytes
    differ are parsed; the frames come out the same)."""

    header: RawHeader | None = None


def read_frames(
    source: bytes | BinaryIO | Buffer,
    key: str = "",
    *,
    with_pixels: bool | None = None,
    last: LastHeader | None = None,
) -> list[Frame]:
    """Every frame of one DICOM file. Pure: bytes in, frames out (``last``, if given, is read
    against and then holds this file's header).

    ``source`` is the whole file (bytes or a file object: the frames then carry their HU pixels,
    ``hu``), or a :class:`~dicomflow.dicom.elements.Buffer` over its first bytes that reads more on
    demand (the frames then say where their pixels are, ``stored``, and hold none). Files the
    byte-level reader does not handle (no preamble, big endian, deflated, ...) are read whole with
    pydicom, their pixels in memory.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> frames = read_frames(open(get_testdata_file("CT_small.dcm"), "rb").read())
    >>> len(frames), frames[0].hu.dtype, frames[0].hu.shape
    (1, dtype('int16'), (128, 128))
    """
    if isinstance(source, Buffer):
        buf = source
        in_memory = buf.complete if with_pixels is None else with_pixels
    else:
        data = source if isinstance(source, bytes | bytearray) else source.read()
        buf = Buffer(data, len(data))
        in_memory = True if with_pixels is None else with_pixels
    try:
        raw = read_raw_header(buf, like=last.header if last is not None else None)
    except Unsupported:
        return _pydicom_frames(_whole(buf))
    if raw.transfer_syntax not in _NATIVE_SYNTAXES:
        raise AnalysisError(
            f"transfer syntax {raw.transfer_syntax} is not supported for analysis; send uncompressed data"
        )
    try:
        attributes = _Attributes.of(raw)
    except Unsupported:
        return _pydicom_frames(_whole(buf))
    header = SourceHeader(
        sop_class_uid=str(attributes.get("SOPClassUID", "")),
        sop_instance_uid=str(attributes.get("SOPInstanceUID", "")),
        study_instance_uid=str(attributes.get("StudyInstanceUID", "")),
        series_instance_uid=str(attributes.get("SeriesInstanceUID", "")),
        data=bytes(buf.data[: raw.header_end]),
    )
    if raw.pixel_tag != 0x7FE00010 or raw.pixel_value_offset is None:
        raise AnalysisError("a scan file has no Pixel Data")
    layout = _pixel_layout(attributes, raw.pixel_length or 0)
    frames = _frames(attributes, header, key, raw.pixel_value_offset, layout)
    if last is not None and raw.layout is not None:
        last.header = raw
    if in_memory:
        frames = [replace(f, hu=_frame_hu(f, buf)) for f in frames]
    return frames


def _whole(buf: Buffer) -> bytes:
    if buf.complete:
        return bytes(buf.data)
    buf.need(buf.size)
    return bytes(buf.data)


def _frame_hu(frame: Frame, buf: Buffer) -> np.ndarray:
    assert frame.stored is not None
    dtype = np.dtype(frame.stored.dtype)
    count = frame.rows * frame.columns
    start = frame.stored.offset
    stored = np.frombuffer(buf.read(start, start + count * dtype.itemsize), dtype=dtype)
    return _to_hu(stored.reshape(frame.rows, frame.columns), frame.stored.slope, frame.stored.intercept)


class _Attributes:
    """The few attributes the analysis reads, from byte-level elements, with pydicom's values.

    ``get(keyword)`` answers as a pydicom ``Dataset`` does (the same value conversion: pydicom's
    own, on the raw bytes), and a sequence as a list of :class:`_Attributes`, so that the frame
    extraction below reads either kind of header the same way.
    """

    __slots__ = ("_elements", "_encodings")

    def __init__(self, elements: list[Element], encodings: list[str]) -> None:
        self._elements = {e.tag: e for e in elements}
        self._encodings = encodings

    @classmethod
    def of(cls, raw: RawHeader) -> _Attributes:
        from pydicom.charset import convert_encodings

        top = cls(raw.dataset, [])
        charset = top.get("SpecificCharacterSet")
        if charset:
            values = [charset] if isinstance(charset, str) else list(charset)
            top._encodings = convert_encodings(values)
        return top

    def get(self, keyword: str, default: Any = None) -> Any:
        tag = _TAGS.get(keyword)
        if tag is None:
            from pydicom.datadict import tag_for_keyword

            tag = _TAGS[keyword] = tag_for_keyword(keyword) or -1
        element = self._elements.get(tag)
        if element is None:
            return default
        if element.vr == "SQ":
            return [_Attributes(item, self._encodings) for item in element.items or []]
        # The slices of a series repeat most values byte for byte: each is converted once.
        memo: tuple[str | bytes, ...] = (element.vr, element.value, *self._encodings)
        value = _CONVERTED.get(memo, _MISSING)
        if value is _MISSING:
            if len(_CONVERTED) > 100_000:
                _CONVERTED.clear()
            value = _CONVERTED[memo] = _convert(element, self._encodings)
        return value

    def __contains__(self, keyword: str) -> bool:
        return self.get(keyword) is not None


_TAGS: dict[str, int] = {}
_CONVERTED: dict[tuple[str | bytes, ...], Any] = {}
_MISSING = object()


def _convert(element: Element, encodings: list[str]) -> Any:
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag
    from pydicom.values import convert_value

    vr = element.vr
    if " or " in vr:
        vr = vr.split(" or ")[0]  # the attributes read here are unambiguous; never pixel values
    if not element.value:
        return None if vr in ("DS", "IS", "US", "SS", "UL", "SL", "FL", "FD") else ""
    raw = RawDataElement(Tag(element.tag), vr, len(element.value), element.value, 0, False, True)
    try:
        return convert_value(vr, raw, encodings or None)
    except Exception:  # noqa: BLE001 - pydicom raises many types; pydicom then reads the file whole
        raise Unsupported("an attribute's value cannot be converted") from None


@dataclass(frozen=True)
class _PixelLayout:
    rows: int
    columns: int
    frames: int
    dtype: str


def _pixel_layout(ds: Any, pixel_length: int) -> _PixelLayout:
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise AnalysisError("only monochrome CT images can be analysed")
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(ds.get("BitsAllocated") or 0)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    dtype = _STORED_DTYPES.get((bits, signed))
    if dtype is None:
        raise AnalysisError(f"{bits}-bit pixels are not supported for analysis")
    expected = rows * cols * n_frames * bits // 8
    if pixel_length < expected:
        raise AnalysisError(f"Pixel Data holds {pixel_length} bytes, {expected} expected")
    return _PixelLayout(rows, cols, n_frames, dtype)


def _frames(ds: Any, header: SourceHeader, key: str, pixel_offset: int, layout: _PixelLayout) -> list[Frame]:
    """The frames of one file's header ``ds`` (a pydicom ``Dataset`` or :class:`_Attributes`)."""
    frame_bytes = layout.rows * layout.columns * np.dtype(layout.dtype).itemsize
    common: dict[str, Any] = {
        "series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "phase_percent": _phase_percent(ds),
        "rows": layout.rows,
        "columns": layout.columns,
        "header": header,
        "label": str(ds.get("SeriesDescription", "") or ""),
        "slice_thickness": _float_or_none(ds.get("SliceThickness")),
    }
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None:
        if layout.frames != 1:
            raise AnalysisError(
                "a multi-frame file without per-frame functional groups cannot be placed in space"
            )
        return [
            Frame(
                frame_number=None,
                temporal_position=_int_or_none(ds.get("TemporalPositionIdentifier")),
                position=_triplet(ds, "ImagePositionPatient"),
                orientation=_orientation(ds),
                pixel_spacing=_spacing(ds),
                stored=StoredPixels(
                    key,
                    pixel_offset,
                    layout.dtype,
                    float(ds.get("RescaleSlope", 1)),
                    float(ds.get("RescaleIntercept", 0)),
                ),
                **common,
            )
        ]
    shared_items = ds.get("SharedFunctionalGroupsSequence") or []
    shared = shared_items[0] if shared_items else None
    if len(per_frame) != layout.frames:
        raise AnalysisError("the number of per-frame functional groups differs from Number of Frames")
    frames = []
    for number, item in enumerate(per_frame, start=1):
        transform = _optional_group(item, shared, "PixelValueTransformationSequence")
        content = _optional_group(item, shared, "FrameContentSequence")
        measures = _group(item, shared, "PixelMeasuresSequence", number)
        slope = transform.get("RescaleSlope", 1) if transform else ds.get("RescaleSlope", 1)
        intercept = transform.get("RescaleIntercept", 0) if transform else ds.get("RescaleIntercept", 0)
        frames.append(
            Frame(
                frame_number=number,
                temporal_position=_int_or_none(content.get("TemporalPositionIndex")) if content else None,
                position=_triplet(
                    _group(item, shared, "PlanePositionSequence", number), "ImagePositionPatient"
                ),
                orientation=_orientation(_group(item, shared, "PlaneOrientationSequence", number)),
                pixel_spacing=_spacing(measures),
                stored=StoredPixels(
                    key,
                    pixel_offset + (number - 1) * frame_bytes,
                    layout.dtype,
                    float(slope),
                    float(intercept),
                ),
                **common,
            )
        )
    return frames


def _group(item: Any, shared: Any, keyword: str, number: int) -> Any:
    found = _optional_group(item, shared, keyword)
    if found is None:
        raise AnalysisError(f"frame {number} lacks {keyword} (neither per-frame nor shared)")
    return found


def _optional_group(item: Any, shared: Any, keyword: str) -> Any:
    for source in (item, shared):
        if source is None:
            continue
        value = source.get(keyword)
        if value:
            return value[0]
    return None


def _pydicom_frames(data: bytes) -> list[Frame]:
    """A file the byte-level reader does not handle, read whole by pydicom (pixels in memory)."""
    from pydicom import dcmread
    from pydicom.uid import ExplicitVRBigEndian

    try:
        ds = dcmread(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for unreadable files
        raise AnalysisError(f"a scan file is not readable DICOM ({exc.__class__.__name__})") from None
    if "PixelData" not in ds:
        raise AnalysisError("a scan file has no Pixel Data")
    tsuid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsuid is not None and (tsuid.is_compressed or tsuid == ExplicitVRBigEndian):
        raise AnalysisError(f"transfer syntax {tsuid} is not supported for analysis; send uncompressed data")
    layout = _pixel_layout(ds, len(ds.PixelData))
    pixels = ds.PixelData
    # The header travels with the frames; the pixel bytes do not, nor the file's buffer, which
    # pydicom keeps on a dataset read from memory (it would double the scan's size in RAM).
    del ds.PixelData
    if getattr(ds, "buffer", None) is not None:
        ds.buffer = None
    header = SourceHeader(
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        dataset=ds,
    )
    frames = _frames(ds, header, "", 0, layout)
    buf = Buffer(pixels, len(pixels))
    return [replace(f, hu=_frame_hu(f, buf), stored=None) for f in frames]


# -- HU -------------------------------------------------------------------------------------------


def _to_hu(stored: np.ndarray, slope: Any, intercept: Any) -> np.ndarray:
    slope_f, intercept_f = float(slope), float(intercept)
    if slope_f == 1.0 and intercept_f.is_integer():
        hu = stored.astype(np.int32)
        hu += int(intercept_f)
    else:
        hu = np.rint(stored.astype(np.float32) * np.float32(slope_f) + np.float32(intercept_f))
    return np.clip(hu, HU_MIN, HU_MAX).astype(np.int16)


def _rescale_in_place(volume: np.ndarray, dtype: str, slope: float, intercept: float) -> None:
    """Stored 16-bit values, already in ``volume`` (int16 memory), made HU where they lie.

    The same numbers as :func:`_to_hu` (stored + intercept, clipped to int16), without its int32
    copy: the clip is applied first, on the stored values, where it cannot overflow (a uint16 plus a
    negative intercept never falls below -32768, so only the top needs clipping).
    """
    if slope == 1.0 and intercept.is_integer() and HU_MIN <= intercept <= HU_MAX:
        shift = int(intercept)
        if dtype == "<u2":
            values = volume.view(np.uint16)
            if HU_MAX - shift < 65535:
                np.minimum(values, np.uint16(HU_MAX - shift), out=values)
            np.add(values, np.uint16(shift % 65536), out=values)  # wraps onto the int16 result
            return
        if shift > 0:
            np.minimum(volume, np.int16(HU_MAX - shift), out=volume)
        elif shift < 0:
            np.maximum(volume, np.int16(HU_MIN - shift), out=volume)
        if shift:
            np.add(volume, np.int16(shift), out=volume)
        return
    for i in range(volume.shape[0]):  # one slice at a time: the float32 copy stays small
        volume[i] = _to_hu(volume[i].view(np.dtype(dtype)), slope, intercept)


def read_phase(phase: Phase, fetch: Fetch, out: np.ndarray) -> np.ndarray:
    """The phase's HU volume, read into ``out`` (int16, at least the phase's shape): each frame's
    stored bytes straight into its slice (one ``fetch`` call for the whole phase, so that a store
    can overlap the reads), then rescaled there. Returns the filled view of ``out``."""
    volume = out[: phase.shape[0]]
    if volume.shape != phase.shape or volume.dtype != np.int16 or not volume.flags.c_contiguous:
        raise ValueError("the buffer does not fit the phase")
    requests: list[tuple[str, int, memoryview]] = []
    narrow: list[tuple[int, np.ndarray, StoredPixels]] = []  # 8-bit frames: read aside, then widened
    runs: list[tuple[int, int, StoredPixels]] = []  # consecutive 16-bit frames with one rescale
    for i, frame in enumerate(phase.frames):
        if frame.hu is not None:
            volume[i] = frame.hu
            continue
        stored = frame.stored
        assert stored is not None
        if np.dtype(stored.dtype).itemsize != 2:
            raw = np.empty((frame.rows, frame.columns), dtype=stored.dtype)
            requests.append((stored.key, stored.offset, memoryview(raw).cast("B")))  # type: ignore[arg-type]
            narrow.append((i, raw, stored))
            continue
        requests.append((stored.key, stored.offset, memoryview(volume[i]).cast("B")))
        if runs and runs[-1][1] == i and _same_rescale(runs[-1][2], stored):
            runs[-1] = (runs[-1][0], i + 1, runs[-1][2])
        else:
            runs.append((i, i + 1, stored))
    if requests:
        fetch(requests)
    for i, raw, stored in narrow:
        volume[i] = _to_hu(raw, stored.slope, stored.intercept)
    for start, stop, stored in runs:
        _rescale_in_place(volume[start:stop], stored.dtype, stored.slope, stored.intercept)
    return volume


def _same_rescale(a: StoredPixels, b: StoredPixels) -> bool:
    return a.dtype == b.dtype and a.slope == b.slope and a.intercept == b.intercept


# -- grouping, ordering and checking ---------------------------------------------------------------


def plan_phases(frames: Iterable[Frame]) -> Scan:
    """Group frames into phases, order slices along the normal and check the geometry; no pixels
    are read (the phases' ``hu`` stay unset unless every frame holds its pixels).

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> scan = plan_phases(read_frames(open(get_testdata_file("CT_small.dcm"), "rb").read()))
    >>> len(scan.phases), scan.shape
    (1, (1, 128, 128))
    """
    groups: dict[tuple[str, int, str], list[Frame]] = defaultdict(list)
    for frame in frames:
        groups[frame.phase_key].append(frame)
    if not groups:
        raise AnalysisError("the scan has no images")

    def order(key: tuple[str, int, str]) -> tuple[float, float, str, str]:
        first = groups[key][0]
        percent = first.phase_percent if first.phase_percent is not None else float("inf")
        return (key[1], percent, key[0], key[2])

    phases = [_phase(i, groups[key]) for i, key in enumerate(sorted(groups, key=order))]
    reference = phases[0]
    for phase in phases[1:]:
        if phase.shape != reference.shape:
            raise AnalysisError(
                f"phase {phase.index} is {phase.shape} voxels, phase 0 is {reference.shape}; "
                "every phase must cover the same slices and matrix"
            )
        if not np.allclose(phase.positions, reference.positions, atol=0.05 * reference.spacing_mm[0] + 1e-3):
            raise AnalysisError(f"phase {phase.index} does not cover the same slice positions as phase 0")
    return Scan(phases=tuple(phases))


def assemble(frames: Iterable[Frame]) -> Scan:
    """:func:`plan_phases`, then every phase's HU volume in memory (frames read with their pixels).

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> scan = assemble(read_frames(open(get_testdata_file("CT_small.dcm"), "rb").read()))
    >>> scan.phases[0].hu.shape, scan.phases[0].hu.dtype
    ((1, 128, 128), dtype('int16'))
    """
    scan = plan_phases(frames)

    def no_store(requests: list[tuple[str, int, memoryview]]) -> None:
        raise AnalysisError("a frame's pixels were not read")

    phases = []
    for phase in scan.phases:
        volume = read_phase(phase, no_store, np.empty(phase.shape, dtype=np.int16))
        phases.append(replace(phase, hu=volume, frames=tuple(replace(f, hu=None) for f in phase.frames)))
    return Scan(phases=tuple(phases))


def _phase(index: int, frames: Sequence[Frame]) -> Phase:
    first = frames[0]
    orientation = np.asarray(first.orientation, dtype=np.float64)
    for frame in frames:
        if not np.allclose(frame.orientation, orientation, atol=1e-4):
            raise AnalysisError(f"phase {index} mixes image orientations")
        if (frame.rows, frame.columns) != (first.rows, first.columns):
            raise AnalysisError(f"phase {index} mixes matrix sizes")
        if not np.allclose(frame.pixel_spacing, first.pixel_spacing, rtol=1e-4):
            raise AnalysisError(f"phase {index} mixes pixel spacings")
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([f.position for f in frames], dtype=np.float64)
    distance = positions @ normal
    ordering = np.argsort(distance, kind="stable")
    distance = distance[ordering]
    steps = np.diff(distance)
    if len(frames) > 1:
        if np.any(steps < 1e-3):
            raise AnalysisError(f"phase {index} has two images at the same position")
        spacing = float(np.median(steps))
        if np.any(np.abs(steps - spacing) > SPACING_TOLERANCE * spacing + 1e-3):
            raise AnalysisError(
                f"phase {index} has non-uniform slice spacing ({steps.min():.3f}..{steps.max():.3f} mm)"
            )
    else:
        spacing = float(first.slice_thickness or 1.0)
    ordered = tuple(frames[i] for i in ordering)
    row_spacing, col_spacing = first.pixel_spacing
    return Phase(
        index=index,
        label=first.label or f"phase {index}",
        percent=first.phase_percent,
        series_instance_uid=first.series_instance_uid,
        positions=positions[ordering],
        orientation=tuple(float(v) for v in orientation),
        spacing_mm=(spacing, float(row_spacing), float(col_spacing)),
        frames=ordered,
        shape=(len(frames), first.rows, first.columns),
    )


def _phase_percent(ds: Any) -> float | None:
    value = ds.get("NominalPercentageOfRespiratoryPhase")
    if value is None and ds.get("PerFrameFunctionalGroupsSequence") is not None:
        for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            items = ds.get(seq) or []
            if items and items[0].get("RespiratorySynchronizationSequence"):
                sync = items[0].get("RespiratorySynchronizationSequence")[0]
                value = sync.get("NominalPercentageOfRespiratoryPhase")
                break
    if value is not None and value != "":
        return float(value)
    match = _PERCENT_RE.search(str(ds.get("SeriesDescription", "") or ""))
    return float(match.group(1)) if match else None


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _triplet(ds: Any, keyword: str) -> tuple[float, float, float]:
    value = ds.get(keyword)
    if value is None or isinstance(value, str | float | int) or len(value) != 3:
        raise AnalysisError(f"an image lacks {keyword}; it cannot be placed in the volume")
    return (float(value[0]), float(value[1]), float(value[2]))


def _orientation(ds: Any) -> tuple[float, ...]:
    value = ds.get("ImageOrientationPatient")
    if value is None or isinstance(value, str | float | int) or len(value) != 6:
        raise AnalysisError("an image lacks Image Orientation (Patient); it cannot be placed in the volume")
    return tuple(float(v) for v in value)


def _spacing(ds: Any) -> tuple[float, float]:
    value = ds.get("PixelSpacing")
    if (
        value is None
        or isinstance(value, str | float | int)
        or len(value) != 2
        or min(float(v) for v in value) <= 0
    ):
        raise AnalysisError("an image lacks a valid Pixel Spacing; volumes cannot be measured")
    return (float(value[0]), float(value[1]))
