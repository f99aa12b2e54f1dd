"""Assemble a 4D-CT scan into one HU volume per respiratory phase.

Files are grouped into phases by series and temporal position (Temporal Position Identifier of a
single-frame image, Temporal Position Index of an enhanced multi-frame frame), sorted by position
along the slice normal, rescaled to Hounsfield units and checked: one orientation, one matrix, unique
positions, uniform spacing, and the same slice positions in every phase. Memory stays bounded: a
phase is an int16 array (2 bytes a voxel), never float64.

Reading is the hot part of an analysis (1500 files for a 10-phase scan): the pixel bytes are taken
as they are stored (``np.frombuffer`` on Pixel Data, no decoding step) and only uncompressed
transfer syntaxes are accepted, which is what the scanner and the de-identifier produce.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian

from dicomflow.errors import AnalysisError

#: Relative tolerance on slice spacing before a phase is refused as non-uniform.
SPACING_TOLERANCE = 0.01
_PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*%")
HU_MIN, HU_MAX = -32768, 32767


@dataclass(frozen=True)
class Frame:
    """One image plane of a file: where it lies, which phase it belongs to, and its HU pixels."""

    series_instance_uid: str
    sop_instance_uid: str
    frame_number: int | None  # 1-based in an enhanced multi-frame file; None for a single frame
    temporal_position: int | None
    phase_percent: float | None
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]  # row spacing, column spacing (mm)
    hu: np.ndarray  # int16 [rows, columns]
    header: Dataset = field(repr=False, compare=False)  # the file's attributes, without Pixel Data

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
    """One respiratory phase as a volume, slices ordered along the normal (increasing)."""

    index: int
    label: str
    percent: float | None
    series_instance_uid: str
    hu: np.ndarray  # int16 [slices, rows, columns]
    positions: np.ndarray  # float64 [slices, 3]
    orientation: tuple[float, ...]
    spacing_mm: tuple[float, float, float]  # slice, row, column
    frames: tuple[Frame, ...] = field(repr=False)  # source frames in slice order, pixels released

    @property
    def voxel_volume_ml(self) -> float:
        s, r, c = self.spacing_mm
        return s * r * c / 1000.0

    @property
    def source_headers(self) -> list[Dataset]:
        """The distinct source datasets of this phase, in slice order (one if multi-frame)."""
        seen: dict[str, Dataset] = {}
        for frame in self.frames:
            seen.setdefault(frame.sop_instance_uid, frame.header)
        return list(seen.values())


@dataclass(frozen=True)
class Scan:
    """All phases of one scan, in temporal order."""

    phases: tuple[Phase, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        s, r, c = self.phases[0].hu.shape
        return (s, r, c)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return self.phases[0].spacing_mm

    @property
    def voxel_volume_ml(self) -> float:
        return self.phases[0].voxel_volume_ml


def read_frames(source: bytes | BinaryIO) -> list[Frame]:
    """Every frame of one DICOM file, with HU pixels (int16). Pure: bytes in, frames out.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> frames = read_frames(open(get_testdata_file("CT_small.dcm"), "rb").read())
    >>> len(frames), frames[0].hu.dtype, frames[0].hu.shape
    (1, dtype('int16'), (128, 128))
    """
    fp = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        ds = dcmread(fp)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for unreadable files
        raise AnalysisError(f"a scan file is not readable DICOM ({exc.__class__.__name__})") from None
    if "PixelData" not in ds:
        raise AnalysisError("a scan file has no Pixel Data")
    tsuid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsuid is not None and (tsuid.is_compressed or tsuid == ExplicitVRBigEndian):
        raise AnalysisError(f"transfer syntax {tsuid} is not supported for analysis; send uncompressed data")
    rows, cols = int(ds.Rows), int(ds.Columns)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = _stored_pixels(ds, rows, cols, n_frames)
    # The header travels with the frames; the pixel bytes do not, nor the file's buffer, which
    # pydicom keeps on a dataset read from memory (it would double the scan's size in RAM).
    del ds.PixelData
    if getattr(ds, "buffer", None) is not None:
        ds.buffer = None
    if "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_frames(ds, pixels)
    if n_frames != 1:
        raise AnalysisError(
            "a multi-frame file without per-frame functional groups cannot be placed in space"
        )
    return [
        Frame(
            series_instance_uid=str(ds.SeriesInstanceUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            frame_number=None,
            temporal_position=_int_or_none(ds.get("TemporalPositionIdentifier")),
            phase_percent=_phase_percent(ds),
            position=_triplet(ds, "ImagePositionPatient"),
            orientation=_orientation(ds),
            pixel_spacing=_spacing(ds),
            hu=_to_hu(pixels[0], ds.get("RescaleSlope", 1), ds.get("RescaleIntercept", 0)),
            header=ds,
        )
    ]


def _stored_pixels(ds: Dataset, rows: int, cols: int, n_frames: int) -> np.ndarray:
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise AnalysisError("only monochrome CT images can be analysed")
    bits = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    dtype = {(16, False): "<u2", (16, True): "<i2", (8, False): "u1", (8, True): "i1"}.get((bits, signed))
    if dtype is None:
        raise AnalysisError(f"{bits}-bit pixels are not supported for analysis")
    data = ds.PixelData
    expected = rows * cols * n_frames * bits // 8
    if len(data) < expected:
        raise AnalysisError(f"Pixel Data holds {len(data)} bytes, {expected} expected")
    return np.frombuffer(data, dtype=dtype, count=rows * cols * n_frames).reshape(n_frames, rows, cols)


def _to_hu(stored: np.ndarray, slope: Any, intercept: Any) -> np.ndarray:
    slope_f, intercept_f = float(slope), float(intercept)
    if slope_f == 1.0 and intercept_f.is_integer():
        hu = stored.astype(np.int32)
        hu += int(intercept_f)
    else:
        hu = np.rint(stored.astype(np.float32) * np.float32(slope_f) + np.float32(intercept_f))
    return np.clip(hu, HU_MIN, HU_MAX).astype(np.int16)


def _enhanced_frames(ds: Dataset, pixels: np.ndarray) -> list[Frame]:
    shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if len(per_frame) != pixels.shape[0]:
        raise AnalysisError("the number of per-frame functional groups differs from Number of Frames")
    frames = []
    for number, item in enumerate(per_frame, start=1):

        def group(keyword: str, item: Dataset = item, number: int = number) -> Dataset:
            for source in (item, shared):
                if keyword in source and len(source[keyword].value):
                    return source[keyword].value[0]
            raise AnalysisError(f"frame {number} lacks {keyword} (neither per-frame nor shared)")

        transform = _optional_group(item, shared, "PixelValueTransformationSequence")
        content = _optional_group(item, shared, "FrameContentSequence")
        measures = group("PixelMeasuresSequence")
        frames.append(
            Frame(
                series_instance_uid=str(ds.SeriesInstanceUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                frame_number=number,
                temporal_position=_int_or_none(content.get("TemporalPositionIndex")) if content else None,
                phase_percent=_phase_percent(ds),
                position=_triplet(group("PlanePositionSequence"), "ImagePositionPatient"),
                orientation=_orientation(group("PlaneOrientationSequence")),
                pixel_spacing=_spacing(measures),
                hu=_to_hu(
                    pixels[number - 1],
                    transform.get("RescaleSlope", 1) if transform else ds.get("RescaleSlope", 1),
                    transform.get("RescaleIntercept", 0) if transform else ds.get("RescaleIntercept", 0),
                ),
                header=ds,
            )
        )
    return frames


def _optional_group(item: Dataset, shared: Dataset, keyword: str) -> Dataset | None:
    for source in (item, shared):
        if keyword in source and len(source[keyword].value):
            value: Dataset = source[keyword].value[0]
            return value
    return None


def assemble(frames: Iterable[Frame]) -> Scan:
    """Group frames into phases, order slices along the normal and check the geometry.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> scan = assemble(read_frames(open(get_testdata_file("CT_small.dcm"), "rb").read()))
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

    # Popped one phase at a time, so that a phase's slices are freed once its volume exists.
    phases = [_phase(i, groups.pop(key)) for i, key in enumerate(sorted(groups, key=order))]
    reference = phases[0]
    for phase in phases[1:]:
        if phase.hu.shape != reference.hu.shape:
            raise AnalysisError(
                f"phase {phase.index} is {phase.hu.shape} voxels, phase 0 is {reference.hu.shape}; "
                "every phase must cover the same slices and matrix"
            )
        if not np.allclose(phase.positions, reference.positions, atol=0.05 * reference.spacing_mm[0] + 1e-3):
            raise AnalysisError(f"phase {phase.index} does not cover the same slice positions as phase 0")
    return Scan(phases=tuple(phases))


