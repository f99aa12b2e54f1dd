"""Rules over a scan as a whole, computed from small per-file summaries.

Validation of a scan runs in two steps so that a workflow's Map step can fan out: each file is read
once and reduced to a :class:`FileSummary` (a few hundred bytes for a slice, a float per frame for a
multi-frame file), then :func:`check_scan` looks at all summaries together: one patient and one study,
one frame of reference per phase (series), consistent orientation, pixel spacing and matrix, the same
number of slices in every phase, and slice positions that are unique and evenly spaced along the
slice normal. Single-frame series and enhanced multi-frame files (per-frame functional groups) give
the same kind of summary.

Summaries carry no patient values: patient identity (Patient ID, issuer, name, birth date) and the
instance UIDs are reduced to salted SHA-256 digests, compared only for equality. Use one salt per
scan (random, or a secret): an unsalted digest of a short Patient ID could be brute-forced.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from dicomflow.manifest import DeviceSettings
from dicomflow.validation.file_rules import _Malformed, read_value
from dicomflow.validation.findings import Finding, Severity
from dicomflow.validation.sop_classes import ENHANCED_MULTIFRAME_SOP_CLASSES

#: Direction cosines may differ by this much and still count as the same orientation.
ORIENTATION_TOLERANCE = 1e-3
#: Two slice positions closer than this (mm) are the same position.
POSITION_TOLERANCE_MM = 0.01
#: Relative tolerance on pixel spacing and on the gaps between slices.
RELATIVE_TOLERANCE = 0.01

_Vector = tuple[float, ...]


def identity_hash(value: str, salt: str = "") -> str:
    """A salted SHA-256 digest (16 hex digits) of ``value``: equal values, equal digests.

    Examples
    --------
    >>> identity_hash("PAT-001", salt="scan-1") == identity_hash("PAT-001", salt="scan-1")
    True
    >>> identity_hash("PAT-001", salt="scan-1") == identity_hash("PAT-002", salt="scan-1")
    False
    """
    return hashlib.sha256(f"{salt}\x00{value}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FileSummary:
    """The few attributes of one file that the scan rules compare (no patient values).

    ``positions`` and ``temporal_positions`` have one entry per frame (one for a single-frame file):
    the position along the slice normal in mm, and the temporal position index (None if absent).
    """

    name: str
    patient: str | None = None
    study: str | None = None
    series: str | None = None
    frame_of_reference: str | None = None
    sop_instance: str | None = None
    sop_class: str | None = None
    rows: int | None = None
    columns: int | None = None
    pixel_spacing: _Vector | None = None
    orientation: _Vector | None = None
    positions: tuple[float, ...] = ()
    temporal_positions: tuple[int | None, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileSummary:
        def tup(value: Any) -> Any:
            return tuple(value) if isinstance(value, list) else value

        fields = {k: tup(v) for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**fields)


# -- extraction ----------------------------------------------------------------------------------


def summarize(dataset: Dataset, name: str, *, salt: str = "") -> tuple[FileSummary, list[Finding]]:
    """Reduce a file's header dataset to its :class:`FileSummary`, with findings on its geometry.

    Never raises on malformed content: what cannot be read is left out of the summary and reported
    as a finding (``GEOMETRY_MISSING``, ``ELEMENT_MALFORMED``, ``ORIENTATION_INCONSISTENT``).

    Examples
    --------
    >>> from pydicom import dcmread
    >>> from pydicom.data import get_testdata_file
    >>> summary, findings = summarize(dcmread(get_testdata_file("CT_small.dcm")), "ct.dcm", salt="s")
    >>> summary.rows, summary.columns, len(summary.positions), findings
    (128, 128, 1, [])
    """
    findings: list[Finding] = []

    def value(ds: Dataset | None, keyword: str) -> Any:
        try:
            return read_value(ds, keyword)
        except _Malformed:
            findings.append(
                Finding("ELEMENT_MALFORMED", f"{keyword} cannot be read as its VR requires", keyword)
            )
            return None

    def hashed(*keywords: str) -> str | None:
        values = [value(dataset, kw) for kw in keywords]
        if all(v is None for v in values):
            return None
        return identity_hash("\x1f".join("" if v is None else str(v) for v in values), salt)

    sop_class = value(dataset, "SOPClassUID")
    fields: dict[str, Any] = {
        "name": name,
        "patient": hashed("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate"),
        "study": hashed("StudyInstanceUID"),
        "series": hashed("SeriesInstanceUID"),
        "frame_of_reference": hashed("FrameOfReferenceUID"),
        "sop_instance": hashed("SOPInstanceUID"),
        "sop_class": None if sop_class is None else str(sop_class),
        "rows": _int(value(dataset, "Rows")),
        "columns": _int(value(dataset, "Columns")),
    }
    try:
        if (
            fields["sop_class"] in ENHANCED_MULTIFRAME_SOP_CLASSES
            or "PerFrameFunctionalGroupsSequence" in dataset
        ):
            geometry = _multiframe_geometry(dataset, value, findings)
        else:
            geometry = _single_frame_geometry(dataset, value, findings)
    except Exception as exc:  # noqa: BLE001 - malformed sequences are findings, never raised out
        findings.append(
            Finding("GEOMETRY_MISSING", f"the image geometry cannot be read ({exc.__class__.__name__})")
        )
        geometry = {}
    fields.update(geometry)
    return FileSummary(**fields), findings


def _single_frame_geometry(dataset: Dataset, value: Any, findings: list[Finding]) -> dict[str, Any]:
    orientation = _floats(value(dataset, "ImageOrientationPatient"), 6)
    position = _floats(value(dataset, "ImagePositionPatient"), 3)
    spacing = _floats(value(dataset, "PixelSpacing"), 2)
    missing = [
        kw
        for kw, v in (
            ("ImageOrientationPatient", orientation),
            ("ImagePositionPatient", position),
            ("PixelSpacing", spacing),
        )
        if v is None
    ]
    if missing:
        findings.append(
            Finding(
                "GEOMETRY_MISSING",
                f"the Image Plane module lacks a usable {', '.join(missing)}: the slice cannot be placed",
                missing[0],
            )
        )
    temporal = _int(value(dataset, "TemporalPositionIndex"))
    if temporal is None:
        temporal = _int(value(dataset, "TemporalPositionIdentifier"))
    out: dict[str, Any] = {
        "orientation": orientation,
        "pixel_spacing": spacing,
        "temporal_positions": (temporal,),
    }
    if orientation is not None and position is not None:
        out["positions"] = (_along_normal(orientation, position),)
    return out


def _multiframe_geometry(dataset: Dataset, value: Any, findings: list[Finding]) -> dict[str, Any]:
    shared_seq = value(dataset, "SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    per_frame = value(dataset, "PerFrameFunctionalGroupsSequence") or []
    frames = _int(value(dataset, "NumberOfFrames")) or 0
    if len(per_frame) != frames:
        findings.append(
            Finding(
                "GEOMETRY_MISSING",
                f"NumberOfFrames is {frames} but the Per-frame Functional Groups Sequence has "
                f"{len(per_frame)} items",
                "PerFrameFunctionalGroupsSequence",
            )
        )

    def group(item: Dataset | None, sequence: str, keyword: str) -> Any:
        for source in (item, shared):
            seq = value(source, sequence) if source is not None else None
            if seq:
                found = value(seq[0], keyword)
                if found is not None:
                    return found
        return None

    orientations: list[_Vector | None] = []
    positions: list[float] = []
    temporal: list[int | None] = []
    spacing: _Vector | None = None
    spacings: set[_Vector] = set()
    unplaced = 0
    for item in per_frame:
        orientation = _floats(group(item, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
        position = _floats(group(item, "PlanePositionSequence", "ImagePositionPatient"), 3)
        frame_spacing = _floats(group(item, "PixelMeasuresSequence", "PixelSpacing"), 2)
        if frame_spacing is not None:
            spacings.add(frame_spacing)
            spacing = spacing or frame_spacing
        orientations.append(orientation)
        temporal.append(_int(group(item, "FrameContentSequence", "TemporalPositionIndex")))
        if orientation is None or position is None:
            unplaced += 1
            continue
        positions.append(_along_normal(orientation, position))
    if unplaced:
        findings.append(
            Finding(
                "GEOMETRY_MISSING",
                f"{unplaced} of {len(per_frame)} frames lack a plane position or orientation in the "
                "functional groups",
                "PlanePositionSequence",
            )
        )
    first = next((o for o in orientations if o is not None), None)
    if first is not None and any(
        o is not None and not _same(o, first, ORIENTATION_TOLERANCE) for o in orientations
    ):
        findings.append(
            Finding(
                "ORIENTATION_INCONSISTENT",
                "the frames of this multi-frame image do not share one orientation",
                "PlaneOrientationSequence",
            )
        )
    if len(spacings) > 1:
        findings.append(
            Finding(
                "PIXEL_SPACING_INCONSISTENT",
                "the frames do not share one pixel spacing",
                "PixelMeasuresSequence",
            )
        )
    if spacing is None and per_frame:
        findings.append(Finding("GEOMETRY_MISSING", "no frame has a pixel spacing", "PixelMeasuresSequence"))
    return {
        "orientation": first,
        "pixel_spacing": spacing,
        "positions": tuple(positions) if not unplaced else (),
        "temporal_positions": tuple(temporal) if not unplaced else (),
    }


def _floats(raw: Any, count: int) -> tuple[float, ...] | None:
    if raw is None:
        return None
    values = (
        list(raw)
        if isinstance(raw, list | tuple) or (hasattr(raw, "__iter__") and not isinstance(raw, str))
        else [raw]
    )
    if len(values) != count:
        return None
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) for v in out) else None


def _int(raw: Any) -> int | None:
    if raw is None or isinstance(raw, list | tuple):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _along_normal(orientation: _Vector, position: _Vector) -> float:
    row, col = orientation[:3], orientation[3:]
    normal = (
        row[1] * col[2] - row[2] * col[1],
        row[2] * col[0] - row[0] * col[2],
        row[0] * col[1] - row[1] * col[0],
    )
    return round(sum(n * p for n, p in zip(normal, position, strict=True)), 4)


def _same(a: Sequence[float], b: Sequence[float], tolerance: float) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


# -- scan rules ----------------------------------------------------------------------------------


@dataclass
class _Phase:
    series: str | None
    temporal: int | None
    positions: list[float] = field(default_factory=list)


def phases_of(summaries: Iterable[FileSummary]) -> list[_Phase]:
    """Group every frame of the scan into phases: one per (series, temporal position), ordered by
    temporal position then by the first file's name."""
    phases: dict[tuple[str | None, int | None], _Phase] = {}
    first_name: dict[tuple[str | None, int | None], str] = {}
    for summary in summaries:
        temporal = summary.temporal_positions or (None,) * len(summary.positions)
        for position, t in zip(summary.positions, temporal, strict=False):
            key = (summary.series, t)
            phase = phases.setdefault(key, _Phase(summary.series, t))
            phase.positions.append(position)
            first_name[key] = min(first_name.get(key, summary.name), summary.name)
    order = sorted(phases, key=lambda k: (k[1] is None, k[1] or 0, first_name[k]))
    return [phases[k] for k in order]


