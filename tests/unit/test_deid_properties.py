"""Property-based invariants of de-identification (hypothesis)."""

from __future__ import annotations

import itertools
import re
import warnings

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from dicomflow.deid import Deidentifier, LocalKey, Verdict, deidentify_file
from dicomflow.deid.dates import shift_value
from dicomflow.deid.pydicom_engine import encode_header
from dicomflow.deid.uids import remap_uid

#: Distinctive planted words: 6-14 letters (short values are out of the leak check's scope).
words = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=6, max_size=14)
uid_parts = st.lists(st.integers(min_value=1, max_value=10**9), min_size=3, max_size=8)
keys = st.binary(min_size=16, max_size=48)
UID_RE = re.compile(r"^2\.25\.[1-9][0-9]{0,38}$")
FUZZ_DEID = Deidentifier(LocalKey(b"fuzz-key-0123456789"))

#: Where identifying values are recorded (listed attributes whose action removes or replaces them).
PLACES = {
    "PatientName": "PN",
    "PatientID": "LO",
    "OtherPatientIDs": "LO",
    "PatientAddress": "LO",
    "InstitutionName": "LO",
    "InstitutionAddress": "ST",
    "ReferringPhysicianName": "PN",
    "PerformingPhysicianName": "PN",
    "OperatorsName": "PN",
    "AccessionNumber": "SH",
    "StudyID": "SH",
    "RequestingPhysician": "PN",
    "PatientMotherBirthName": "PN",
}
#: Where they can then re-appear mixed with other text (Clean Descriptors, free text, unlisted).
ECHOES = {
    "StudyDescription": "LO",
    "SeriesDescription": "LO",
    "ProtocolName": "LO",
    "ImageComments": "LT",
    "AdditionalPatientHistory": "LT",
    "ConvolutionKernel": "SH",  # not in Table E.1-1: cleaned as unlisted text
}


def _dataset(values: dict[str, str], nested: str, private: str, echoes: dict[str, int]) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.9.7.1"
    ds.Modality = "CT"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    planted = list(values.values())
    for keyword, index in echoes.items():
        setattr(ds, keyword, f"ct {planted[index % len(planted)]} chest")
    item = Dataset()
    item.RequestedProcedureDescription = f"for {nested}"
    item.ScheduledPerformingPhysicianName = nested
    ds.RequestAttributesSequence = Sequence([item])
    ds.private_block(0x0009, "SOME VENDOR", create=True).add_new(0x10, "LO", private)
    ds.add_new(0x60024000, "LT", f"overlay {nested}")
    return ds


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    placed=st.dictionaries(st.sampled_from(sorted(PLACES)), words, min_size=1, max_size=8),
    nested=words,
    private=words,
    echoes=st.dictionaries(st.sampled_from(sorted(ECHOES)), st.integers(0, 7), max_size=6),
    key=keys,
)
def test_no_planted_value_survives(
    placed: dict[str, str], nested: str, private: str, echoes: dict[str, int], key: bytes
) -> None:
    # Given identifying words planted in listed attributes, echoed in descriptors and free text,
    # in a nested sequence, a private element and an overlay comment
    ds = _dataset(placed, nested, private, echoes)
    # When the data set is de-identified and encoded
    out = Deidentifier(LocalKey(key)).deidentify(ds, None)
    encoded = encode_header(out.file_meta, out.dataset, implicit=False, little=True).upper()
    # Then none of them appears anywhere in the bytes
    for word in [*placed.values(), nested, private]:
        assert word.encode() not in encoded


@settings(max_examples=60, deadline=None)
@given(parts=uid_parts, key=keys)
def test_uids_are_valid_and_deterministic(parts: list[int], key: bytes) -> None:
    uid = "1." + ".".join(str(p) for p in parts)
    new = remap_uid(LocalKey(key), uid)
    assert UID_RE.match(new) and len(new) <= 64
    assert remap_uid(LocalKey(key), uid) == new
    assert pydicom.uid.UID(new).is_valid


@settings(max_examples=40, deadline=None)
@given(parts=uid_parts, key=keys, other=keys)
def test_a_different_key_gives_different_uids(parts: list[int], key: bytes, other: bytes) -> None:
    uid = "1." + ".".join(str(p) for p in parts)
    if key != other:
        assert remap_uid(LocalKey(key), uid) != remap_uid(LocalKey(other), uid)


@settings(max_examples=30, deadline=None)
@given(
    study=uid_parts,
    instances=st.lists(uid_parts, min_size=2, max_size=5, unique_by=lambda p: tuple(p)),
    key=keys,
)
def test_references_stay_consistent_across_files(
    study: list[int], instances: list[list[int]], key: bytes
) -> None:
    # Given a series of files, each referencing the previous one, all of one study
    deid = Deidentifier(LocalKey(key))
    study_uid = "1." + ".".join(map(str, study))
    uids = ["1.9." + ".".join(map(str, p)) for p in instances]
    outs = []
    for i, uid in enumerate(uids):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID = CTImageStorage, uid, study_uid
        ds.PatientID = "PATIENT-1"
        if i:
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = CTImageStorage, uids[i - 1]
            ds.ReferencedImageSequence = Sequence([ref])
        outs.append(deid.deidentify(ds, None).dataset)
    # Then the study UID is one new UID, and every reference points at the previous file's new UID
    assert len({o.StudyInstanceUID for o in outs}) == 1
    assert outs[0].StudyInstanceUID != study_uid
    for prev, cur in itertools.pairwise(outs):
        assert cur.ReferencedImageSequence[0].ReferencedSOPInstanceUID == prev.SOPInstanceUID
    assert len({o.SOPInstanceUID for o in outs}) == len(uids)


@settings(max_examples=60, deadline=None)
@given(
    year=st.integers(1950, 2030),
    month=st.integers(1, 12),
    day=st.integers(1, 28),
    days=st.integers(365, 3650),
    span=st.integers(0, 400),
)
def test_date_shift_keeps_intervals(year: int, month: int, day: int, days: int, span: int) -> None:
    import datetime as dt

    start = dt.date(year, month, day)
    end = start + dt.timedelta(days=span)
    shifted = shift_value(f"{start:%Y%m%d}-{end:%Y%m%d}", days, "DA")
    a, b = (dt.datetime.strptime(p, "%Y%m%d").date() for p in shifted.split("-"))
    assert (b - a).days == span
    assert (start - a).days == days


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flips=st.lists(st.tuples(st.integers(132, 1499), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.integers(1, 3000)),
)
def test_corrupt_headers_never_raise_and_never_yield_unreadable_output(
    flips: list[tuple[int, int]], cut: int | None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Given a valid planted CT with random bytes of its header changed (and maybe cut short)
    from tests.unit.test_deid import planted_ct

    folder = tmp_path_factory.mktemp("fuzz")
    planted_ct(folder / "src.dcm")
    data = bytearray((folder / "src.dcm").read_bytes())
    for offset, value in flips:
        data[offset] = value
    (folder / "in.dcm").write_bytes(bytes(data[:cut] if cut else data))
    # When it is de-identified
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = deidentify_file(folder / "in.dcm", folder / "out.dcm", FUZZ_DEID)
    # Then there is a verdict with reasons, and whatever was written is readable DICOM
    assert report.verdict in set(Verdict)
    assert report.verdict is Verdict.PASSED or report.reasons
    if (folder / "out.dcm").exists():
        assert report.verdict is Verdict.PASSED and report.leak_check["passed"]
        pydicom.dcmread(folder / "out.dcm")
