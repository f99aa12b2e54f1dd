"""The byte-level engine remembers, per de-identifier, what became of each element it met (a series
repeats almost all of them): a de-identifier that has seen other files writes exactly what a fresh
one writes, byte for byte, with the same report; and an answer that depended on one file's own
UIDs is never reused for another file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files

from dicomflow import phantom
from dicomflow.deid import Deidentifier, DeidOptions, LocalKey
from dicomflow.deid.prepared import Prepared
from dicomflow.deid.rewrite import _MEMOS, prepare_raw
from dicomflow.dicom.elements import Buffer, Unsupported
from tests.unit.test_deid import planted_ct

KEY = LocalKey(b"memo-key-0123456789abcdef")
COMPARED = (
    "new_header",
    "actions",
    "leak",
    "held",
    "pixel_start",
    "pixel_end",
    "trailing_note",
    "sop_instance_uid",
)
FILES = sorted(p for p in get_testdata_files() if os.path.isfile(p))


def _prepare(data: bytes, deid: Deidentifier) -> Prepared | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return prepare_raw(Buffer(data, len(data)), deid)
        except Unsupported:
            return None


def _one_after_the_other(a: bytes, b: bytes, a_first: bool) -> tuple[Prepared, Prepared]:
    """``a`` and ``b`` prepared by one de-identifier, in the order given; each checked to be what
    a fresh de-identifier makes of it."""
    shared = Deidentifier(KEY)
    pair = [a, b] if a_first else [b, a]
    results = {id(data): _prepare(data, shared) for data in pair}
    for data in pair:
        _assert_same(results[id(data)], _prepare(data, Deidentifier(KEY)), "file")
    result_a, result_b = results[id(a)], results[id(b)]
    assert result_a is not None and result_b is not None
    return result_a, result_b


def _assert_same(warm: Prepared | None, cold: Prepared | None, name: str) -> None:
    assert (warm is None) == (cold is None), name
    if warm is None or cold is None:
        return
    for field in COMPARED:
        assert getattr(warm, field) == getattr(cold, field), f"{name}: {field}"


@pytest.mark.parametrize("options", ["defaults", "basic", "retain-uids,no-clean-descriptors"])
def test_a_deidentifier_that_saw_every_pydicom_file_writes_what_a_fresh_one_writes(options: str) -> None:
    # Given one de-identifier that meets all of pydicom's files (explicit and implicit VR, other
    # character sets, nested sequences, private blocks), twice over, one after the other
    spec = None if options == "defaults" else options
    shared = Deidentifier(KEY, DeidOptions.from_spec(spec))
    datas = [(Path(p).name, Path(p).read_bytes()) for p in FILES]
    taken = 0
    for _ in range(2):
        for name, data in datas:
            # When it and a fresh de-identifier (nothing remembered) prepare the same file
            warm = _prepare(data, shared)
            cold = _prepare(data, Deidentifier(KEY, DeidOptions.from_spec(spec)))
            # Then header bytes, counts, leak check, verdict inputs and pixel range are the same
            _assert_same(warm, cold, name)
            taken += warm is not None
    assert taken > 200
    # And it did remember (the elements of the second pass were all known)
    assert _MEMOS[shared].walked


def test_a_series_is_written_alike_by_a_remembering_and_a_fresh_deidentifier(tmp_path: Path) -> None:
    # Given a phantom series (slices differ in position, instance number and SOP Instance UID)
    phantom.generate_phantom(tmp_path / "scan", phases=2, slices=8, size=32, seed=5)
    files = sorted((tmp_path / "scan").rglob("*.dcm"))
    shared = Deidentifier(KEY)
    read_against = 0
    for path in files:
        data = path.read_bytes()
        before = _MEMOS[shared].last_header if shared in _MEMOS else None
        # When each slice is prepared by a de-identifier that saw the slices before it, and by a fresh one
        warm, cold = _prepare(data, shared), _prepare(data, Deidentifier(KEY))
        # Then both are the same, and neither leaks
        _assert_same(warm, cold, path.name)
        assert warm is not None and warm.leak.passed
        after = _MEMOS[shared].last_header
        if before is not None and after is not None:
            read_against += any(a is b for a, b in zip(after.dataset, before.dataset, strict=False))
    # And most slices were parsed only where they differ from the one before (a slice whose Instance
    # Number or UID is longer than the last one's is parsed whole: 12 of these 16)
    assert read_against >= len(files) // 2


def _slice_quoting(path: Path, sop_uid: str, quoted: str) -> bytes:
    ds = planted_ct(path, trailing=False)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.StudyDescription = f"SEE {quoted}"  # a descriptor (C: cleaned) that quotes a UID
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


@pytest.mark.parametrize("order", ["quoting-own-first", "quoting-other-first"])
def test_a_descriptor_cleaned_of_its_own_files_uid_is_not_reused_for_another_file(
    tmp_path: Path, order: str
) -> None:
    # Given two slices with the same descriptor quoting a UID: in one it is that slice's own SOP
    # Instance UID (identifying: cleaned out), in the other an unrelated one (kept)
    quoted = "1.2.826.0.1.3680043.8.498.424242"
    own = _slice_quoting(tmp_path / "own.dcm", quoted, quoted)
    other = _slice_quoting(tmp_path / "other.dcm", "1.2.826.0.1.3680043.8.498.77", quoted)
    # When one de-identifier prepares both, in either order
    # Then each descriptor is cleaned as for that file alone
    own_result, other_result = _one_after_the_other(own, other, order == "quoting-own-first")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        own_out = pydicom.dcmread(pydicom.filebase.DicomBytesIO(own_result.new_header), force=True)
        other_out = pydicom.dcmread(pydicom.filebase.DicomBytesIO(other_result.new_header), force=True)
    assert quoted not in own_out.StudyDescription
    assert quoted in other_out.StudyDescription
    assert own_result.leak.passed and other_result.leak.passed


def test_what_is_remembered_is_bounded_and_forgetting_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given slices of six different patients, and a memo allowed very few entries
    from dicomflow.deid.rewrite import _Memo

    monkeypatch.setattr(_Memo, "MAX_ENTRIES", 150)
    slices = []
    for n in range(6):
        path = tmp_path / f"p{n}.dcm"
        planted_ct(path, values={"pid": f"PID-{n:04d}-X", "name": f"Patient{n}^Given"}, trailing=False)
        slices.append(path.read_bytes())
    shared = Deidentifier(KEY)
    for _ in range(2):
        for data in slices:
            # When one de-identifier prepares them in turn (twice round)
            warm = _prepare(data, shared)
            # Then each comes out as from a fresh de-identifier
            _assert_same(warm, _prepare(data, Deidentifier(KEY)), "slice")
            # And the memo keeps at most a few patients' contexts and its bounded number of entries
            memo = _MEMOS[shared]
            assert len(memo.walked) <= _Memo.MAX_CONTEXTS
            assert memo._entries <= _Memo.MAX_ENTRIES


# -- slices that each carry their own acquisition date-time ------------------------------------------
#
# A scanner writes each slice's own Acquisition DateTime, and a date-time is identifying: the
# identifying text then differs from slice to slice. What was decided and searched for one slice
# is reused for the next only where it provably comes out the same (tests below compare with a
# fresh de-identifier, and count what is decided and searched anew).

STUDY = "1.2.826.0.1.3680043.8.498.1357911"


def _slice_acquired_at(path: Path, when: str, **values: str) -> bytes:
    ds = planted_ct(path, study_uid=STUDY, trailing=False)
    ds.AcquisitionDateTime = when
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def _when(n: int) -> str:
    # (not the study's date, 20240315: that is identifying in every slice)
    return f"20240316101530.{n:06d}"


def test_slices_with_their_own_acquisition_datetime_are_decided_once_and_written_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given six slices of one study, each with its own Acquisition DateTime (and SOP Instance,
    # Series and Frame of Reference UIDs: four elements differ from slice to slice)
    from dicomflow.deid import rewrite
    from dicomflow.deid.leakcheck import LeakSearch

    slices = [_slice_acquired_at(tmp_path / f"s{n}.dcm", _when(250000 + n)) for n in range(6)]
    decided: list[int] = []
    searched: list[int] = []
    decide, search = rewrite._RawRun._decide_public, LeakSearch.search

    def counting_decide(self: rewrite._RawRun, e: object) -> object:
        decided[-1] += 1
        return decide(self, e)  # type: ignore[arg-type]

    def counting_search(self: LeakSearch, values: object) -> object:
        searched[-1] += 1
        return search(self, values)  # type: ignore[arg-type]

    shared = Deidentifier(KEY)
    for n, data in enumerate(slices):
        # When one de-identifier prepares them in turn (counting what it decides and searches anew)
        monkeypatch.setattr(rewrite._RawRun, "_decide_public", counting_decide)
        monkeypatch.setattr(LeakSearch, "search", counting_search)
        decided.append(0)
        searched.append(0)
        warm = _prepare(data, shared)
        monkeypatch.undo()
        # Then each comes out as from a fresh de-identifier, and passes
        _assert_same(warm, _prepare(data, Deidentifier(KEY)), f"slice {n}")
        assert warm is not None and warm.leak.passed
    # And after the first slice only the elements that differ are decided and searched again
    # (and the file meta, searched for every file)
    assert decided[0] > 40 and searched[0] > 40
    assert all(count <= 4 for count in decided[1:]), decided
    assert all(count <= 4 + 1 for count in searched[1:]), searched


@pytest.mark.parametrize("order", ["quoting-slice-first", "quoted-slice-first"])
def test_a_descriptor_naming_another_slices_operator_is_cleaned_as_for_each_slice_alone(
    tmp_path: Path, order: str
) -> None:
    # Given two slices whose Series Description names the second one's operator: identifying in
    # the second (cleaned out), not in the first (kept). (A quoted date-time would not do: text
    # that looks like a UID is never remembered, see the test above on UIDs.)
    description = "Scan reviewed by Quennell"
    first = _slice_acquired_at(
        tmp_path / "a.dcm", _when(111111), OperatorsName="Abernathy^Ann", SeriesDescription=description
    )
    second = _slice_acquired_at(
        tmp_path / "b.dcm", _when(222222), OperatorsName="Quennell^Bob", SeriesDescription=description
    )
    # When one de-identifier prepares both, in either order
    # Then each is what a fresh de-identifier makes of it
    kept, cleaned = _one_after_the_other(first, second, order == "quoting-slice-first")
    assert b"Quennell" in kept.new_header
    assert b"QUENNELL" not in cleaned.new_header.upper()
    assert kept.leak.passed and cleaned.leak.passed


@pytest.mark.parametrize("order", ["passing-slice-first", "failing-slice-first"])
def test_a_kept_value_holding_a_datetime_identifying_in_one_slice_fails_only_that_slice(
    tmp_path: Path, order: str
) -> None:
    # Given two slices whose Station Name (kept: Retain Device Identity) holds the second one's
    # Acquisition DateTime: a leak in the second, nothing in the first
    quoted = _when(424242)
    passing = _slice_acquired_at(tmp_path / "a.dcm", _when(131313), StationName=f"ST {quoted}")
    failing = _slice_acquired_at(tmp_path / "b.dcm", quoted, StationName=f"ST {quoted}")
    # When one de-identifier prepares both, in either order
    # Then each leak check is what a fresh de-identifier finds: only the second slice fails
    ok, leaked = _one_after_the_other(passing, failing, order == "passing-slice-first")
    assert ok.leak.passed
    assert not leaked.leak.passed and "(0008,1010)" in leaked.leak.element_hits
