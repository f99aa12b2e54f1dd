"""The local object store behaves like S3 where the domain relies on it."""

from __future__ import annotations

import io

import pytest

from dicomflow.errors import InvalidInputError, ObjectNotFoundError, StorageError
from dicomflow.storage import MIN_PART_SIZE, LocalObjectStore, ObjectStore


@pytest.fixture
def store(tmp_path):
    return LocalObjectStore(tmp_path / "bucket")


def test_it_satisfies_the_protocol(store):
    assert isinstance(store, ObjectStore)


def test_put_get_range_and_stream(store):
    store.put("scans/s1/a.bin", b"0123456789")
    store.put("scans/s1/b.bin", io.BytesIO(b"x" * 100))
    assert store.size("scans/s1/a.bin") == 10
    assert store.get_range("scans/s1/a.bin", 2, 5) == b"234"
    assert store.get_range("scans/s1/a.bin", 8, 50) == b"89"  # short read at the end, as S3
    assert b"".join(store.iter_chunks("scans/s1/b.bin", chunk_size=7)) == b"x" * 100
    assert list(store.list_keys("scans/s1/")) == ["scans/s1/a.bin", "scans/s1/b.bin"]
    store.delete("scans/s1/a.bin")
    assert not store.exists("scans/s1/a.bin")


def test_missing_objects_and_unsafe_keys_are_refused_without_echoing_the_key(store):
    with pytest.raises(ObjectNotFoundError) as info:
        store.size("scans/DOE_JANE.dcm")
    assert "DOE_JANE" not in str(info.value)
    for key in ("../escape", "/abs", "a/../../b", "a\\b"):
        with pytest.raises(InvalidInputError):
            store.put(key, b"x")


def test_multipart_assembles_parts_and_copies_ranges(store):
    # Given a source object larger than one part
    source = bytes(range(256)) * (MIN_PART_SIZE // 256 * 2 + 10)
    store.put("src", source)
    header = b"H" * MIN_PART_SIZE
    # When an object is built from an uploaded part and two copied ranges
    with store.multipart_put("dst") as writer:
        writer.upload_part(header)
        writer.copy_part("src", 0, MIN_PART_SIZE)
        writer.copy_part("src", MIN_PART_SIZE, len(source))
    # Then it is the exact concatenation
    assert store.get_range("dst", 0, store.size("dst")) == header + source


def test_a_failed_multipart_leaves_nothing_behind(store):
    with pytest.raises(RuntimeError), store.multipart_put("dst") as writer:
        writer.upload_part(b"partial")
        raise RuntimeError("device went away")
    assert not store.exists("dst")
    assert list(store.list_keys()) == []


def test_small_non_last_parts_are_refused_as_s3_would(store):
    with pytest.raises(StorageError, match="at least 5242880 bytes"), store.multipart_put("dst") as writer:
        writer.upload_part(b"small")
        writer.upload_part(b"second")
    assert not store.exists("dst")
