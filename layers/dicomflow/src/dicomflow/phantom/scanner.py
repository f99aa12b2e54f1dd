"""The phantom's scanner: turns the anatomy into DICOM files, one series per respiratory phase.

Single-frame CT Image Storage (``phase_PP/slice_SSSS.dcm``) or Enhanced CT Image Storage, one
multi-frame file per phase (``phase_PP.dcm``). Slices are generated and written one at a time and
hashed as they are written, so memory does not grow with the scan: for an enhanced file the header
is written with pydicom and the Pixel Data element (tag, VR, 32-bit length) and its frames are
appended by hand.

Everything is deterministic for a seed: UIDs come from ``generate_uid`` with fixed entropy sources,
dates are fixed, and the noise of slice k of phase p comes from its own seeded generator.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset, Sequence
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicomflow.phantom.anatomy import DEFECT, LUNG, Thorax, hu_lut, noise
from dicomflow.phantom.identity import Identity

RESCALE_INTERCEPT = -1024
_MAX_STORED = 4095  # BitsStored 12
_IMPLEMENTATION_VERSION = "ACMECT_41"
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's prefix for generated UIDs


@dataclass(frozen=True)
class WrittenFile:
    name: str  # relative to the scan folder, POSIX
    size: int
    sha256: str


@dataclass(frozen=True)
class PhaseResult:
    phase: int
    files: tuple[WrittenFile, ...]
    lung_voxels: int
    defect_voxels: int


@dataclass(frozen=True)
class ScanPlan:
    """What every phase's writer needs; small and picklable for a process pool."""

    out_dir: str
    phases: int
    slices: int
    size: int
    multiframe: bool
    seed: int
    identity: Identity
    normal_hu: tuple[int, ...]
    defect_hu: tuple[int, ...]

    def uid(self, *parts: object) -> UID:
        return generate_uid(_UID_PREFIX, entropy_srcs=["dicomflow-phantom", str(self.seed), *map(str, parts)])

    @property
    def study_uid(self) -> UID:
        return self.uid("study")

    @property
    def frame_of_reference_uid(self) -> UID:
        return self.uid("frame-of-reference")

    def series_uid(self, phase: int) -> UID:
        return self.uid("series", phase)

    def percent(self, phase: int) -> float:
        return 100.0 * phase / self.phases

    def series_description(self, phase: int) -> str:
        label = f"4D-CT {self.percent(phase):.0f}%"
        if phase == 0:
            return f"{label} Inspiration"
        if phase == self.phases // 2:
            return f"{label} Expiration"
        return label

    def slice_name(self, phase: int, index: int) -> str:
        width = max(4, len(str(self.slices - 1)))
        return f"phase_{phase:02d}/slice_{index:0{width}d}.dcm"

    def phase_name(self, phase: int) -> str:
        return f"phase_{phase:02d}.dcm"


def count_labels(size: int, slices: int, phases: int, phase: int) -> tuple[int, int]:
    """Lung (defect included) and defect voxel counts of one phase: the first pass, since the
    HU of a phase follows from them."""
    thorax = Thorax(size=size, slices=slices, phases=phases)
    counter = _LungCounter()
    for index in range(slices):
        counter.add(thorax.labels(phase, index))
    return counter.lung, counter.defect


def write_phase(plan: ScanPlan, phase: int) -> PhaseResult:
    """Write one phase's series and return its files with their sizes and SHA-256."""
    thorax = Thorax(size=plan.size, slices=plan.slices, phases=plan.phases)
    lut = hu_lut(plan.normal_hu[phase], plan.defect_hu[phase])
    counter = _LungCounter()

    def frames() -> Iterator[NDArray[np.uint16]]:
        for index in range(plan.slices):
            labels = thorax.labels(phase, index)
            counter.add(labels)
            rng = np.random.default_rng([plan.seed, phase, index])
            hu = lut[labels] + noise(rng, labels.shape)
            yield np.clip(hu - RESCALE_INTERCEPT, 0, _MAX_STORED).astype("<u2")

    if plan.multiframe:
        files: tuple[WrittenFile, ...] = (_write_enhanced(plan, phase, thorax, frames()),)
    else:
        files = tuple(_write_slices(plan, phase, thorax, frames()))
    return PhaseResult(phase=phase, files=files, lung_voxels=counter.lung, defect_voxels=counter.defect)


