"""The whole analysis over local folders: results.json, SEG, SR and PNG agree with each other and
with the truth of a synthetic scan; ``dicomflow analyze`` runs it as a plain process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

from dicomflow.analysis.outputs.sr import read_measurements
from dicomflow.analysis.pipeline import analyze_directory
from tests.unit.test_analysis_volume import write_ct_scan

PHASES, SLICES, SIZE = 4, 16, 48


@pytest.fixture(scope="module", params=[False, True], ids=["single-frame", "enhanced-multiframe"])
def analysed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    scan = tmp_path_factory.mktemp("scan")
    out = tmp_path_factory.mktemp("out")
    truth = write_ct_scan(scan, phases=PHASES, slices=SLICES, size=SIZE, multiframe=request.param)
    results = analyze_directory(scan, out, threads=1)
    return {"truth": truth, "results": results, "out": out, "scan": scan}


def _truth_lung(hu: np.ndarray) -> np.ndarray:
    return (hu != -1000) & (hu != 40)


def test_metrics_match_the_synthetic_truth(analysed: dict[str, Any]) -> None:
    truth, results = analysed["truth"], analysed["results"]
    voxel_ml = results["voxel_volume_ml"]
    expected = [float(_truth_lung(truth[p]).sum()) * voxel_ml for p in range(PHASES)]
    assert results["lung_volume_ml"] == pytest.approx(expected)
    assert results["inhale_phase"] == 0 and results["exhale_phase"] == PHASES // 2
    assert results["tidal_volume_ml"] == pytest.approx(max(expected) - min(expected))
    # The defect block stays at -700 HU while normal lung inflates: its share of the inhale lung
    inhale = truth[0]
    lung = _truth_lung(inhale)
    defect_truth = 100 * ((inhale == -700) & lung).sum() / lung.sum()
    assert results["ventilation"]["defect_percent"] == pytest.approx(defect_truth, abs=3.0)
    assert results["ventilation"]["heterogeneity_cv"] > 0.1
    assert results["model"]["name"] == "lung-ventilation-reference"
    assert set(results["timings_s"]) >= {"read_s", "segment_s", "ventilation_s", "seg_s", "sr_s", "total_s"}
    assert json.loads((analysed["out"] / "results.json").read_text()) == results


def test_seg_references_the_inhale_series_and_carries_the_same_voxels(analysed: dict[str, Any]) -> None:
    results, out = analysed["results"], analysed["out"]
    seg = hd.seg.segread(out / "seg.dcm")
    # Then it references the de-identified source series of the end-inspiration phase
    referenced = {item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence}
    assert referenced == {results["source_series"]["inhale"]}
    assert seg.StudyInstanceUID == pydicom.dcmread(next(analysed["scan"].rglob("*.dcm"))).StudyInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Lungs", "Ventilation defect"]
    # and its voxels are the numbers of results.json
    volume = seg.get_volume(combine_segments=False)
    lung = volume.array[..., 0].astype(bool)
    defect = volume.array[..., 1].astype(bool)
    assert int(lung.sum()) == results["phases"][results["inhale_phase"]]["lung_voxels"]
    assert int(defect.sum()) == results["ventilation"]["defect_voxels"]
    assert not np.any(defect & ~lung)


def test_sr_is_a_tid1500_report_with_the_numbers_of_results_json(analysed: dict[str, Any]) -> None:
    results, out = analysed["results"], analysed["out"]
    sr = pydicom.dcmread(out / "sr.dcm")
    assert sr.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    report = hd.sr.srread(out / "sr.dcm")
    assert report.SOPInstanceUID == results["outputs"]["sr_sop_instance_uid"]
    found = read_measurements(sr)
    for phase in results["phases"]:
        assert found[f"Lungs, phase {phase['index']}/Volume"] == [
            pytest.approx(phase["lung_volume_ml"], abs=1e-3)
        ]
    assert found["Ventilation/Tidal volume"] == [pytest.approx(results["tidal_volume_ml"], abs=1e-3)]
    assert found["Ventilation/Ventilation defect percent"] == [
        pytest.approx(results["ventilation"]["defect_percent"], abs=1e-3)
    ]
    assert found["Ventilation/Ventilation heterogeneity coefficient of variation"] == [
        pytest.approx(results["ventilation"]["heterogeneity_cv"], abs=1e-4)
    ]
    # The evidence lists every source series and the SEG
    evidence = {
        s.SeriesInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    }
    assert {p["series_instance_uid"] for p in results["phases"]} <= evidence


def test_preview_png_shows_a_coloured_ventilation_map(analysed: dict[str, Any]) -> None:
    image = Image.open(analysed["out"] / "preview.png").convert("RGB")
    pixels = np.asarray(image).astype(int)
    assert image.width >= 640 and image.height > 200
    # Colour where the map is (a grey CT has R == G == B everywhere)
    coloured = np.abs(pixels[..., 0] - pixels[..., 1]) + np.abs(pixels[..., 1] - pixels[..., 2]) > 30
    assert coloured[:, :640].sum() > 1000
    assert coloured[:, 640:].sum() > 500  # the colour bar


def test_dicomflow_analyze_runs_as_a_plain_process(tmp_path: Path) -> None:
    # Given a scan folder
    scan, out = tmp_path / "scan", tmp_path / "out"
    write_ct_scan(scan, phases=2, slices=8, size=32)
    # When the CLI analyses it
    result = subprocess.run(
        [sys.executable, "-m", "dicomflow", "analyze", str(scan), str(out), "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Then it succeeds and writes the four outputs
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["tidal_volume_ml"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["preview.png", "results.json", "seg.dcm", "sr.dcm"]


def test_dicomflow_analyze_refuses_a_wrong_model_hash_with_a_clear_message(tmp_path: Path) -> None:
    scan = tmp_path / "scan"
    write_ct_scan(scan, phases=2, slices=4, size=16)
    from dicomflow.analysis.model import default_model

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicomflow",
            "analyze",
            str(scan),
            str(tmp_path / "out"),
            "--model",
            str(default_model().path),
            "--model-sha256",
            "0" * 64,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "refused: its SHA-256 is" in result.stderr


def test_the_outputs_tables_load_beside_the_model_and_the_thread_imports_nothing() -> None:
    # In a fresh interpreter: highdicom's tables are not loaded yet
    probe = """
import sys
from highdicom import _standard_utils as standard
from dicomflow.analysis.outputs import prepare_in_background
thread = prepare_in_background()
before = set(sys.modules)
thread.join()
assert set(sys.modules) == before, sorted(set(sys.modules) - before)
assert thread.name == "dicomflow-highdicom-tables"
for table in (standard.get_sop_class_iod_map, standard.get_iod_module_map, standard.get_module_attribute_map):
    assert table.cache_info().currsize == 1, table
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    # Then after the join every table the SEG and SR read is loaded, and the thread imported no
    # module (importing is done in the caller's thread: see prepare_in_background)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
