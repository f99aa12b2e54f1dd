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


def ventilation_metrics(
    specific_ventilation: np.ndarray,
    lung_mask: np.ndarray,
    *,
    threshold_fraction: float = DEFECT_THRESHOLD_FRACTION,
) -> tuple[VentilationMetrics, np.ndarray]:
    """Defect percent, heterogeneity and the defect mask from a specific ventilation map.

    Examples
    --------
    >>> sv = np.array([0.3, 0.3, 0.3, 0.0], np.float32); mask = np.ones(4, np.uint8)
    >>> m, defect = ventilation_metrics(sv, mask)
    >>> m.defect_percent, defect.tolist()
    (25.0, [0, 0, 0, 1])
    """
    lung = lung_mask.astype(bool, copy=False)
    values = specific_ventilation[lung]
    if values.size == 0:
        empty = np.zeros(lung_mask.shape, dtype=np.uint8)
        return VentilationMetrics(0.0, 0, 0.0, 0.0, 0.0, 0.0), empty
    median = float(np.median(values))
    mean = float(values.mean(dtype=np.float64))
    std = float(values.std(dtype=np.float64))
    threshold = threshold_fraction * median
    defect = (specific_ventilation < threshold) & lung
    defect_voxels = int(np.count_nonzero(defect))
    metrics = VentilationMetrics(
        defect_percent=100.0 * defect_voxels / values.size,
        defect_voxels=defect_voxels,
        heterogeneity_cv=std / mean if mean > 0 else float("inf"),
        median_specific_ventilation=median,
        mean_specific_ventilation=mean,
        threshold=threshold,
    )
    return metrics, defect.astype(np.uint8)