def check_scan(
    summaries: Sequence[FileSummary], *, device_settings: DeviceSettings | None = None
) -> list[Finding]:
    """Check a scan as a whole from its per-file summaries.

    Parameters
    ----------
    summaries : sequence of FileSummary
        One per file of the scan (from :func:`summarize`).
    device_settings : DeviceSettings, optional
        What the device declared (phases, slices per phase, matrix, voxel size); checked when given.

    Returns
    -------
    list of Finding
        Empty when the scan is consistent.

    Examples
    --------
    >>> a = FileSummary("a", patient="p1", study="s", series="x", frame_of_reference="f", positions=(0.0,))
    >>> b = FileSummary("b", patient="p2", study="s", series="x", frame_of_reference="f", positions=(1.0,))
    >>> [f.code for f in check_scan([a, b])]
    ['PATIENT_MIXED']
    """
    if not summaries:
        return [Finding("SCAN_EMPTY", "the scan has no DICOM files")]
    findings: list[Finding] = []
    findings += _check_one(
        summaries,
        "patient",
        "PATIENT_MIXED",
        "patients (by Patient ID, Issuer, Name and Birth Date)",
        "PatientID (0010,0020)",
    )
    findings += _check_one(summaries, "study", "STUDY_MIXED", "studies", "StudyInstanceUID (0020,000D)")
    instances = Counter(s.sop_instance for s in summaries if s.sop_instance is not None)
    repeated = sum(1 for n in instances.values() if n > 1)
    if repeated:
        findings.append(
            Finding(
                "SOP_INSTANCE_DUPLICATE",
                f"{repeated} SOP Instance UID(s) appear in more than one file; every image needs its own",
                "SOPInstanceUID (0008,0018)",
            )
        )
    by_series: dict[str | None, set[str | None]] = defaultdict(set)
    for s in summaries:
        by_series[s.series].add(s.frame_of_reference)
    split = sum(1 for refs in by_series.values() if len(refs) > 1)
    if split:
        findings.append(
            Finding(
                "FRAME_OF_REFERENCE_INCONSISTENT",
                f"{split} of {len(by_series)} series (phases) mix several frames of reference; the slices "
                "of a phase must share one coordinate system",
                "FrameOfReferenceUID (0020,0052)",
            )
        )
    findings += _check_geometry(summaries)
    phases = phases_of(summaries)
    findings += _check_phases(phases)
    if device_settings is not None:
        findings += _check_device_settings(summaries, phases, device_settings)
    return findings