class _LungCounter:
    def __init__(self) -> None:
        self.lung = 0
        self.defect = 0

    def add(self, labels: NDArray[np.uint8]) -> None:
        counts = np.bincount(labels.ravel(), minlength=DEFECT + 1)
        self.lung += int(counts[LUNG] + counts[DEFECT])
        self.defect += int(counts[DEFECT])


# -- single-frame CT ---------------------------------------------------------------------------


def _write_slices(
    plan: ScanPlan, phase: int, thorax: Thorax, frames: Iterator[NDArray[np.uint16]]
) -> Iterator[WrittenFile]:
    ds = _common_dataset(plan, phase, thorax)
    ds.SOPClassUID = CTImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SliceThickness = _ds(thorax.slice_mm)
    ds.PixelSpacing = [_ds(thorax.pixel_mm), _ds(thorax.pixel_mm)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.RescaleIntercept = RESCALE_INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = -600
    ds.WindowWidth = 1500
    ds.TemporalPositionIdentifier = phase + 1
    ds.NumberOfTemporalPositions = plan.phases
    ds.AcquisitionDateTime = f"{plan.identity.study_date}{plan.identity.study_time}.{phase:02d}0000"
    _add_overlay(ds, plan)
    meta = ds.file_meta
    for index, pixels in enumerate(frames):
        sop_uid = plan.uid("sop", phase, index)
        ds.SOPInstanceUID = sop_uid
        meta.MediaStorageSOPInstanceUID = sop_uid
        ds.InstanceNumber = index + 1
        z = thorax.z(index)
        ds.ImagePositionPatient = [_ds(thorax.x[0]), _ds(thorax.y[0]), _ds(z)]
        ds.SliceLocation = _ds(z)
        ds.PixelData = pixels.tobytes()
        buffer = io.BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        data = buffer.getvalue()
        name = plan.slice_name(phase, index)
        path = Path(plan.out_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        yield WrittenFile(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())


# -- enhanced multi-frame CT -------------------------------------------------------------------


def _write_enhanced(
    plan: ScanPlan, phase: int, thorax: Thorax, frames: Iterator[NDArray[np.uint16]]
) -> WrittenFile:
    ds = _common_dataset(plan, phase, thorax)
    identity = plan.identity
    sop_uid = plan.uid("sop", phase)
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.InstanceNumber = 1
    ds.NumberOfFrames = plan.slices
    ds.ContentQualification = "PRODUCT"
    ds.PresentationLUTShape = "IDENTITY"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.PixelPresentation = "MONOCHROME"
    acquisition = f"{identity.study_date}{identity.study_time}.{phase:02d}0000"
    ds.AcquisitionDateTime = acquisition
    ds.AcquisitionDuration = 0.5
    ds.RespiratoryMotionCompensationTechnique = "GATING"
    ds.RespiratorySignalSource = "BELT"
    organisation_uid = plan.uid("dimension-organisation")
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=organisation_uid)])
    ds.DimensionOrganizationType = "3D_TEMPORAL"
    ds.DimensionIndexSequence = Sequence(
        [
            _item(
                DimensionOrganizationUID=organisation_uid,
                DimensionIndexPointer=0x00209128,  # Temporal Position Index
                FunctionalGroupPointer=0x00209111,  # Frame Content Sequence
                DimensionDescriptionLabel="Respiratory phase",
            ),
            _item(
                DimensionOrganizationUID=organisation_uid,
                DimensionIndexPointer=0x00209057,  # In-Stack Position Number
                FunctionalGroupPointer=0x00209111,
                DimensionDescriptionLabel="Slice",
            ),
        ]
    )
    ds.SharedFunctionalGroupsSequence = Sequence(
        [
            _item(
                PixelMeasuresSequence=Sequence(
                    [
                        _item(
                            PixelSpacing=[_ds(thorax.pixel_mm), _ds(thorax.pixel_mm)],
                            SliceThickness=_ds(thorax.slice_mm),
                            SpacingBetweenSlices=_ds(thorax.slice_mm),
                        )
                    ]
                ),
                PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
                PixelValueTransformationSequence=Sequence(
                    [_item(RescaleIntercept=RESCALE_INTERCEPT, RescaleSlope=1, RescaleType="HU")]
                ),
                CTImageFrameTypeSequence=Sequence(
                    [
                        _item(
                            FrameType=["ORIGINAL", "PRIMARY", "AXIAL", "NONE"],
                            PixelPresentation="MONOCHROME",
                            VolumetricProperties="VOLUME",
                            VolumeBasedCalculationTechnique="NONE",
                        )
                    ]
                ),
                FrameVOILUTSequence=Sequence([_item(WindowCenter=-600, WindowWidth=1500)]),
            )
        ]
    )
    per_frame = []
    for index in range(plan.slices):
        per_frame.append(
            _item(
                FrameContentSequence=Sequence(
                    [
                        _item(
                            FrameAcquisitionDateTime=acquisition,
                            FrameReferenceDateTime=acquisition,
                            FrameAcquisitionDuration=0.5,
                            StackID="1",
                            InStackPositionNumber=index + 1,
                            TemporalPositionIndex=phase + 1,
                            DimensionIndexValues=[phase + 1, index + 1],
                        )
                    ]
                ),
                PlanePositionSequence=Sequence(
                    [_item(ImagePositionPatient=[_ds(thorax.x[0]), _ds(thorax.y[0]), _ds(thorax.z(index))])]
                ),
                RespiratorySynchronizationSequence=Sequence(
                    [_item(NominalPercentageOfRespiratoryPhase=plan.percent(phase))]
                ),
            )
        )
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    _add_overlay(ds, plan)

    name = plan.phase_name(phase)
    path = Path(plan.out_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    length = plan.slices * plan.size * plan.size * 2
    with path.open("wb") as raw:
        out = _HashingWriter(raw)
        header = io.BytesIO()
        dcmwrite(header, ds, enforce_file_format=True)
        out.write(header.getvalue())
        # Pixel Data, explicit VR little endian: tag, "OW", two reserved bytes, 32-bit length.
        out.write(struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OW", length))
        for pixels in frames:
            out.write(pixels.tobytes())
    if out.size != path.stat().st_size:  # pragma: no cover - a short write is a bug
        raise OSError("the enhanced CT file was not written completely")
    return WrittenFile(name=name, size=out.size, sha256=out.hexdigest())


class _HashingWriter:
    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._raw.write(data)
        self._hash.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


# -- what every file carries -------------------------------------------------------------------


def _common_dataset(plan: ScanPlan, phase: int, thorax: Thorax) -> Dataset:
    """Patient, study, series, equipment and image pixel attributes, with the planted identity."""
    who = plan.identity
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = EnhancedCTImageStorage if plan.multiframe else CTImageStorage
    meta.ImplementationClassUID = plan.uid("implementation")
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION
    meta.SourceApplicationEntityTitle = who.ae_title

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate = who.study_date
    ds.InstanceCreationTime = who.study_time
    # Patient
    ds.PatientName = who.patient_name
    ds.PatientID = who.patient_id
    ds.IssuerOfPatientID = who.issuer_of_patient_id
    ds.OtherPatientIDsSequence = Sequence(
        [_item(PatientID=who.other_patient_id, IssuerOfPatientID="NHS", TypeOfPatientID="TEXT")]
    )
    ds.PatientBirthDate = who.birth_date
    ds.PatientBirthTime = who.birth_time
    ds.PatientSex = who.sex
    ds.PatientAge = who.age
    ds.PatientSize = who.size_m
    ds.PatientWeight = who.weight_kg
    ds.PatientAddress = who.address
    ds.PatientTelephoneNumbers = who.telephone
    ds.EthnicGroup = who.ethnic_group
    ds.Occupation = who.occupation
    ds.AdditionalPatientHistory = who.history
    ds.PatientComments = who.patient_comments
    ds.SmokingStatus = "NO"
    # Study
    ds.StudyInstanceUID = plan.study_uid
    ds.StudyDate = who.study_date
    ds.StudyTime = who.study_time
    ds.AccessionNumber = who.accession_number
    ds.StudyID = who.study_id
    ds.StudyDescription = who.study_description
    ds.ReferringPhysicianName = who.referring_physician
    ds.NameOfPhysiciansReadingStudy = who.reading_physician
    ds.ProcedureCodeSequence = Sequence(
        [_item(CodeValue="CTTHX4D", CodingSchemeDesignator="99ACME", CodeMeaning="CT Thorax 4D")]
    )
    ds.ReferencedStudySequence = Sequence(
        [_item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1", ReferencedSOPInstanceUID=plan.uid("prior"))]
    )
    ds.RequestAttributesSequence = Sequence(
        [
            _item(
                RequestedProcedureID=who.requested_procedure_id,
                ScheduledProcedureStepID=who.scheduled_step_id,
                RequestedProcedureDescription=who.requested_procedure_description,
                ScheduledProtocolCodeSequence=Sequence(
                    [
                        _item(
                            CodeValue="4DCT-VENT",
                            CodingSchemeDesignator="99ACME",
                            CodeMeaning="4D-CT ventilation",
                        )
                    ]
                ),
            )
        ]
    )
    # Series
    ds.Modality = "CT"
    ds.SeriesInstanceUID = plan.series_uid(phase)
    ds.SeriesNumber = phase + 1
    ds.SeriesDate = who.study_date
    ds.SeriesTime = who.study_time
    ds.SeriesDescription = plan.series_description(phase)
    ds.ProtocolName = "4D THORAX VENTILATION"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.PerformingPhysicianName = who.performing_physician
    ds.OperatorsName = who.operator
    # Equipment
    ds.Manufacturer = "ACME Medical"
    ds.ManufacturerModelName = "Breathe 4D 128"
    ds.DeviceSerialNumber = who.device_serial
    ds.SoftwareVersions = "VA41C"
    ds.InstitutionName = who.institution
    ds.InstitutionAddress = who.institution_address
    ds.InstitutionalDepartmentName = who.department
    ds.StationName = who.station_name
    # Frame of reference, acquisition, image
    ds.FrameOfReferenceUID = plan.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ContentDate = who.study_date
    ds.ContentTime = who.study_time
    ds.AcquisitionDate = who.study_date
    ds.AcquisitionTime = who.study_time
    ds.AcquisitionNumber = phase + 1
    ds.KVP = 120
    ds.ConvolutionKernel = "B30f"
    ds.ImageComments = who.image_comments
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = plan.size
    ds.Columns = plan.size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    _add_private_blocks(ds, who)
    _add_curve(ds, who)
    return ds


def _add_private_blocks(ds: Dataset, who: Identity) -> None:
    vendor = ds.private_block(0x0019, "ACME CT 1.0", create=True)
    vendor.add_new(0x10, "LO", "HELICAL")
    vendor.add_new(0x11, "DS", "0.55")  # pitch
    vendor.add_new(0x12, "US", 3)  # tube focal spot
    phi = ds.private_block(0x0029, "ACME PATIENT INFO", create=True)
    phi.add_new(0x10, "PN", who.patient_name)
    phi.add_new(0x11, "LO", who.patient_id)
    phi.add_new(0x12, "DA", who.birth_date)
    phi.add_new(0x13, "LT", who.private_note)


def _add_overlay(ds: Dataset, plan: ScanPlan) -> None:
    """A graphics overlay (group 6000): a frame drawn around the image, and a comment with text."""
    size = plan.size
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[[0, -1], :] = 1
    mask[:, [0, -1]] = 1
    ds.add_new(0x60000010, "US", size)  # Overlay Rows
    ds.add_new(0x60000011, "US", size)  # Overlay Columns
    ds.add_new(0x60000040, "CS", "G")  # Overlay Type
    ds.add_new(0x60000050, "SS", [1, 1])  # Overlay Origin
    ds.add_new(0x60000100, "US", 1)  # Overlay Bits Allocated
    ds.add_new(0x60000102, "US", 0)  # Overlay Bit Position
    ds.add_new(0x60003000, "OW", np.packbits(mask.ravel(), bitorder="little").tobytes())  # Overlay Data
    ds.add_new(0x60004000, "LT", plan.identity.overlay_comment)  # Overlay Comments (retired)


def _add_curve(ds: Dataset, who: Identity) -> None:
    """A retired curve group (5000): a short respiratory trace and its description."""
    ds.add_new(0x50000005, "US", 1)  # Curve Dimensions
    ds.add_new(0x50000010, "US", 4)  # Number of Points
    ds.add_new(0x50000020, "CS", "RESP")  # Type of Data
    ds.add_new(0x50000022, "LO", who.curve_description)  # Curve Description
    ds.add_new(0x50003000, "OW", struct.pack("<4H", 10, 40, 80, 40))  # Curve Data


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters, stable across platforms."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"
