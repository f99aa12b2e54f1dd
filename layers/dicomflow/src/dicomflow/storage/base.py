"""The object store protocol."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import BinaryIO, Protocol, runtime_checkable

#: S3's minimum size of every part but the last of a multipart upload.
MIN_PART_SIZE = 5 * 1024 * 1024


class MultipartWriter(Protocol):
    """Builds one object from parts, in order. Parts other than the last must be at least
    :data:`MIN_PART_SIZE` bytes (S3's rule, kept locally too so that both behave alike)."""

    def upload_part(self, data: bytes) -> None:
        """Append ``data`` as the next part."""

    def copy_part(self, source_key: str, start: int, end: int) -> None:
        """Append bytes ``[start, end)`` of ``source_key`` as the next part, without moving them
        through this process where the store allows it (S3 UploadPartCopy)."""


@runtime_checkable
class ObjectStore(Protocol):
    """Get, stream, put and assemble objects by key."""

    def size(self, key: str) -> int:
        """The object's size in bytes; :class:`~dicomflow.errors.ObjectNotFoundError` if absent."""

    def exists(self, key: str) -> bool: ...

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object (fewer if the object ends first)."""

    def iter_chunks(self, key: str, chunk_size: int = 8 * 1024 * 1024) -> Iterator[bytes]:
        """The whole object, streamed in chunks of at most ``chunk_size`` bytes."""

    def open_read(self, key: str) -> BinaryIO:
        """A readable binary stream of the object (the caller closes it)."""

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str | None = None) -> None:
        """Write a whole object (a stream is read to its end, in multipart where large)."""

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix``, in lexicographic order."""

    def delete(self, key: str) -> None: ...

    def multipart_put(self, key: str) -> AbstractContextManager[MultipartWriter]:
        """A writer whose object appears at ``key`` only when the ``with`` block ends without an
        exception; on an exception the partial upload is aborted, never left half-built."""