def _check_one(
    summaries: Sequence[FileSummary], attr: str, code: str, what: str, element: str
) -> list[Finding]:
    groups = Counter(getattr(s, attr) for s in summaries)
    if len(groups) <= 1:
        return []
    sizes = ", ".join(str(n) for n in sorted(groups.values(), reverse=True))
    return [
        Finding(
            code,
            f"the files belong to {len(groups)} different {what} (files per group: {sizes}); "
            "a scan is one patient's one study",
            element,
        )
    ]


def _check_geometry(summaries: Sequence[FileSummary]) -> list[Finding]:
    findings: list[Finding] = []
    orientations = [s.orientation for s in summaries if s.orientation is not None]
    if orientations and any(not _same(o, orientations[0], ORIENTATION_TOLERANCE) for o in orientations):
        findings.append(
            Finding(
                "ORIENTATION_INCONSISTENT",
                "the images do not share one orientation (Image Orientation (Patient) differs by more "
                f"than {ORIENTATION_TOLERANCE})",
                "ImageOrientationPatient (0020,0037)",
            )
        )
    spacings = [s.pixel_spacing for s in summaries if s.pixel_spacing is not None]
    if spacings and any(
        not all(math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE) for a, b in zip(sp, spacings[0], strict=True))
        for sp in spacings
    ):
        findings.append(
            Finding(
                "PIXEL_SPACING_INCONSISTENT",
                "the images do not share one pixel spacing",
                "PixelSpacing (0028,0030)",
            )
        )
    matrices = Counter((s.rows, s.columns) for s in summaries)
    if len(matrices) > 1:
        shapes = ", ".join(f"{r}x{c}" for r, c in sorted(matrices, key=str))
        findings.append(
            Finding(
                "MATRIX_INCONSISTENT",
                f"the images have different matrices (Rows x Columns: {shapes})",
                "Rows (0028,0010)",
            )
        )
    return findings


