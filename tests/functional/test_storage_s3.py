"""The S3 object store against moto: ranges, streaming, multipart with UploadPartCopy, errors."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from dicomflow.errors import ObjectNotFoundError, StorageError
from dicomflow.storage import MIN_PART_SIZE, ObjectStore, S3ObjectStore

BUCKET = "ingest"


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        key_id = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["KeyId"]
        yield client, key_id


def test_put_range_stream_list_delete(s3):
    client, key_id = s3
    store = S3ObjectStore(BUCKET, kms_key_id=key_id, client=client)
    assert isinstance(store, ObjectStore)
    store.put("scans/s1/a.bin", b"0123456789", content_type="application/dicom")
    assert store.size("scans/s1/a.bin") == 10
    assert store.get_range("scans/s1/a.bin", 3, 6) == b"345"
    assert store.get_range("scans/s1/a.bin", 3, 3) == b""
    assert b"".join(store.iter_chunks("scans/s1/a.bin", chunk_size=4)) == b"0123456789"
    head = client.head_object(Bucket=BUCKET, Key="scans/s1/a.bin")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert list(store.list_keys("scans/")) == ["scans/s1/a.bin"]
    store.delete("scans/s1/a.bin")
    assert not store.exists("scans/s1/a.bin")


def test_missing_object_is_translated_and_key_is_not_echoed(s3):
    client, _ = s3
    store = S3ObjectStore(BUCKET, client=client)
    with pytest.raises(ObjectNotFoundError) as info:
        store.get_range("scans/DOE_JANE.dcm", 0, 10)
    assert "DOE_JANE" not in str(info.value)
    with pytest.raises(StorageError):
        S3ObjectStore("no-such-bucket", client=client).put("k", b"x")


def test_multipart_with_server_side_range_copy_is_byte_identical(s3):
    client, _ = s3
    store = S3ObjectStore(BUCKET, client=client)
    source = bytes(range(251)) * ((2 * MIN_PART_SIZE) // 251 + 3)
    store.put("src.dcm", source)
    header = b"\x00" * 128 + b"DICM" + b"h" * (MIN_PART_SIZE - 132)
    with store.multipart_put("dst.dcm") as writer:
        writer.upload_part(header + source[:10])
        writer.copy_part("src.dcm", 10, 10 + MIN_PART_SIZE)
        writer.copy_part("src.dcm", 10 + MIN_PART_SIZE, len(source))
    assert store.get_range("dst.dcm", 0, store.size("dst.dcm")) == header + source


def test_failed_multipart_is_aborted_not_left_half_built(s3):
    client, _ = s3
    store = S3ObjectStore(BUCKET, client=client)
    with pytest.raises(StorageError, match="at least 5242880 bytes"), store.multipart_put("dst") as writer:
        writer.upload_part(b"small")
        writer.upload_part(b"again")
    assert not store.exists("dst")
    assert client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
