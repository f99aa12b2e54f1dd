"""How the batch steps read and write one file's objects in S3 with as few requests as it takes.

A CT slice is about half a MiB, and a scan has thousands of them: per-request cost, not bytes,
is what a batch spends its time on. Profiled on the default 4D-CT (1500 slices), a slice cost
three requests to validate (HEAD for the size, a ranged GET for the header, a GET for the
SHA-256) and nine to de-identify.

- :class:`SourceObject` reads one object's first ``window`` bytes in one ranged GET, on first use,
  and answers the engines' size, ranged and streamed reads from them. An object shorter than the
  window is then whole in memory (its size is the length S3 returned), so a slice costs one GET
  whatever the engines ask. A longer one (an enhanced multi-frame file) gets its header from the
  window and everything else from S3 as before, so bytes read and memory stay bounded by the
  window, not the file. Bytes handed to this process are counted (``bytes_read``).
- :class:`WrittenObjects` remembers the size and SHA-256 of each object it PUT in one piece, so
  the de-identified manifest needs no HEAD and no server-side checksum copy for it: the digest is
  of the very bytes sent, and the PUT itself is integrity-checked in transit (botocore sends a
  CRC32 checksum that S3 verifies). Objects assembled from parts (UploadPartCopy) are not
  recorded; their SHA-256 still comes from S3.

Errors are the store's own (:mod:`dicomflow.storage.s3` translates them), so a transient S3
failure on the first read is a :class:`~dicomflow.errors.TransientStorageError` as before.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import BinaryIO

from dicomflow.storage.s3 import S3ObjectStore

MiB = 1024 * 1024


class CountingStore(S3ObjectStore):
    """A store counting the bytes it hands to this process (ranged and streamed reads).
    Server-side copies (UploadPartCopy) never reach this process and are not counted. A subclass,
    not a wrapper, so a destination store still knows it can copy from it."""

    def __init__(self, store: S3ObjectStore) -> None:
        super().__init__(store.bucket, kms_key_id=store.kms_key_id, client=store.client)
        self.bytes_read = 0

    def get_range(self, key: str, start: int, end: int) -> bytes:
        data = super().get_range(key, start, end)
        self.bytes_read += len(data)
        return data

    def iter_chunks(self, key: str, chunk_size: int = 8 * MiB) -> Iterator[bytes]:
        for chunk in super().iter_chunks(key, chunk_size):
            self.bytes_read += len(chunk)
            yield chunk


class SourceObject(CountingStore):
    """``store`` with object ``key``'s first ``window`` bytes read in one GET, on first use.

    Other keys (a held file written beside the originals) go to S3 as usual.
    """

    def __init__(self, store: S3ObjectStore, key: str, *, window: int) -> None:
        super().__init__(store)
        self.key = key
        self.window = max(1, window)
        self._first: bytes | None = None
        self._size: int | None = None  # known once the object turned out shorter than the window

    def _head(self) -> bytes:
        if self._first is None:
            data = CountingStore.get_range(self, self.key, 0, self.window)
            self._first = data
            if len(data) < self.window:
                self._size = len(data)  # S3 returns fewer bytes than asked only at the end
        return self._first

    @property
    def whole(self) -> bool:
        """Whether the object is entirely in memory (read so far: it was shorter than the window)."""
        self._head()
        return self._size is not None

    @property
    def held(self) -> bytes | None:
        """The object's bytes, if it is entirely in memory (see :attr:`whole`); else None."""
        return self._first if self.whole else None

    def size(self, key: str) -> int:
        if key == self.key and self.whole:
            assert self._size is not None
            return self._size
        return super().size(key)

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if key != self.key or start < 0 or end < start:
            return super().get_range(key, start, end)
        first = self._head()
        if end <= len(first) or self.whole:
            return first[start:end]
        if start < len(first):
            return first[start:] + super().get_range(key, len(first), end)
        return super().get_range(key, start, end)

    def iter_chunks(self, key: str, chunk_size: int = 8 * MiB) -> Iterator[bytes]:
        if key == self.key and self.whole:
            first = self._head()
            for offset in range(0, len(first), max(1, chunk_size)):
                yield first[offset : offset + chunk_size]
            return
        yield from super().iter_chunks(key, chunk_size)

    def open_read(self, key: str) -> BinaryIO:
        if key == self.key and self.whole:
            return io.BytesIO(self._head())
        return super().open_read(key)


class WrittenObjects(S3ObjectStore):
    """``store``, remembering ``(size, sha256)`` of every object it PUT in one piece."""

    def __init__(self, store: S3ObjectStore) -> None:
        super().__init__(store.bucket, kms_key_id=store.kms_key_id, client=store.client)
        self.written: dict[str, tuple[int, str]] = {}

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str | None = None) -> None:
        self.written.pop(key, None)
        super().put(key, data, content_type=content_type)
        if isinstance(data, bytes | bytearray | memoryview):
            self.written[key] = (len(data), hashlib.sha256(data).hexdigest())