def _check_phases(phases: list[_Phase]) -> list[Finding]:
    findings: list[Finding] = []
    total = len(phases)
    for number, phase in enumerate(phases, start=1):
        where = f"phase {number} of {total}" + (
            f" (temporal position {phase.temporal})" if phase.temporal is not None else ""
        )
        ordered = sorted(phase.positions)
        gaps = [b - a for a, b in itertools.pairwise(ordered)]
        duplicates = sum(1 for g in gaps if g < POSITION_TOLERANCE_MM)
        if duplicates:
            findings.append(
                Finding(
                    "SLICE_POSITION_DUPLICATE",
                    f"{where}: {duplicates} slice(s) repeat the position of another slice along the normal",
                    "ImagePositionPatient (0020,0032)",
                )
            )
            continue
        if len(gaps) >= 2:
            step = statistics.median(gaps)
            tolerance = max(POSITION_TOLERANCE_MM, RELATIVE_TOLERANCE * step)
            uneven = [g for g in gaps if abs(g - step) > tolerance]
            if uneven:
                findings.append(
                    Finding(
                        "SLICE_SPACING_UNEVEN",
                        f"{where}: {len(uneven)} of {len(gaps)} gaps between slices differ from the usual "
                        f"{step:.3f} mm (from {min(gaps):.3f} to {max(gaps):.3f} mm); a slice may be missing",
                        "ImagePositionPatient (0020,0032)",
                    )
                )
    counts = Counter(len(p.positions) for p in phases)
    if len(counts) > 1:
        detail = ", ".join(f"{n} phase(s) with {k}" for k, n in sorted(counts.items()))
        findings.append(
            Finding(
                "PHASE_SLICE_COUNT_INCONSISTENT",
                f"the phases do not all have the same number of slices: {detail}",
            )
        )
    return findings