def _phase(index: int, frames: Sequence[Frame]) -> Phase:
    first = frames[0]
    orientation = np.asarray(first.orientation, dtype=np.float64)
    for frame in frames:
        if not np.allclose(frame.orientation, orientation, atol=1e-4):
            raise AnalysisError(f"phase {index} mixes image orientations")
        if frame.hu.shape != first.hu.shape:
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
        spacing = float(first.header.get("SliceThickness", 1.0) or 1.0)
    ordered = [frames[i] for i in ordering]
    volume = np.empty((len(frames), *first.hu.shape), dtype=np.int16)
    for i, frame in enumerate(ordered):
        volume[i] = frame.hu
    row_spacing, col_spacing = first.pixel_spacing
    label = str(first.header.get("SeriesDescription", "") or f"phase {index}")
    return Phase(
        index=index,
        label=label,
        percent=first.phase_percent,
        series_instance_uid=first.series_instance_uid,
        hu=volume,
        positions=positions[ordering],
        orientation=tuple(float(v) for v in orientation),
        spacing_mm=(spacing, float(row_spacing), float(col_spacing)),
        # Drop each frame's pixels: the volume holds them now, and memory must not double.
        frames=tuple(_without_pixels(f) for f in ordered),
    )


_EMPTY = np.zeros((0, 0), dtype=np.int16)


