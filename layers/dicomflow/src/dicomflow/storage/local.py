"""An object store on a local directory: the CLI's and the tests' store, with S3's semantics.

Objects appear atomically (written to a temporary file, then renamed), so a reader never sees a
half-written object, as with S3.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from dicomflow.errors import InvalidInputError, ObjectNotFoundError, StorageError
from dicomflow.privacy import fingerprint
from dicomflow.storage.base import MIN_PART_SIZE


class LocalObjectStore:
    """Keys are relative POSIX paths below ``root``.

    Examples
    --------
    >>> import tempfile
    >>> store = LocalObjectStore(tempfile.mkdtemp())
    >>> store.put("a/b.bin", b"hello")
    >>> store.get_range("a/b.bin", 1, 3)
    b'el'
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        """The file that holds ``key``; refuses keys that would escape ``root``."""
        if not key or key.startswith("/") or "\\" in key or ".." in key.split("/"):
            raise InvalidInputError(f"object key {fingerprint(key)} is not a safe relative path")
        return self.root / key

    def _existing(self, key: str) -> Path:
        path = self.path(key)
        if not path.is_file():
            raise ObjectNotFoundError(f"object {fingerprint(key)} does not exist in the local store")
        return path

    def size(self, key: str) -> int:
        return self._existing(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise InvalidInputError(f"byte range [{start}, {end}) is not valid")
        with self._existing(key).open("rb") as fh:
            fh.seek(start)
            return fh.read(end - start)

    def iter_chunks(self, key: str, chunk_size: int = 8 * 1024 * 1024) -> Iterator[bytes]:
        with self._existing(key).open("rb") as fh:
            while chunk := fh.read(chunk_size):
                yield chunk

    def open_read(self, key: str) -> BinaryIO:
        return self._existing(key).open("rb")

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str | None = None) -> None:
        with self._atomic(key) as fh:
            if isinstance(data, bytes | bytearray | memoryview):
                fh.write(data)
            else:
                shutil.copyfileobj(data, fh, 8 * 1024 * 1024)

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        if not self.root.exists():
            return
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        yield from sorted(k for k in keys if k.startswith(prefix) and ".dicomflow-tmp" not in k)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    @contextmanager
    def multipart_put(self, key: str) -> Iterator[_LocalMultipartWriter]:
        with self._atomic(key) as fh:
            writer = _LocalMultipartWriter(self, fh)
            yield writer
            writer.finish()

    @contextmanager
    def _atomic(self, key: str) -> Iterator[BinaryIO]:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".dicomflow-tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class _LocalMultipartWriter:
    def __init__(self, store: LocalObjectStore, fh: BinaryIO) -> None:
        self._store = store
        self._fh = fh
        self._last_part_size: int | None = None

    def _start_part(self, size: int) -> None:
        if self._last_part_size is not None and self._last_part_size < MIN_PART_SIZE:
            raise StorageError(
                f"a part of {self._last_part_size} bytes is not the last one; S3 needs every part "
                f"but the last to be at least {MIN_PART_SIZE} bytes"
            )
        self._last_part_size = size

    def upload_part(self, data: bytes) -> None:
        self._start_part(len(data))
        self._fh.write(data)

    def copy_part(self, source_key: str, start: int, end: int) -> None:
        source = self._store._existing(source_key)
        size = source.stat().st_size
        if start < 0 or end <= start or end > size:
            raise InvalidInputError(f"copy range [{start}, {end}) is outside the {size}-byte source")
        self._start_part(end - start)
        with source.open("rb") as src:
            src.seek(start)
            remaining = end - start
            while remaining:
                chunk = src.read(min(remaining, 8 * 1024 * 1024))
                if not chunk:
                    raise StorageError("the source object shrank while being copied")
                self._fh.write(chunk)
                remaining -= len(chunk)

    def finish(self) -> None:
        if self._last_part_size is None:
            raise StorageError("a multipart object needs at least one part")
