"""Sequences met again with the same bytes are de-identified once and reused: the output, the action
counts and the identifying values must be exactly those of de-identifying every copy."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicomflow.deid import Deidentifier, LocalKey, Verdict, actions, deidentify_file

KEY = LocalKey(b"test-key-0123456789abcdef")
NAME = "Quixote^Alonso"


def _frame(index: int, repeated_uid: str) -> Dataset:
    content = Dataset()
    content.FrameAcquisitionDateTime = "20240611180702.000000"
    content.StackID = "QUIXOTE 1"  # text naming the patient, the same in every frame
    content.InStackPositionNumber = index + 1
    position = Dataset()
    position.ImagePositionPatient = [0.0, 0.0, float(index)]
    referenced = Dataset()
    referenced.ReferencedSOPInstanceUID = repeated_uid
    referenced.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    frame = Dataset()
    frame.FrameContentSequence = Sequence([content])
    frame.PlanePositionSequence = Sequence([position])
    frame.DerivationImageSequence = Sequence([Dataset()])
    frame.DerivationImageSequence[0].SourceImageSequence = Sequence([referenced])
    return frame


def _multiframe(path: Path, frames: int = 12) -> None:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedCTImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.StudyDate = NAME, "MRN-88412093", "20240611"
    ds.Modality, ds.Rows, ds.Columns, ds.NumberOfFrames = "CT", 4, 4, frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    repeated = generate_uid()
    ds.PerFrameFunctionalGroupsSequence = Sequence([_frame(i, repeated) for i in range(frames)])
    ds.PixelData = bytes(range(256)) * (frames * 32 // 256 + 1)
    ds.PixelData = ds.PixelData[: frames * 32]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def test_reused_sequences_give_the_output_of_rewriting_every_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an enhanced multi-frame header whose frames repeat sub-sequences byte for byte (text
    # naming the patient, a referenced UID) beside sequences that differ per frame
    src = tmp_path / "mf.dcm"
    _multiframe(src)
    # When it is de-identified with reuse, and again with reuse switched off
    with_reuse = deidentify_file(src, tmp_path / "a.dcm", Deidentifier(KEY))
    monkeypatch.setattr(actions._Run, "_sq_key", lambda self, ds, raw: None)
    without = deidentify_file(src, tmp_path / "b.dcm", Deidentifier(KEY))
    # Then both pass, and the files, the action counts and the leak check are identical
    assert with_reuse.verdict is Verdict.PASSED, with_reuse.reasons
    assert without.verdict is Verdict.PASSED, without.reasons
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()
    assert with_reuse.actions == without.actions
    assert with_reuse.leak_check == without.leak_check
    # and every frame was rewritten: the name is gone from each, the referenced UID remapped in each
    out = pydicom.dcmread(tmp_path / "a.dcm")
    frames = out.PerFrameFunctionalGroupsSequence
    assert len(frames) == 12
    uids = {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID for f in frames}
    assert len(uids) == 1 and uids.pop().startswith("2.25.")
    assert all("QUIXOTE" not in str(f.FrameContentSequence[0].get("StackID", "")) for f in frames)
    assert [f.PlanePositionSequence[0].ImagePositionPatient[2] for f in frames] == list(range(12))
    assert b"QUIXOTE" not in (tmp_path / "a.dcm").read_bytes().upper()