def _check_device_settings(
    summaries: Sequence[FileSummary], phases: list[_Phase], settings: DeviceSettings
) -> list[Finding]:
    findings: list[Finding] = []

    def mismatch(what: str, declared: Any, found: Any) -> None:
        findings.append(
            Finding(
                "DEVICE_SETTINGS_MISMATCH", f"device_settings.{what} is {declared} but the files have {found}"
            )
        )

    if settings.phases is not None and settings.phases != len(phases):
        mismatch("phases", settings.phases, len(phases))
    if settings.slices_per_phase is not None:
        counts = sorted({len(p.positions) for p in phases})
        if counts != [settings.slices_per_phase]:
            mismatch("slices_per_phase", settings.slices_per_phase, "/".join(map(str, counts)) or "none")
    if settings.matrix is not None:
        found = {(s.rows, s.columns) for s in summaries}
        if found != {tuple(settings.matrix)}:
            mismatch(
                "matrix", list(settings.matrix), ", ".join(f"{r}x{c}" for r, c in sorted(found, key=str))
            )
    if settings.voxel_size_mm is not None:
        column_mm, row_mm, slice_mm = settings.voxel_size_mm
        spacing = next((s.pixel_spacing for s in summaries if s.pixel_spacing is not None), None)
        # PixelSpacing is (row spacing, column spacing): the distance between rows comes first.
        if spacing is not None and not (
            math.isclose(spacing[0], row_mm, rel_tol=RELATIVE_TOLERANCE)
            and math.isclose(spacing[1], column_mm, rel_tol=RELATIVE_TOLERANCE)
        ):
            mismatch(
                "voxel_size_mm (in-plane)", f"{column_mm} x {row_mm} mm", f"{spacing[1]} x {spacing[0]} mm"
            )
        steps = [
            statistics.median(b - a for a, b in itertools.pairwise(o))
            for o in (sorted(p.positions) for p in phases)
            if len(o) >= 2
        ]
        if steps and not all(math.isclose(s, slice_mm, rel_tol=RELATIVE_TOLERANCE) for s in steps):
            mismatch(
                "voxel_size_mm (slice)", f"{slice_mm} mm", f"{statistics.median(steps):.3f} mm between slices"
            )
    return findings


__all__ = ["FileSummary", "Severity", "check_scan", "identity_hash", "phases_of", "summarize"]
