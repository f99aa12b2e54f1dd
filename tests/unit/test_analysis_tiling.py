"""The model in slabs (as its registry entry allows) gives the whole-phase results: the same lung
mask and counts, the same ventilation maps over the lungs' box, the air fraction to float32
rounding; a model that declares no tiling (any replacement) runs on whole phases."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dicomflow.analysis.model import LoadedModel, Tiling, default_model, resolve_model
from dicomflow.analysis.pipeline import analyze_directory
from dicomflow.errors import ConfigurationError
from tests.unit.test_analysis_volume import synthetic_hu, write_ct_scan


def _models(slab_slices: int, size: int) -> tuple[LoadedModel, LoadedModel]:
    spec = default_model()
    tiled = LoadedModel(spec, threads=1)
    assert tiled.tiling == Tiling(ventilation_halo_voxels=1)
    # Slabs of a few slices, so that a small volume is cut in many places
    object.__setattr__(tiled, "tiling", replace(tiled.tiling, slab_voxels=slab_slices * size * size))
    whole = LoadedModel(replace(spec, parameters={}), threads=1)
    assert whole.tiling is None
    return tiled, whole


@pytest.mark.parametrize("slab_slices", [1, 3, 7])
def test_slabs_and_the_lung_box_give_the_whole_phase_results(slab_slices: int) -> None:
    # Given a phase with lungs, a defect and an airway, and the same model tiled and untiled
    size = 40
    hu = synthetic_hu(0, 4, 24, size)
    tiled, whole = _models(slab_slices, size)
    # When each measures the phase
    a, b = tiled.measure(hu), whole.measure(hu)
    # Then the lung voxels and box are the same, the air fraction to float32 rounding
    assert a.lung_voxels == b.lung_voxels > 0
    assert a.box == b.box
    assert a.lung_air_fraction == pytest.approx(b.lung_air_fraction, rel=1e-6)
    assert a.box is not None
    # And the ventilation over the box, placed in the volume, is the whole-phase one
    va, vb = tiled.ventilation(hu, 0.5, a.box), whole.ventilation(hu, 0.5, a.box)
    assert va.lung_mask.shape == tuple(stop - start for start, stop in a.box)
    for name in ("lung_mask", "specific_ventilation", "voxel_specific_ventilation"):
        np.testing.assert_array_equal(va.full(getattr(va, name), hu.shape), getattr(vb, name), err_msg=name)
    row = (a.box[1][0] + a.box[1][1]) // 2
    np.testing.assert_array_equal(
        va.plane(va.specific_ventilation, row, hu.shape), vb.specific_ventilation[:, row, :]
    )


def test_a_phase_without_lung_has_no_box() -> None:
    tiled, _ = _models(2, 8)
    m = tiled.measure(np.full((5, 8, 8), 40, np.int16))
    assert (m.lung_voxels, m.lung_air_fraction, m.box) == (0, 0.0, None)


def test_a_malformed_tiling_declaration_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="ventilation_halo_voxels"):
        Tiling.from_parameters({"tiling": {"ventilation_halo_voxels": -1}})
    assert Tiling.from_parameters({}) is None


def test_a_replacement_model_runs_on_whole_phases_with_the_same_results(tmp_path: Path) -> None:
    # Given a scan, and the packaged model configured as a replacement (no tiling declared)
    scan = tmp_path / "scan"
    write_ct_scan(scan, phases=3, slices=10, size=32)
    path = default_model().path
    replacement = resolve_model(path, hashlib.sha256(path.read_bytes()).hexdigest())
    assert LoadedModel(replacement, threads=1).tiling is None
    # When both analyse it
    tiled = analyze_directory(scan, tmp_path / "a", threads=1)
    whole = analyze_directory(scan, tmp_path / "b", replacement, threads=1)
    # Then every count is the same and the rest agrees to float32 rounding
    assert [p["lung_voxels"] for p in tiled["phases"]] == [p["lung_voxels"] for p in whole["phases"]]
    assert tiled["ventilation"]["defect_voxels"] == whole["ventilation"]["defect_voxels"]
    assert tiled["ventilation"]["heterogeneity_cv"] == pytest.approx(
        whole["ventilation"]["heterogeneity_cv"], rel=1e-5
    )
