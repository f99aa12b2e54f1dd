"""Accuracy on the phantom: lung volume within 3 % per phase, tidal volume within 5 %, ventilation
defect percent within 3 points of ``ground_truth.json`` (which only this test reads, never the
analysis). Single-frame and enhanced multi-frame layouts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dicomflow.analysis.pipeline import analyze_directory

PHASES, SLICES, SIZE = 10, 40, 128


def _analyse(
    tmp_path_factory: pytest.TempPathFactory, multiframe: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    from dicomflow.phantom import generate_phantom

    scan = tmp_path_factory.mktemp("phantom")
    generate_phantom(scan, phases=PHASES, slices=SLICES, size=SIZE, multiframe=multiframe, seed=3)
    truth = json.loads((scan / "ground_truth.json").read_text())
    results = analyze_directory(scan, tmp_path_factory.mktemp("out"), threads=2)
    return truth, results


@pytest.fixture(scope="module", params=[False, True], ids=["single-frame", "enhanced-multiframe"])
def phantom_analysis(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], dict[str, Any]]:
    return _analyse(tmp_path_factory, request.param)


@pytest.mark.slow
def test_lung_volume_per_phase_is_within_3_percent(
    phantom_analysis: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    truth, results = phantom_analysis
    assert len(results["lung_volume_ml"]) == PHASES
    for got, want in zip(results["lung_volume_ml"], truth["lung_volume_ml"], strict=True):
        assert got == pytest.approx(want, rel=0.03)


@pytest.mark.slow
def test_inhale_and_exhale_phases_are_found_from_the_images(
    phantom_analysis: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    truth, results = phantom_analysis
    assert results["inhale_phase"] == truth["inhale_phase"]
    assert results["exhale_phase"] == truth["exhale_phase"]


@pytest.mark.slow
def test_tidal_volume_is_within_5_percent(phantom_analysis: tuple[dict[str, Any], dict[str, Any]]) -> None:
    truth, results = phantom_analysis
    assert results["tidal_volume_ml"] == pytest.approx(truth["tidal_volume_ml"], rel=0.05)


@pytest.mark.slow
def test_defect_percent_is_within_3_points(phantom_analysis: tuple[dict[str, Any], dict[str, Any]]) -> None:
    truth, results = phantom_analysis
    assert truth["defect_percent"] > 1.0  # the phantom has a defect to find
    assert results["ventilation"]["defect_percent"] == pytest.approx(truth["defect_percent"], abs=3.0)
