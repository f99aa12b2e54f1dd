"""Read a scan from an object store: every file's header first, then each phase's pixels into a
buffer that the caller reuses.

A local folder is read with ``os.pread``/``os.preadv`` (the pixels land in the volume with no
intermediate copy); any other store with ranged reads (``get_range``), overlapped on threads,
since over S3 the time goes to waiting on requests. Headers cost one ranged read of the first
64 KiB of a file (a CT slice's header is 2-40 KiB), pixels one more. When the scan's manifest gives
every file's size and they add up to at most :data:`WHOLE_READ_BUDGET`, each file is read whole in
one GET instead, its bytes held until its phase has been read: half the requests (1500 fewer on
the default 4D-CT), for memory bounded by the budget.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dicomflow.analysis.volume import Frame, LastHeader, Phase, Scan, plan_phases, read_frames, read_phase
from dicomflow.dicom.elements import Buffer
from dicomflow.errors import AnalysisError
from dicomflow.privacy import fingerprint
from dicomflow.storage import LocalObjectStore, ObjectStore

#: The first read of a file: its header, in one request for most files.
HEADER_READ = 64 * 1024
#: Over a remote store, files are read whole (one GET each) if the scan's files add up to at most
#: this many bytes: the default 4D-CT is 840 MB, and the analysis task has 8 GiB.
WHOLE_READ_BUDGET = 1536 * 1024 * 1024


class ScanReader:
    """Headers and pixels of one scan's files in ``store``.

    Examples
    --------
    >>> import tempfile, shutil
    >>> from pydicom.data import get_testdata_file
    >>> from dicomflow.storage import LocalObjectStore
    >>> root = tempfile.mkdtemp()
    >>> _ = shutil.copy(get_testdata_file("CT_small.dcm"), f"{root}/ct.dcm")
    >>> reader = ScanReader(LocalObjectStore(root), workers=1)
    >>> scan = reader.plan(["ct.dcm"])
    >>> volume = reader.read_phase(scan.phases[0], np.empty(scan.shape, np.int16))
    >>> volume.shape, int(volume.min()) < 0
    ((1, 128, 128), True)
    """

    def __init__(
        self, store: ObjectStore, *, workers: int = 1, sizes: Mapping[str, int] | None = None
    ) -> None:
        self.store = store
        # Sizes already known (the scan's manifest): a remote store is then not asked for them.
        self.sizes = dict(sizes or {})
        self.local = isinstance(store, LocalObjectStore)
        # Local reads are memory copies from the page cache; remote ones are waits.
        self.threads = 1 if self.local else min(4 * max(1, workers), 16)
        self._whole = False
        self._held: dict[str, bytes] = {}  # whole files read with their header, until their phase is
        self._last = LastHeader()  # per thread: each file's header is read against the one before

    def plan(self, keys: Sequence[str]) -> Scan:
        """Every file's frames (headers only), grouped into checked phases."""
        self._whole = (
            not self.local
            and all(k in self.sizes for k in keys)
            and sum(self.sizes[k] for k in keys) <= WHOLE_READ_BUDGET
        )
        frames: list[Frame] = []
        for part in self._map(self._header_frames, keys):
            frames.extend(part)
        return plan_phases(frames)

    def read_phase(self, phase: Phase, out: np.ndarray) -> np.ndarray:
        """The phase's HU volume in ``out`` (see :func:`~dicomflow.analysis.volume.read_phase`)."""
        volume = read_phase(phase, self._fetch, out)
        for frame in phase.frames:  # read: let go (a file with frames in another phase is read again)
            if frame.stored is not None:
                self._held.pop(frame.stored.key, None)
        return volume

    def _fetch(self, requests: list[tuple[str, int, memoryview]]) -> None:
        for _ in self._map(lambda request: self._read_into(*request), requests):
            pass

    def _map(self, fn, items):  # type: ignore[no-untyped-def]
        if self.threads == 1 or len(items) < 2:
            return map(fn, items)
        # pydicom imported here, before the threads: its first import from several threads at once
        # can hand one of them a partially initialised module (ImportError, seen in the local stack).
        import pydicom.charset  # noqa: F401

        executor = ThreadPoolExecutor(max_workers=self.threads)
        try:
            return list(executor.map(fn, items))
        finally:
            executor.shutdown()

    def _header_frames(self, key: str) -> list[Frame]:
        if self.local:
            assert isinstance(self.store, LocalObjectStore)
            fd = os.open(self.store.path(key), os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                buf = Buffer(None, size, lambda start, end: os.pread(fd, end - start, start), HEADER_READ)
                return read_frames(buf, key, last=self._last)
            finally:
                os.close(fd)
        known = self.sizes.get(key)
        remote_size = known if known is not None else self.store.size(key)
        if self._whole:
            data = self.store.get_range(key, 0, remote_size)
            frames = read_frames(Buffer(data, len(data)), key, with_pixels=False, last=self._last)
            if any(f.stored is not None for f in frames):
                self._held[key] = data  # its pixels are read from here when its phase is
            return frames
        buf = Buffer(None, remote_size, lambda start, end: self.store.get_range(key, start, end), HEADER_READ)
        return read_frames(buf, key, last=self._last)

    def _read_into(self, key: str, offset: int, view: memoryview) -> None:
        if self.local:
            assert isinstance(self.store, LocalObjectStore)
            fd = os.open(self.store.path(key), os.O_RDONLY)
            try:
                got = os.preadv(fd, [view], offset)
            finally:
                os.close(fd)
        else:
            held = self._held.get(key)
            data: bytes | memoryview
            if held is not None:
                data = memoryview(held)[offset : offset + len(view)]
            else:
                data = self.store.get_range(key, offset, offset + len(view))
            got = len(data)
            view[:got] = data
        if got != len(view):
            raise AnalysisError(f"the pixels of {fingerprint(key)} end before their declared length")
