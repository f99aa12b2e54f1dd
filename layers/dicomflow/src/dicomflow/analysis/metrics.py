"""Lung metrics from the model's outputs: volumes per phase, tidal volume, ventilation defects.

Pure numpy on arrays the model produced; no I/O. The defect rule (specific ventilation below a
fraction of the lung's median) is post-processing, outside the ONNX graph, and is stated in the model
card.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A lung voxel is in a ventilation defect when its specific ventilation is below this fraction of
#: the median specific ventilation of the lung at end-inspiration.
DEFECT_THRESHOLD_FRACTION = 0.5


@dataclass(frozen=True)
class VentilationMetrics:
    """Regional ventilation between end-expiration and end-inspiration, over the inhale lung."""

    defect_percent: float
    defect_voxels: int
    heterogeneity_cv: float  # coefficient of variation of regional specific ventilation
    median_specific_ventilation: float
    mean_specific_ventilation: float
    threshold: float  # absolute specific ventilation below which a voxel counts as a defect


def lung_volume_ml(voxels: int, voxel_volume_ml: float) -> float:
    """The volume of ``voxels`` lung voxels in millilitres.

    Examples
    --------
    >>> lung_volume_ml(1000, 0.5)
    500.0
    """
    return float(voxels) * voxel_volume_ml


def tidal_volume_ml(volumes_ml: list[float]) -> tuple[float, int, int]:
    """Tidal volume (end-inspiration minus end-expiration) and the two phases' indices.

    End-inspiration is the phase with the largest lung volume, end-expiration the smallest: taken
    from the images, not from labels, which a device may set differently.

    Examples
    --------
    >>> tidal_volume_ml([3000.0, 2800.0, 2500.0, 2750.0])
    (500.0, 0, 2)
    """
    inhale = int(np.argmax(volumes_ml))
    exhale = int(np.argmin(volumes_ml))
    return float(volumes_ml[inhale] - volumes_ml[exhale]), inhale, exhale


def box3_count(mask: np.ndarray) -> np.ndarray:
    """How many of each voxel's 3 x 3 x 3 neighbourhood (itself included) are set, as uint8.

    Separable sums of shifted copies: numpy only, one uint8 array at a time (27 fits in a byte).

    Examples
    --------
    >>> m = np.zeros((3, 3, 3), np.uint8); m[1, 1, 1] = 1
    >>> int(box3_count(m)[0, 0, 0]), int(box3_count(np.ones((3, 3, 3), np.uint8))[1, 1, 1])
    (1, 27)
    """
    out = mask.astype(np.uint8, copy=True)
    for axis in range(out.ndim):
        summed = out.copy()
        head = [slice(None)] * out.ndim
        tail = [slice(None)] * out.ndim
        head[axis], tail[axis] = slice(1, None), slice(None, -1)
        summed[tuple(head)] += out[tuple(tail)]
        summed[tuple(tail)] += out[tuple(head)]
        out = summed
    return out


def ventilation_metrics(
    specific_ventilation: np.ndarray,
    lung_mask: np.ndarray,
    *,
    voxel_specific_ventilation: np.ndarray | None = None,
    threshold_fraction: float = DEFECT_THRESHOLD_FRACTION,
) -> tuple[VentilationMetrics, np.ndarray]:
    """Defect percent, heterogeneity and the defect mask from specific ventilation (SV) maps.

    A voxel is poorly ventilated when its own SV is below ``threshold_fraction`` x the lung's median
    SV; a defect is where most lung voxels of the 3 x 3 x 3 neighbourhood are poorly ventilated (a
    majority filter: it removes isolated noisy voxels without moving a region's edge, which
    thresholding the smoothed map would, by about one voxel outwards). Heterogeneity is the
    coefficient of variation of the regional (smoothed) SV. Without a per-voxel map, the smoothed
    one stands in.

    Examples
    --------
    >>> sv = np.full((4, 4, 4), 0.3, np.float32); sv[:2] = 0.0; mask = np.ones(sv.shape, np.uint8)
    >>> m, defect = ventilation_metrics(sv, mask)
    >>> m.defect_percent, int(defect[:2].sum()), int(defect[2:].sum())
    (50.0, 32, 0)
    """
    voxel = specific_ventilation if voxel_specific_ventilation is None else voxel_specific_ventilation
    lung = lung_mask.astype(bool, copy=False)
    values = voxel[lung]
    if values.size == 0:
        empty = np.zeros(lung_mask.shape, dtype=np.uint8)
        return VentilationMetrics(0.0, 0, 0.0, 0.0, 0.0, 0.0), empty
    median = float(np.median(values))
    del values
    threshold = threshold_fraction * median
    poor = (voxel < threshold) & lung
    votes = box3_count(poor)
    del poor
    lung_votes = box3_count(lung)
    defect = (2 * votes.astype(np.int16) > lung_votes) & lung
    del votes, lung_votes
    defect_voxels = int(np.count_nonzero(defect))
    regional = specific_ventilation[lung]
    mean = float(regional.mean(dtype=np.float64))
    std = float(regional.std(dtype=np.float64))
    metrics = VentilationMetrics(
        defect_percent=100.0 * defect_voxels / regional.size,
        defect_voxels=defect_voxels,
        heterogeneity_cv=std / mean if mean > 0 else float("inf"),
        median_specific_ventilation=median,
        mean_specific_ventilation=mean,
        threshold=threshold,
    )
    return metrics, defect.astype(np.uint8)
