"""The two header engines agree: the byte-level rewriter (no pydicom) and the pydicom engine give the
same de-identified data set, file meta, action counts, leak check and verdict inputs for every file
the rewriter takes, under several option sets; the rewriter declines what it does not read (and the
pydicom engine then handles it); and a worker that only meets well-formed files never imports pydicom.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000, ExplicitVRBigEndian, ImplicitVRLittleEndian

from dicomflow import phantom
from dicomflow.deid import Deidentifier, DeidOptions, LocalKey, deidentify_file
from dicomflow.deid.prepared import Prepared
from dicomflow.deid.pydicom_engine import prepare_pydicom
from dicomflow.deid.rewrite import prepare_raw
from dicomflow.dicom.elements import Buffer, Unsupported
from dicomflow.dicom.errors import DicomFormatError
from dicomflow.dicom.header import read_header
from tests.unit.test_deid import planted_ct

KEY = LocalKey(b"engine-parity-key-0123456789")
OPTION_SETS = {
    "defaults": DeidOptions(),
    "basic": DeidOptions.from_spec("basic"),
    "uids-no-clean": DeidOptions.from_spec("retain-uids,no-clean-descriptors"),
    "full-dates": DeidOptions.from_spec("retain-long-full-dates"),
}
COMPARED = ("actions", "leak", "held", "pixel_start", "pixel_end", "trailing_note", "sop_instance_uid")


def _plain(value: object) -> object:
    """A pydicom value as plain data; text without its padding (the engines pad alike but need not)."""
    if isinstance(value, Sequence):
        return [_dataset(item) for item in value]
    if isinstance(value, (list, MultiValue)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, pydicom.valuerep.PersonName)):
        return str(value).strip(" \0")
    return value


def _dataset(ds: pydicom.Dataset) -> dict[int, object]:
    return {int(e.tag): _plain(e.value) for e in ds}


def _both(data: bytes, options: DeidOptions) -> tuple[Prepared, Prepared] | None:
    deid = Deidentifier(KEY, options)
    try:
        raw = prepare_raw(Buffer(data, len(data)), deid)
    except Unsupported:
        return None

    def read(start: int, end: int) -> bytes:
        return data[start:end]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = prepare_pydicom(read_header(read, len(data)), read, deid)
    return raw, reference


def _assert_same(raw: Prepared, reference: Prepared) -> None:
    for name in COMPARED:
        assert getattr(raw, name) == getattr(reference, name), name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = pydicom.dcmread(BytesIO(raw.new_header), force=True)
        theirs = pydicom.dcmread(BytesIO(reference.new_header), force=True)
    assert _dataset(ours.file_meta) == _dataset(theirs.file_meta)
    assert _dataset(ours) == _dataset(theirs)
    assert raw.engine == "raw" and reference.engine == "pydicom"


FILES = sorted(p for p in get_testdata_files() if os.path.isfile(p))


@pytest.mark.parametrize("options", list(OPTION_SETS), ids=list(OPTION_SETS))
def test_engines_agree_on_every_pydicom_test_file_the_rewriter_takes(options: str) -> None:
    # Given every file pydicom ships, under one option set
    taken = declined = 0
    for path in FILES:
        data = Path(path).read_bytes()
        # When both engines de-identify it (if the rewriter takes it)
        pair = _both(data, OPTION_SETS[options])
        if pair is None:
            declined += 1
            continue
        taken += 1
        # Then data set, file meta, counts, leak check and pixel range are the same
        try:
            _assert_same(*pair)
        except AssertionError as exc:
            raise AssertionError(f"{Path(path).name}: {exc}") from exc
    # And the rewriter takes most of them (the rest: big endian, deflated, no preamble, damage)
    assert taken > 2 * declined, (taken, declined)


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, "1.2.840.10008.1.2.1"], ids=["implicit", "explicit"]
)
def test_engines_agree_on_a_planted_slice(tmp_path: Path, syntax: str) -> None:
    # Given a slice with identifying values planted everywhere (private blocks, nested, trailing)
    path = tmp_path / "planted.dcm"
    planted_ct(path, syntax=syntax, trailing=False)
    # When both engines de-identify it, then they agree, and the leak check passes
    pair = _both(path.read_bytes(), DeidOptions())
    assert pair is not None, "the rewriter should take a well-formed little-endian slice"
    _assert_same(*pair)
    assert pair[0].leak.passed


def test_engines_agree_on_the_enhanced_multiframe_phantom(tmp_path: Path) -> None:
    # Given the phantom as Enhanced CT (per-frame functional groups, nested dates and UIDs)
    phantom.generate_phantom(tmp_path / "scan", phases=1, slices=6, size=32, multiframe=True, seed=11)
    (path,) = sorted((tmp_path / "scan").rglob("*.dcm"))
    pair = _both(path.read_bytes(), DeidOptions())
    assert pair is not None
    _assert_same(*pair)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("MR_small_bigendian.dcm", "not a little-endian one"),
        ("image_dfl.dcm", "not a little-endian one"),
    ],
)
def test_the_rewriter_declines_what_it_does_not_read_and_pydicom_takes_it(
    tmp_path: Path, name: str, why: str
) -> None:
    # Given a file outside what the rewriter reads
    path = Path(str(get_testdata_file(name)))
    data = path.read_bytes()
    with pytest.raises(Unsupported, match=why):
        prepare_raw(Buffer(data, len(data)), Deidentifier(KEY))
    # When it is de-identified, then the pydicom engine did it (and says so)
    report = deidentify_file(path, tmp_path / "out.dcm", Deidentifier(KEY), held_dst=tmp_path / "held.dcm")
    assert report.engine == "pydicom", report.reasons


def test_a_file_neither_engine_reads_is_rejected_with_the_pydicom_readers_reason(tmp_path: Path) -> None:
    path = Path(str(get_testdata_file("no_meta.dcm")))
    data = path.read_bytes()
    with pytest.raises(Unsupported, match="no preamble"):
        prepare_raw(Buffer(data, len(data)), Deidentifier(KEY))
    report = deidentify_file(path, tmp_path / "out.dcm", Deidentifier(KEY))
    assert report.verdict.value == "rejected" and report.engine is None
    assert report.reasons == [
        "NotDicomError: not a DICOM file: no 'DICM' prefix and the first bytes are not a data element"
    ]
    assert not (tmp_path / "out.dcm").exists()


def test_a_kept_private_element_of_an_implicit_file_goes_to_pydicom(tmp_path: Path) -> None:
    # Given an implicit VR file with a safelisted private element (its VR is in pydicom's private
    # dictionary only: a sequence to walk, perhaps), then the rewriter leaves it to pydicom
    path = tmp_path / "implicit.dcm"
    ds = planted_ct(path, syntax=ImplicitVRLittleEndian, trailing=False)
    block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    block.add_new(0x23, "DS", "12.5")
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    with pytest.raises(Unsupported, match="safelisted private"):
        prepare_raw(Buffer(data, len(data)), Deidentifier(KEY))
    assert deidentify_file(path, tmp_path / "out.dcm", Deidentifier(KEY)).engine == "pydicom"


def test_big_endian_and_encapsulated_outputs_keep_their_engine() -> None:
    # The encapsulated syntaxes are Explicit VR Little Endian data sets: the rewriter takes them
    data = Path(str(get_testdata_file("693_J2KI.dcm"))).read_bytes()
    header_syntax = pydicom.dcmread(BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert header_syntax == JPEG2000
    assert prepare_raw(Buffer(data, len(data)), Deidentifier(KEY)).engine == "raw"
    big = Path(str(get_testdata_file("MR_small_bigendian.dcm"))).read_bytes()
    assert pydicom.dcmread(BytesIO(big)).file_meta.TransferSyntaxUID == ExplicitVRBigEndian


def test_a_worker_on_well_formed_files_never_imports_pydicom(tmp_path: Path) -> None:
    # Given a small phantom series (well-formed Explicit VR Little Endian)
    phantom.generate_phantom(tmp_path / "scan", phases=1, slices=3, size=32, seed=2)
    # When a fresh interpreter de-identifies it through the public entry point
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from dicomflow.deid import Deidentifier, LocalKey, deidentify_file\n"
        "deid = Deidentifier(LocalKey(b'k' * 32))\n"
        f"src = Path({str(tmp_path / 'scan')!r})\n"
        "reports = [deidentify_file(p, Path(str(p) + '.out'), deid) for p in sorted(src.rglob('*.dcm'))]\n"
        "assert reports and all(r.engine == 'raw' for r in reports), reports\n"
        "assert all(r.verdict.value == 'passed' for r in reports), reports\n"
        "print('pydicom' in sys.modules, 'numpy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Then neither pydicom nor numpy was imported
    assert out.stdout.split() == ["False", "False"], out.stderr


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flips=st.lists(st.tuples(st.integers(132, 1499), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.integers(1, 3000)),
    implicit=st.booleans(),
)
def test_the_rewriter_on_damaged_headers_declines_or_writes_readable_dicom(
    flips: list[tuple[int, int]], cut: int | None, implicit: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Given a valid planted slice with random bytes of its header changed (and maybe cut short)
    folder = tmp_path_factory.mktemp("fuzz")
    planted_ct(folder / "src.dcm", syntax=ImplicitVRLittleEndian if implicit else "1.2.840.10008.1.2.1")
    data = bytearray((folder / "src.dcm").read_bytes())
    for offset, value in flips:
        data[offset] = value
    damaged = bytes(data[:cut] if cut else data)
    # When the byte-level engine reads it
    try:
        prepared = prepare_raw(Buffer(damaged, len(damaged)), Deidentifier(KEY))
    except (Unsupported, DicomFormatError):
        return  # declined, with a reason: the pydicom engine decides (tested above and in test_deid)
    # Then (no other exception: none is swallowed as a bug) what it wrote is readable DICOM that
    # passed the leak check, or a leak it reports
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        written = pydicom.dcmread(BytesIO(prepared.new_header), force=True)
    assert written.file_meta.TransferSyntaxUID
    assert prepared.leak.passed or prepared.leak.element_hits or prepared.leak.raw_hits
