"""Reading a scan from a store: headers first (no pixels), then each phase into a reused buffer,
over a local folder (pread) and over any other store (ranged reads on threads); the byte-level
header path and pydicom's give the same frames; the in-place rescale is the plain one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomflow.analysis.reading import HEADER_READ, ScanReader
from dicomflow.analysis.volume import _pydicom_frames, _rescale_in_place, _to_hu, read_frames
from dicomflow.errors import AnalysisError
from dicomflow.storage import LocalObjectStore, ObjectStore
from tests.unit.test_analysis_volume import write_ct_scan


class RangedStore(ObjectStore):
    """A store that is not a local folder (so the reader takes the ranged, threaded path), and
    that counts the bytes asked of each object."""

    def __init__(self, root: Path) -> None:
        self._local = LocalObjectStore(root)
        self.bytes_read: dict[str, int] = {}

    def size(self, key: str) -> int:
        return self._local.size(key)

    def exists(self, key: str) -> bool:
        return self._local.exists(key)

    def get_range(self, key: str, start: int, end: int) -> bytes:
        data = self._local.get_range(key, start, end)
        self.bytes_read[key] = self.bytes_read.get(key, 0) + len(data)
        return data

    def iter_chunks(self, key: str, chunk_size: int = 8 * 1024 * 1024) -> Iterator[bytes]:
        return self._local.iter_chunks(key, chunk_size)

    def open_read(self, key: str) -> BinaryIO:
        return self._local.open_read(key)

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str | None = None) -> None:
        self._local.put(key, data, content_type=content_type)

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        return self._local.list_keys(prefix)

    def delete(self, key: str) -> None:
        self._local.delete(key)

    def multipart_put(self, key: str) -> Any:
        return self._local.multipart_put(key)


def _keys(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.dcm"))


@pytest.mark.parametrize("multiframe", [False, True], ids=["single-frame", "enhanced-multiframe"])
@pytest.mark.parametrize("local", [True, False], ids=["local-pread", "ranged-threads"])
def test_each_phase_is_read_into_one_reused_buffer_equal_to_the_truth(
    tmp_path: Path, multiframe: bool, local: bool
) -> None:
    # Given a shuffled 3-phase scan, in a local folder or behind ranged reads
    truth = write_ct_scan(tmp_path, multiframe=multiframe, shuffle_positions=True)
    store: ObjectStore = LocalObjectStore(tmp_path) if local else RangedStore(tmp_path)
    reader = ScanReader(store, workers=2)
    # When the scan is planned and each phase read into the same buffer
    scan = reader.plan(_keys(tmp_path))
    buffer = np.full(scan.shape, 12345, dtype=np.int16)
    for phase in scan.phases:
        volume = reader.read_phase(phase, buffer)
        # Then the buffer holds that phase's HU voxel for voxel, in position order
        assert volume.base is buffer or volume is buffer
        np.testing.assert_array_equal(volume, truth[phase.index])
    assert [p.percent for p in scan.phases] == [0.0, 33.0, 66.0]


def test_planning_reads_headers_only(tmp_path: Path) -> None:
    # Given slices whose pixels are larger than the first ranged read
    write_ct_scan(tmp_path, phases=2, slices=6, size=256)
    store = RangedStore(tmp_path)
    keys = _keys(tmp_path)
    assert all(store.size(k) > HEADER_READ for k in keys)
    # When the scan is planned, Then no file was read past its first block
    scan = ScanReader(store, workers=1).plan(keys)
    assert len(scan.phases) == 2
    assert max(store.bytes_read.values()) <= HEADER_READ
    # and reading a phase then asks for its pixels
    ScanReader(store, workers=1).read_phase(scan.phases[0], np.empty(scan.shape, np.int16))
    assert sum(store.bytes_read.values()) > 6 * 256 * 256 * 2


class CountingRanges(RangedStore):
    """Counts the ranged reads (one GET each over S3) and the sizes asked (one HEAD each)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: dict[str, int] = {}
        self.sized: list[str] = []

    def size(self, key: str) -> int:
        self.sized.append(key)
        return super().size(key)

    def get_range(self, key: str, start: int, end: int) -> bytes:
        self.reads[key] = self.reads.get(key, 0) + 1
        return super().get_range(key, start, end)


@pytest.mark.parametrize("multiframe", [False, True], ids=["single-frame", "enhanced-multiframe"])
def test_with_the_manifests_sizes_each_file_is_one_read_and_the_volumes_are_the_same(
    tmp_path: Path, multiframe: bool
) -> None:
    # Given a scan behind ranged reads, and its files' sizes as its manifest gives them
    truth = write_ct_scan(tmp_path, multiframe=multiframe, shuffle_positions=True)
    keys = _keys(tmp_path)
    sizes = {k: (tmp_path / k).stat().st_size for k in keys}
    store = CountingRanges(tmp_path)
    reader = ScanReader(store, workers=2, sizes=sizes)
    # When it is planned and every phase read
    scan = reader.plan(keys)
    buffer = np.empty(scan.shape, dtype=np.int16)
    for phase in scan.phases:
        np.testing.assert_array_equal(reader.read_phase(phase, buffer), truth[phase.index])
    # Then no size was asked, each file was one read, and nothing is held once read
    assert store.sized == [] and set(store.reads) == set(keys)
    assert all(n == 1 for n in store.reads.values()), store.reads
    assert reader._held == {}


