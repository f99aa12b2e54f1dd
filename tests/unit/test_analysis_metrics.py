"""Metrics from the model's maps: the defect rule keeps edges where they are and ignores speckle."""

from __future__ import annotations

import numpy as np
import pytest

from dicomflow.analysis.metrics import box3_count, tidal_volume_ml, ventilation_metrics


def _two_regions(shape: tuple[int, int, int] = (12, 12, 12), edge: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Normal lung (SV 0.2) with a poorly ventilated block (SV -0.2) below slice ``edge``."""
    voxel = np.full(shape, 0.2, np.float32)
    voxel[:edge] = -0.2
    return voxel, np.ones(shape, np.uint8)


def test_the_defect_edge_stays_where_the_ventilation_changes() -> None:
    # Given a sharp edge between a defect and normal lung
    voxel, lung = _two_regions()
    # And the regional (smoothed) map that a 3-voxel box filter makes of it
    smoothed = voxel.copy()
    smoothed[3] = (2 * -0.2 + 0.2) / 3
    smoothed[4] = (2 * 0.2 - 0.2) / 3  # below 0.5 x median: thresholding this would move the edge
    # When the defect is found
    metrics, defect = ventilation_metrics(smoothed, lung, voxel_specific_ventilation=voxel)
    # Then it is exactly the block, not a voxel more
    assert defect[:4].all() and not defect[4:].any()
    assert metrics.defect_percent == pytest.approx(100 * 4 / 12)
    # whereas thresholding the smoothed map alone grows it by one slice
    _, grown = ventilation_metrics(smoothed, lung)
    assert grown[:5].all() and not grown[5:].any()


def test_isolated_noisy_voxels_are_not_defects() -> None:
    voxel, lung = _two_regions(edge=0)
    rng = np.random.default_rng(1)
    speckle = rng.random(voxel.shape) < 0.05
    voxel[speckle] = -0.3
    metrics, defect = ventilation_metrics(voxel, lung, voxel_specific_ventilation=voxel)
    assert speckle.sum() > 50
    assert metrics.defect_voxels == 0 and not defect.any()


def test_voxels_outside_the_lung_are_never_defects_nor_counted() -> None:
    voxel, lung = _two_regions()
    lung[:, :, 6:] = 0
    voxel[lung == 0] = 0.0
    metrics, defect = ventilation_metrics(voxel, lung, voxel_specific_ventilation=voxel)
    assert not defect[lung == 0].any()
    assert metrics.defect_percent == pytest.approx(100 * 4 / 12, abs=1.0)


def test_heterogeneity_is_the_coefficient_of_variation_of_the_regional_map() -> None:
    regional = np.array([[[0.1, 0.3]]], np.float32)
    metrics, _ = ventilation_metrics(regional, np.ones(regional.shape, np.uint8))
    assert metrics.heterogeneity_cv == pytest.approx(0.1 / 0.2, rel=1e-5)


def test_no_lung_gives_zeros_not_an_error() -> None:
    metrics, defect = ventilation_metrics(np.zeros((2, 2, 2), np.float32), np.zeros((2, 2, 2), np.uint8))
    assert metrics.defect_percent == 0.0 and not defect.any()


def test_box3_count_matches_a_direct_count() -> None:
    rng = np.random.default_rng(0)
    mask = (rng.random((5, 6, 7)) < 0.4).astype(np.uint8)
    padded = np.pad(mask, 1)
    direct = sum(
        padded[1 + i : 6 + i, 1 + j : 7 + j, 1 + k : 8 + k].astype(int)
        for i in (-1, 0, 1)
        for j in (-1, 0, 1)
        for k in (-1, 0, 1)
    )
    np.testing.assert_array_equal(box3_count(mask), direct)


def test_tidal_volume_is_largest_minus_smallest_lung() -> None:
    assert tidal_volume_ml([2500.0, 3100.0, 2400.0]) == (700.0, 1, 2)
