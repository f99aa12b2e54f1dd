"""Fallback inputs for bench_deid when ``dicomflow phantom`` is unavailable or fails.

A CT series (one single-frame file per slice) and an Enhanced CT multi-frame file, with a header a
scanner would write (patient identity, dates, descriptions, UIDs, a private block) and noise pixels.
The multi-frame file's pixel data is streamed to disk frame by frame, so a 1 GB file never sits in
memory. A manifest.json is written next to the files, as the phantom does.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicomflow.manifest import ScanManifest, ScanType, files_from_directory


def _base(sop_class: str, rows: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
        "Bench^Patient",
        "BENCH-001",
        "19600101",
        "F",
    )
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240102"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101010"
    ds.AccessionNumber, ds.StudyID, ds.SeriesNumber = "ACC123", "S1", 1
    ds.Modality, ds.Manufacturer, ds.InstitutionName = "CT", "Bench", "Bench Hospital"
    ds.ReferringPhysicianName, ds.StudyDescription, ds.SeriesDescription = "Doc^Ref", "4D CT", "phase 0"
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.add_new(0x00091010, "LO", "BENCH PRIVATE")
    ds.add_new(0x00091010 & 0xFFFF0000 | 0x1001, "LO", "private value")
    return ds


def _meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _frame(rows: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(-1000, 400, (rows, rows), dtype=np.int16).tobytes()


def write_series(root: Path, *, slices: int, rows: int) -> None:
    folder = root / "phase_00"
    folder.mkdir(parents=True)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    for index in range(slices):
        ds = _base(CTImageStorage, rows)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.InstanceNumber = index + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-200, -200, index * 1.25]
        ds.PixelSpacing, ds.SliceThickness = [0.78, 0.78], 1.25
        ds.PixelData = _frame(rows, index)
        ds.file_meta = _meta(ds)
        ds.save_as(folder / f"slice_{index + 1:04d}.dcm", enforce_file_format=True)
    _manifest(root)


def write_multiframe(root: Path, *, frames: int, rows: int) -> None:
    root.mkdir(parents=True)
    ds = _base(EnhancedCTImageStorage, rows)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = (generate_uid() for _ in range(3))
    ds.NumberOfFrames = frames
    shared, orientation, measures = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [0.78, 0.78], 1.25
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = (
        Sequence([orientation]),
        Sequence([measures]),
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for index in range(frames):
        item, position, content = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [-200, -200, index * 1.25]
        content.TemporalPositionIndex, content.InStackPositionNumber = 1, index + 1
        item.PlanePositionSequence, item.FrameContentSequence = Sequence([position]), Sequence([content])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.file_meta = _meta(ds)
    header = io.BytesIO()
    pydicom.dcmwrite(header, ds, enforce_file_format=True)
    frame = _frame(rows, 0)
    with open(root / "phase_00.dcm", "wb") as fh:
        fh.write(header.getvalue())
        # Pixel Data (7FE0,0010) OW, explicit VR little endian, then the frames streamed
        fh.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, len(frame) * frames))
        for _ in range(frames):
            fh.write(frame)
    _manifest(root)


def _manifest(root: Path) -> None:
    manifest = ScanManifest(device_id="bench", scan_type=ScanType.FOUR_D_CT, files=files_from_directory(root))
    (root / "manifest.json").write_text(manifest.to_json())