def test_over_the_budget_files_are_read_header_then_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dicomflow.analysis.reading as reading

    truth = write_ct_scan(tmp_path, phases=2, slices=6, size=256)
    keys = _keys(tmp_path)
    sizes = {k: (tmp_path / k).stat().st_size for k in keys}
    monkeypatch.setattr(reading, "WHOLE_READ_BUDGET", sum(sizes.values()) - 1)
    store = CountingRanges(tmp_path)
    reader = ScanReader(store, workers=1, sizes=sizes)
    scan = reader.plan(keys)
    assert max(store.bytes_read.values()) <= HEADER_READ  # headers only, as without sizes
    for phase in scan.phases:
        np.testing.assert_array_equal(
            reader.read_phase(phase, np.empty(scan.shape, np.int16)), truth[phase.index]
        )
    assert store.sized == [] and all(n == 2 for n in store.reads.values())


def test_the_byte_level_header_path_gives_pydicoms_frames() -> None:
    # Given pydicom's CT test file (signed pixels, its own rescale), read both ways
    data = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    fast, slow = read_frames(data)[0], _pydicom_frames(data)[0]
    # Then every attribute the analysis uses and the HU are the same
    for name in (
        "series_instance_uid",
        "sop_instance_uid",
        "temporal_position",
        "phase_percent",
        "position",
        "orientation",
        "pixel_spacing",
        "rows",
        "columns",
        "label",
        "slice_thickness",
    ):
        assert getattr(fast, name) == getattr(slow, name), name
    np.testing.assert_array_equal(fast.hu, slow.hu)
    assert fast.header.dataset.SOPInstanceUID == slow.header.dataset.SOPInstanceUID
    assert "PixelData" not in fast.header.dataset


def test_a_deflated_file_is_read_by_pydicom(tmp_path: Path) -> None:
    # Given a scan file rewritten as Deflated Explicit VR Little Endian (the byte-level reader
    # declines it; pydicom inflates it)
    write_ct_scan(tmp_path, phases=2, slices=4, size=16)
    source = tmp_path / "phase_00" / "slice_0000.dcm"
    ds = pydicom.dcmread(source)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    deflated = tmp_path / "deflated.dcm"
    ds.save_as(deflated, enforce_file_format=True)
    # When both are read, Then they are the same image
    a, b = read_frames(source.read_bytes())[0], read_frames(deflated.read_bytes())[0]
    assert a.stored is not None and b.stored is None  # located by offset / inflated in memory
    assert (a.position, a.sop_instance_uid, a.label) == (b.position, b.sop_instance_uid, b.label)
    np.testing.assert_array_equal(a.hu, b.hu)


def test_compressed_pixel_data_is_refused_on_the_byte_level_path_too() -> None:
    data = Path(str(get_testdata_file("JPEG2000.dcm"))).read_bytes()
    assert data[128:132] == b"DICM"
    with pytest.raises(AnalysisError, match=r"transfer syntax .* is not supported"):
        read_frames(data)


@pytest.mark.parametrize("dtype", ["<u2", "<i2"])
@pytest.mark.parametrize("intercept", [-1024.0, 0.0, 1000.0, -32768.0, 32767.0, -0.5, 2.25])
@pytest.mark.parametrize("slope", [1.0, 0.5])
def test_the_in_place_rescale_gives_the_plain_rescale(dtype: str, intercept: float, slope: float) -> None:
    # Given stored values across the whole range of their type, extremes included
    info = np.iinfo(np.dtype(dtype))
    rng = np.random.default_rng(7)
    stored = rng.integers(info.min, info.max, size=(3, 16, 16), endpoint=True).astype(dtype)
    stored[0, 0, :2] = (info.min, info.max)
    expected = _to_hu(stored, slope, intercept)
    # When rescaled where they lie (int16 memory)
    volume = stored.view(np.int16).copy()
    _rescale_in_place(volume, dtype, slope, intercept)
    # Then the HU are the same, clipping included
    np.testing.assert_array_equal(volume, expected)


@pytest.mark.parametrize("local", [True, False], ids=["local-pread", "ranged-threads"])
def test_each_header_is_read_against_the_one_before_and_the_plan_is_the_same(
    tmp_path: Path, local: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicomflow.dicom import elements

    # Given a single-frame scan (the slices of a phase repeat their headers' layout)
    write_ct_scan(tmp_path, phases=2, slices=8)
    keys = _keys(tmp_path)

    def reader() -> ScanReader:
        return ScanReader(LocalObjectStore(tmp_path) if local else RangedStore(tmp_path), workers=2)

    reread = elements._reread
    taken: list[bool] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        header = reread(*args, **kwargs)
        taken.append(header is not None)
        return header

    # When it is planned reading each header against the one before, and with every header
    # parsed whole
    monkeypatch.setattr(elements, "_reread", counted)
    fast = reader().plan(keys)
    monkeypatch.setattr(elements, "_reread", lambda *args, **kwargs: None)
    whole = reader().plan(keys)
    # Then the plans are the same, frame for frame, and headers took the fast path: most of them
    # read one after the other; behind ranged reads each of the 8 threads starts afresh
    assert _same(fast, whole)
    assert sum(taken) >= (len(keys) // 2 if local else 2), taken


def _same(a: Any, b: Any) -> bool:
    """Equality of plans: dataclasses field by field, arrays by value, sequences item by item."""
    import dataclasses

    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            _same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if "__slots__" in type(a).__dict__:  # a plain record (a source header): slot by slot
        return type(a) is type(b) and all(
            _same(getattr(a, name, None), getattr(b, name, None)) for name in type(a).__slots__
        )
    return bool(a == b)
