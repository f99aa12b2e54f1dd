"""The phantom scanner writes realistic, deterministic 4D-CT scans whose ground truth is exact."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pydicom
import pytest

from dicomflow.manifest import ScanManifest, sha256_file
from dicomflow.phantom import generate_phantom

PHASES, SLICES, SIZE = 4, 16, 64


@pytest.fixture(scope="module", params=[False, True], ids=["single-frame", "multi-frame"])
def phantom(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    result = generate_phantom(out, phases=PHASES, slices=SLICES, size=SIZE, multiframe=request.param, seed=11)
    return result


def frames_of(path):
    """(positions, HU frames) of one written file, slices in file order."""
    ds = pydicom.dcmread(path)
    if "PerFrameFunctionalGroupsSequence" in ds:
        positions = [
            [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
            for item in ds.PerFrameFunctionalGroupsSequence
        ]
        transform = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
        slope, intercept = float(transform.RescaleSlope), float(transform.RescaleIntercept)
        pixels = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
    else:
        positions = [[float(v) for v in ds.ImagePositionPatient]]
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        pixels = ds.pixel_array[None]
    return ds, positions, pixels.astype(np.int32) * slope + intercept


def phase_files(result, phase):
    return sorted(f.name for f in result.manifest.files if f.name.startswith(f"phase_{phase:02d}"))


def test_every_file_reads_back_with_consistent_geometry_and_phase_labels(phantom):
    truth = phantom.ground_truth
    column_mm, row_mm, slice_mm = truth["voxel_size_mm"]
    assert row_mm == column_mm == pytest.approx(400 / SIZE)
    series, frames_of_reference = set(), set()
    for phase in range(PHASES):
        positions = []
        for name in phase_files(phantom, phase):
            ds, pos, hu = frames_of(phantom.out_dir / name)
            positions += pos
            series.add(ds.SeriesInstanceUID)
            frames_of_reference.add(ds.FrameOfReferenceUID)
            assert hu.shape[1:] == (SIZE, SIZE)
            assert ds.PatientPosition == "HFS"
        # Positions unique and evenly spaced along the slice normal (z), x/y at the first pixel centre
        z = np.array([p[2] for p in positions])
        assert len(set(z)) == SLICES
        assert np.allclose(np.abs(np.diff(np.sort(z))), slice_mm, atol=1e-4)
        assert all(p[0] == pytest.approx(-200 + column_mm / 2) for p in positions)
        description = ds.SeriesDescription
        assert description.startswith(f"4D-CT {100 * phase // PHASES}%")
    assert len(series) == PHASES and len(frames_of_reference) == 1
    assert "Inspiration" in pydicom.dcmread(phantom.out_dir / phase_files(phantom, 0)[0]).SeriesDescription
    exhale = pydicom.dcmread(phantom.out_dir / phase_files(phantom, PHASES // 2)[0])
    assert "Expiration" in exhale.SeriesDescription
    if "PerFrameFunctionalGroupsSequence" in exhale:
        item = exhale.PerFrameFunctionalGroupsSequence[0]
        assert item.FrameContentSequence[0].TemporalPositionIndex == PHASES // 2 + 1
        assert item.RespiratorySynchronizationSequence[0].NominalPercentageOfRespiratoryPhase == 50.0
    else:
        assert exhale.TemporalPositionIdentifier == PHASES // 2 + 1
        assert exhale.NumberOfTemporalPositions == PHASES


def test_ground_truth_volumes_are_a_voxel_count_of_the_written_data(phantom):
    # Given the written files, When voxels are counted in the lung HU range after rescale
    truth = phantom.ground_truth
    lo, hi = truth["lung_hu_range"]
    for phase in range(PHASES):
        count = 0
        for name in phase_files(phantom, phase):
            _, _, hu = frames_of(phantom.out_dir / name)
            count += int(((hu >= lo) & (hu <= hi)).sum())
        # Then the count is exactly the ground truth
        assert count == truth["lung_voxels"][phase]
        assert truth["lung_volume_ml"][phase] == pytest.approx(count * truth["voxel_volume_ml"])
    volumes = truth["lung_volume_ml"]
    assert truth["tidal_volume_ml"] == pytest.approx(max(volumes) - min(volumes))
    assert volumes[0] == max(volumes) and volumes[PHASES // 2] == min(volumes)


def test_volumes_and_defect_are_physiological(phantom):
    truth = phantom.ground_truth
    assert 2500 < min(truth["lung_volume_ml"]) < 4500
    assert 300 < truth["tidal_volume_ml"] < 800
    assert 3 < truth["defect_percent"] < 15
    # Mass conservation: normal lung is less dense (more air) when inflated
    hu = truth["hu_model"]["normal_lung_hu"]
    assert hu[0] < hu[PHASES // 2] == truth["hu_model"]["normal_lung_hu_exhale"]


def test_manifest_lists_every_data_file_with_its_hash(phantom):
    manifest = ScanManifest.load(phantom.out_dir / "manifest.json")
    assert manifest == phantom.manifest
    on_disk = sorted(p.relative_to(phantom.out_dir).as_posix() for p in phantom.out_dir.rglob("*.dcm"))
    assert [f.name for f in manifest.files] == on_disk
    for f in manifest.files:
        assert sha256_file(phantom.out_dir / f.name) == f.sha256
        assert (phantom.out_dir / f.name).stat().st_size == f.size
    assert manifest.device_settings.phases == PHASES
    assert manifest.device_settings.slices_per_phase == SLICES


def test_every_planted_identifying_value_is_in_the_files(phantom):
    # A leak test is only meaningful if the values are really there: each is in the first file's bytes.
    first = (phantom.out_dir / phantom.manifest.files[0].name).read_bytes()
    truth = json.loads((phantom.out_dir / "ground_truth.json").read_text())
    for label, value in {**truth["identifying_values"], **truth["retainable_values"]}.items():
        assert value.encode() in first, label
    for uid in (truth["original_uids"]["StudyInstanceUID"], truth["original_uids"]["FrameOfReferenceUID"]):
        assert uid.encode() in first
    ds = pydicom.dcmread(phantom.out_dir / phantom.manifest.files[0].name)
    assert (
        ds.file_meta.SourceApplicationEntityTitle
        == truth["identifying_values"]["SourceApplicationEntityTitle"]
    )
    assert (
        ds.private_block(0x0029, "ACME PATIENT INFO")[0x10].value
        == truth["identifying_values"]["PatientName"]
    )
    assert ds.private_block(0x0019, "ACME CT 1.0")[0x10].value == "HELICAL"
    assert 0x60003000 in ds and 0x60004000 in ds and 0x50000022 in ds


def _digest_tree(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize("multiframe", [False, True])
def test_same_seed_is_byte_identical_and_another_seed_differs(tmp_path, multiframe):
    kwargs = {"phases": 2, "slices": 6, "size": 32, "multiframe": multiframe}
    generate_phantom(tmp_path / "a", seed=5, **kwargs)
    generate_phantom(tmp_path / "b", seed=5, workers=1, **kwargs)
    generate_phantom(tmp_path / "c", seed=6, **kwargs)
    a, b, c = (_digest_tree(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)
    truth_a = json.loads((tmp_path / "a" / "ground_truth.json").read_text())
    truth_c = json.loads((tmp_path / "c" / "ground_truth.json").read_text())
    assert truth_a["identifying_values"]["PatientID"] != truth_c["identifying_values"]["PatientID"]
    assert truth_a["original_uids"] != truth_c["original_uids"]


def test_bad_parameters_are_refused_with_the_reason(tmp_path):
    from dicomflow.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="slices >= 2"):
        generate_phantom(tmp_path, phases=1, slices=1, size=32)