def _without_pixels(frame: Frame) -> Frame:
    return Frame(**{**frame.__dict__, "hu": _EMPTY})


def _phase_percent(ds: Dataset) -> float | None:
    value = ds.get("NominalPercentageOfRespiratoryPhase")
    if value is None and "PerFrameFunctionalGroupsSequence" in ds:
        for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            items = ds.get(seq) or []
            if items and "RespiratorySynchronizationSequence" in items[0]:
                sync = items[0].RespiratorySynchronizationSequence[0]
                value = sync.get("NominalPercentageOfRespiratoryPhase")
                break
    if value is not None:
        return float(value)
    match = _PERCENT_RE.search(str(ds.get("SeriesDescription", "")))
    return float(match.group(1)) if match else None


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _triplet(ds: Dataset, keyword: str) -> tuple[float, float, float]:
    value = ds.get(keyword)
    if value is None or len(value) != 3:
        raise AnalysisError(f"an image lacks {keyword}; it cannot be placed in the volume")
    return (float(value[0]), float(value[1]), float(value[2]))


def _orientation(ds: Dataset) -> tuple[float, ...]:
    value = ds.get("ImageOrientationPatient")
    if value is None or len(value) != 6:
        raise AnalysisError("an image lacks Image Orientation (Patient); it cannot be placed in the volume")
    return tuple(float(v) for v in value)


def _spacing(ds: Dataset) -> tuple[float, float]:
    value = ds.get("PixelSpacing")
    if value is None or len(value) != 2 or min(float(v) for v in value) <= 0:
        raise AnalysisError("an image lacks a valid Pixel Spacing; volumes cannot be measured")
    return (float(value[0]), float(value[1]))
