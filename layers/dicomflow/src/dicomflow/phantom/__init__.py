"""A 4D-CT phantom scanner: a breathing thorax with known ground truth and planted patient identity.

Every test, demo and benchmark of dicomflow uses it. ``generate_phantom`` (CLI: ``dicomflow phantom``)
writes one series per respiratory phase and, next to the data:

``manifest.json``
    the :class:`~dicomflow.manifest.ScanManifest` a device would send (names, sizes, SHA-256),
    excluding ``manifest.json`` and ``ground_truth.json`` themselves.
``ground_truth.json``
    ``seed, phases, slices, size, multiframe, voxel_size_mm ([column, row, slice] spacing),
    voxel_volume_ml, phase_percent, inhale_phase (0), exhale_phase (P // 2), lung_hu_range,
    lung_voxels, lung_volume_ml (per phase), tidal_volume_ml (max - min), defect_percent (percent of
    the lung volume at the inhale phase lying in the poorly ventilated region), defect_voxels_inhale,
    hu_model, identifying_values (every planted string no de-identified output may contain),
    retainable_values (planted values the lung-analysis options may keep), original_uids``.

Layout: ``phase_PP/slice_SSSS.dcm`` (CT Image Storage) or, with ``multiframe``, ``phase_PP.dcm``
(Enhanced CT Image Storage, all slices of a phase as frames). Geometry is in millimetres, independent
of resolution: a 400 mm field of view (pixel spacing 400 / size) and 300 mm of craniocaudal coverage
(slice spacing 300 / slices); slice 0 is the most superior. Stored values are ``uint16`` with
RescaleIntercept -1024; lung voxels carry no partial volume and the noise is bounded, so counting
voxels whose HU lies in ``lung_hu_range`` recovers ``lung_voxels`` exactly. The anatomy and the HU
model (lung tissue mass conserved between phases) are described in :mod:`dicomflow.phantom.anatomy`.

Deterministic: two runs with the same seed write byte-identical files.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicomflow.errors import InvalidInputError
from dicomflow.manifest import DeviceSettings, ManifestFile, ScanManifest, ScanType
from dicomflow.phantom.anatomy import (
    DEFECT_HU_EXHALE,
    LUNG_HU_RANGE,
    NORMAL_LUNG_HU_EXHALE,
    Thorax,
    lung_hu,
)
from dicomflow.phantom.identity import make_identity
from dicomflow.phantom.scanner import PhaseResult, ScanPlan, count_labels, write_phase

__all__ = ["PhantomResult", "generate_phantom"]

DEVICE_ID = "phantom-ct-01"
#: Seconds per breathing cycle that the protocol duration reports (one cycle per phase set).
_PROTOCOL_DURATION_S = 60.0


@dataclass(frozen=True)
class PhantomResult:
    out_dir: Path
    file_count: int
    bytes_written: int
    tidal_volume_ml: float
    defect_percent: float
    manifest: ScanManifest
    ground_truth: dict[str, Any]


def generate_phantom(
    out_dir: str | os.PathLike[str],
    *,
    phases: int = 10,
    slices: int = 150,
    size: int = 512,
    multiframe: bool = False,
    seed: int = 0,
    workers: int | None = None,
) -> PhantomResult:
    """Write a phantom 4D-CT scan into ``out_dir`` and return what was written.

    Parameters
    ----------
    out_dir
        Folder to write into (created; files of an earlier phantom with the same layout are
        overwritten).
    phases, slices, size
        Respiratory phases, slices per phase, rows = columns.
    multiframe
        One Enhanced CT file per phase instead of single-frame slices.
    seed
        Seed of the identity, the UIDs and the noise.
    workers
        Processes writing phases in parallel (default: the CPU count, at most ``phases``).

    Examples
    --------
    >>> import tempfile
    >>> result = generate_phantom(tempfile.mkdtemp(), phases=2, slices=4, size=32)
    >>> result.file_count, result.ground_truth["inhale_phase"], result.ground_truth["exhale_phase"]
    (8, 0, 1)
    """
    if phases < 1 or slices < 2 or size < 16:
        raise InvalidInputError("a phantom needs phases >= 1, slices >= 2 and size >= 16")
    if size > 2048 or slices > 20_000 or phases > 100:
        raise InvalidInputError("a phantom is limited to size <= 2048, slices <= 20000 and phases <= 100")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    identity = make_identity(seed)
    workers = max(1, min(workers or os.cpu_count() or 1, phases))
    exhale = phases // 2

    # Pass 1: lung and defect voxel counts per phase; the HU of each phase follows from them.
    counts = _map(workers, count_labels, [(size, slices, phases, p) for p in range(phases)])
    normal = [lung - defect for lung, defect in counts]
    defect = [d for _, d in counts]
    normal_hu = tuple(lung_hu(normal[exhale], normal[p], NORMAL_LUNG_HU_EXHALE) for p in range(phases))
    defect_hu = tuple(lung_hu(defect[exhale], defect[p], DEFECT_HU_EXHALE) for p in range(phases))

    plan = ScanPlan(
        out_dir=str(out),
        phases=phases,
        slices=slices,
        size=size,
        multiframe=multiframe,
        seed=seed,
        identity=identity,
        normal_hu=normal_hu,
        defect_hu=defect_hu,
    )
    # Pass 2: write, one phase per task.
    results: list[PhaseResult] = _map(workers, write_phase, [(plan, p) for p in range(phases)])
    for p, result in enumerate(results):
        if (result.lung_voxels, result.defect_voxels) != (counts[p][0], counts[p][1]):  # pragma: no cover
            raise RuntimeError("the phantom's two passes disagree on the lung voxel count")

    thorax = Thorax(size=size, slices=slices, phases=phases)
    voxel_ml = thorax.pixel_mm * thorax.pixel_mm * thorax.slice_mm / 1000.0
    lung_voxels = [lung for lung, _ in counts]
    lung_ml = [n * voxel_ml for n in lung_voxels]
    tidal_ml = max(lung_ml) - min(lung_ml)
    defect_percent = 100.0 * defect[0] / lung_voxels[0] if lung_voxels[0] else 0.0
    files = sorted((f for r in results for f in r.files), key=lambda f: f.name)

    manifest = ScanManifest(
        device_id=DEVICE_ID,
        scan_type=ScanType.FOUR_D_CT,
        device_settings=DeviceSettings(
            protocol_duration_s=_PROTOCOL_DURATION_S,
            phases=phases,
            slices_per_phase=slices,
            matrix=(size, size),
            voxel_size_mm=(round(thorax.pixel_mm, 6), round(thorax.pixel_mm, 6), round(thorax.slice_mm, 6)),
        ),
        files=tuple(ManifestFile(name=f.name, size=f.size, sha256=f.sha256) for f in files),
    )
    ground_truth: dict[str, Any] = {
        "seed": seed,
        "phases": phases,
        "slices": slices,
        "size": size,
        "multiframe": multiframe,
        "voxel_size_mm": [thorax.pixel_mm, thorax.pixel_mm, thorax.slice_mm],
        "voxel_volume_ml": voxel_ml,
        "phase_percent": [plan.percent(p) for p in range(phases)],
        "inhale_phase": 0,
        "exhale_phase": exhale,
        "lung_hu_range": list(LUNG_HU_RANGE),
        "lung_voxels": lung_voxels,
        "lung_volume_ml": lung_ml,
        "tidal_volume_ml": tidal_ml,
        "defect_percent": defect_percent,
        "defect_voxels_inhale": defect[0],
        "hu_model": {
            "formula": "HU(p) = (HU_exhale + 1000) * N_exhale / N(p) - 1000 for each region "
            "(lung tissue mass conserved); N = the region's voxel count at the phase",
            "normal_lung_hu_exhale": NORMAL_LUNG_HU_EXHALE,
            "defect_hu_exhale": DEFECT_HU_EXHALE,
            "normal_lung_hu": list(normal_hu),
            "defect_hu": list(defect_hu),
            "normal_lung_voxels": normal,
            "defect_voxels": defect,
            "noise": "Gaussian, sigma 5 HU, clipped to +-15 HU, seeded per (seed, phase, slice)",
        },
        "identifying_values": identity.identifying_values(),
        "retainable_values": identity.retainable_values(),
        "original_uids": {
            "StudyInstanceUID": plan.study_uid,
            "FrameOfReferenceUID": plan.frame_of_reference_uid,
            "SeriesInstanceUID": [plan.series_uid(p) for p in range(phases)],
        },
    }
    (out / "manifest.json").write_text(manifest.to_json())
    (out / "ground_truth.json").write_text(json.dumps(ground_truth, indent=2) + "\n")
    return PhantomResult(
        out_dir=out,
        file_count=len(files),
        bytes_written=sum(f.size for f in files),
        tidal_volume_ml=tidal_ml,
        defect_percent=defect_percent,
        manifest=manifest,
        ground_truth=ground_truth,
    )


def _map(workers: int, func: Any, argument_tuples: list[tuple[Any, ...]]) -> list[Any]:
    """``func(*args)`` for each tuple, in order; in a process pool when more than one worker."""
    if workers == 1:
        return [func(*args) for args in argument_tuples]
    # forkserver, not fork: a caller with threads running (a test's embedded moto server, a service)
    # would hand a forked child locks held by those threads, and the child can deadlock on them.
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("forkserver")
    ) as pool:
        futures = [pool.submit(func, *args) for args in argument_tuples]
        return [f.result() for f in futures]
