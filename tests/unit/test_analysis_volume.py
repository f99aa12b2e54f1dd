"""Volume assembly: phases grouped, slices ordered along the normal, HU rescaled, geometry checked.

``write_ct_scan`` builds a small synthetic 4D-CT (single-frame CT or enhanced multi-frame) whose
truth is known by construction; the analysis accuracy on the real phantom is in
test_analysis_pipeline.py.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicomflow.analysis.volume import assemble, read_frames
from dicomflow.errors import AnalysisError

SLICE_MM = 2.5
PIXEL_MM = 3.0


def synthetic_hu(phase: int, phases: int, slices: int, size: int) -> np.ndarray:
    """A body (40 HU) with two box lungs; the lungs lengthen towards the feet at inhale (phase 0),
    normal lung -700 HU at exhale and less dense inflated, a 'defect' block stays at -700 HU."""
    b = (1 + np.cos(2 * np.pi * phase / phases)) / 2
    hu = np.full((slices, size, size), -1000, np.int16)
    hu[:, size // 8 : -size // 8, size // 8 : -size // 8] = 40
    extra = round(b * slices // 4)
    top = slices - 2
    bottom = max(1, slices // 3 - extra)
    n_exhale = top - slices // 3
    lung_hu = round(300 * n_exhale / (top - bottom) - 1000)
    for c0, c1 in ((size // 4, size // 2 - 2), (size // 2 + 2, 3 * size // 4)):
        hu[bottom:top, size // 4 : 3 * size // 4, c0:c1] = lung_hu
    hu[slices // 2 : top, size // 4 : size // 2, size // 4 : size // 2 - 2] = -700  # the defect
    hu[:, size // 2, size // 2] = -1000  # an 'airway': air, not lung
    return hu


def _ct_dataset(study: str, series: str, frame_of_ref: str, phase: int, phases: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Anon^Phantom", "PHANTOM", "", "O"
    # No patient behind it: marked de-identified, as `dicomflow analyze` requires of its input.
    ds.PatientIdentityRemoved, ds.DeidentificationMethod = "YES", "synthetic, no patient"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_ref
    ds.StudyID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "1", "20260101", "120000", ""
    ds.ReferringPhysicianName, ds.Modality, ds.Manufacturer = "", "CT", "synthetic"
    ds.SeriesNumber = phase + 1
    ds.SeriesDescription = f"4D-CT {100 * phase // phases}% synthetic"
    ds.TemporalPositionIdentifier = phase + 1
    ds.NumberOfTemporalPositions = phases
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def write_ct_scan(
    root: Path,
    *,
    phases: int = 3,
    slices: int = 12,
    size: int = 32,
    multiframe: bool = False,
    shuffle_positions: bool = False,
    slope: float = 1.0,
) -> dict[int, np.ndarray]:
    """Write the synthetic scan under ``root``; returns the HU volume per phase (slice 0 inferior)."""
    study, frame_of_ref = generate_uid(), generate_uid()
    truth = {}
    for p in range(phases):
        hu = synthetic_hu(p, phases, slices, size)
        truth[p] = hu
        stored = np.rint((hu.astype(np.float64) + 1024) / slope).astype(np.uint16)
        series = generate_uid()
        order = list(range(slices))
        if shuffle_positions:
            random.Random(p).shuffle(order)
        if multiframe:
            ds = _ct_dataset(study, series, frame_of_ref, p, phases)
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = EnhancedCTImageStorage
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.Rows = ds.Columns = size
            ds.NumberOfFrames = slices
            shared = Dataset()
            measures = Dataset()
            measures.PixelSpacing, measures.SliceThickness = [PIXEL_MM, PIXEL_MM], SLICE_MM
            orientation = Dataset()
            orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            transform = Dataset()
            transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = -1024, slope, "HU"
            shared.PixelMeasuresSequence = Sequence([measures])
            shared.PlaneOrientationSequence = Sequence([orientation])
            shared.PixelValueTransformationSequence = Sequence([transform])
            ds.SharedFunctionalGroupsSequence = Sequence([shared])
            items = []
            for i in order:
                item, position, content = Dataset(), Dataset(), Dataset()
                position.ImagePositionPatient = [0.0, 0.0, i * SLICE_MM]
                content.TemporalPositionIndex = p + 1
                item.PlanePositionSequence = Sequence([position])
                item.FrameContentSequence = Sequence([content])
                items.append(item)
            ds.PerFrameFunctionalGroupsSequence = Sequence(items)
            ds.PixelData = stored[order].tobytes()
            ds.save_as(root / f"phase_{p:02d}.dcm", enforce_file_format=True)
            continue
        (root / f"phase_{p:02d}").mkdir(parents=True, exist_ok=True)
        for n, i in enumerate(order):
            ds = _ct_dataset(study, series, frame_of_ref, p, phases)
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = n + 1
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.ImagePositionPatient = [0.0, 0.0, i * SLICE_MM]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing, ds.SliceThickness = [PIXEL_MM, PIXEL_MM], SLICE_MM
            ds.Rows = ds.Columns = size
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, slope, "HU"
            ds.PixelData = stored[i].tobytes()
            ds.save_as(root / f"phase_{p:02d}" / f"slice_{n:04d}.dcm", enforce_file_format=True)
    return truth


def _read_dir(root: Path) -> list:
    return [f for path in sorted(root.rglob("*.dcm")) for f in read_frames(path.read_bytes())]


@pytest.mark.parametrize("multiframe", [False, True], ids=["single-frame", "enhanced-multiframe"])
def test_phases_are_grouped_sorted_and_rescaled_to_hu(tmp_path: Path, multiframe: bool) -> None:
    # Given a 3-phase scan whose slices are written in shuffled order
    truth = write_ct_scan(tmp_path, multiframe=multiframe, shuffle_positions=True)
    # When it is assembled
    scan = assemble(_read_dir(tmp_path))
    # Then each phase is an int16 HU volume in position order, equal to the truth voxel for voxel
    assert len(scan.phases) == 3
    for phase in scan.phases:
        assert phase.hu.dtype == np.int16
        np.testing.assert_array_equal(phase.hu, truth[phase.index])
        assert np.all(np.diff(phase.positions[:, 2]) > 0)
    assert scan.spacing_mm == pytest.approx((SLICE_MM, PIXEL_MM, PIXEL_MM))
    assert scan.voxel_volume_ml == pytest.approx(SLICE_MM * PIXEL_MM * PIXEL_MM / 1000)
    assert [p.percent for p in scan.phases] == [0.0, 33.0, 66.0]


def test_a_non_unit_rescale_slope_is_applied(tmp_path: Path) -> None:
    # Given stored values that must be multiplied by 2 to give HU
    truth = write_ct_scan(tmp_path, phases=2, slices=4, size=16, slope=2.0)
    # When assembled, HU match the truth to the rounding of the stored values
    scan = assemble(_read_dir(tmp_path))
    assert np.abs(scan.phases[0].hu.astype(int) - truth[0]).max() <= 1


def test_a_missing_slice_makes_spacing_non_uniform_and_is_refused(tmp_path: Path) -> None:
    # Given a phase with one slice removed from the middle
    write_ct_scan(tmp_path, phases=2, slices=8, size=16)
    (tmp_path / "phase_01" / "slice_0004.dcm").unlink()
    # When assembled, Then the spacing check refuses it with a reason, not a wrong volume
    with pytest.raises(AnalysisError, match="non-uniform slice spacing"):
        assemble(_read_dir(tmp_path))


def test_a_duplicated_position_is_refused(tmp_path: Path) -> None:
    write_ct_scan(tmp_path, phases=2, slices=6, size=16)
    data = (tmp_path / "phase_00" / "slice_0002.dcm").read_bytes()
    frames = _read_dir(tmp_path) + read_frames(data)  # the same image twice
    with pytest.raises(AnalysisError, match="same position"):
        assemble(frames)


def test_phases_covering_different_slices_are_refused(tmp_path: Path) -> None:
    write_ct_scan(tmp_path, phases=2, slices=6, size=16)
    (tmp_path / "phase_01" / "slice_0005.dcm").unlink()  # the last one: spacing stays uniform
    with pytest.raises(AnalysisError, match="phase 1"):
        assemble(_read_dir(tmp_path))


def test_pydicom_ct_test_file_is_read_with_its_rescale() -> None:
    # Given pydicom's bundled CT (signed 16-bit, its own rescale)
    path = get_testdata_file("CT_small.dcm")
    frames = read_frames(Path(path).read_bytes())
    import pydicom

    ds = pydicom.dcmread(path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    # Then the HU are the library's decoded pixels, rescaled
    np.testing.assert_array_equal(frames[0].hu, expected.astype(np.int16))


def test_compressed_pixel_data_is_refused_with_a_reason() -> None:
    path = get_testdata_file("JPEG2000.dcm")
    with pytest.raises(AnalysisError, match="transfer syntax"):
        read_frames(Path(path).read_bytes())


def test_unreadable_bytes_are_an_analysis_error() -> None:
    with pytest.raises(AnalysisError, match="not readable DICOM"):
        read_frames(b"not a dicom file at all" * 10)
