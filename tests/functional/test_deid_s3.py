"""De-identification over S3 (moto in-process): ranged header reads, UploadPartCopy for the pixels,
and the pseudonym key in KMS (GenerateMac with an HMAC_256 key)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import boto3
import numpy as np
import pydicom
import pytest
from moto import mock_aws

from dicomflow.deid import Deidentifier, KmsHmacKey, LocalKey, Verdict, deidentify_file, deidentify_object
from dicomflow.storage import MIN_PART_SIZE, S3ObjectStore
from tests.unit.test_deid import PLANTED, _raw_contains, planted_ct

BUCKET = "dicomflow-test"
REGION = "us-east-1"


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        yield s3, boto3.client("kms", region_name=REGION)


class _CountingStore(S3ObjectStore):
    """Counts the bytes fetched through this process and the server-side copies."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bytes_fetched = 0

    def get_range(self, key: str, start: int, end: int) -> bytes:
        data = super().get_range(key, start, end)
        self.bytes_fetched += len(data)
        return data


def _big_ct(tmp_path: Path) -> Path:
    # 2048 x 2048 x 2 bytes = 8 MiB of pixels: part 1 (header + 5 MiB) and one UploadPartCopy part
    path = tmp_path / "big.dcm"
    ds = planted_ct(path, rows=16)
    ds.Rows = ds.Columns = 2048
    ds.PixelData = (np.arange(2048 * 2048, dtype=np.uint32) % 4093).astype(np.uint16).tobytes() * 2
    ds.Rows = 2048 * 2
    ds.save_as(path)
    return path


def test_large_object_is_rewritten_with_upload_part_copy(aws: tuple[Any, Any], tmp_path: Path) -> None:
    s3, _ = aws
    # Given a 16 MiB CT object in S3 with identifying values in its header and after its pixels
    src = _big_ct(tmp_path)
    s3.put_object(Bucket=BUCKET, Key="ingest/big.dcm", Body=src.read_bytes())
    store = _CountingStore(BUCKET, client=s3)
    # When it is de-identified into another key without pixel verification (bytes moved only)
    report = deidentify_object(
        store, "ingest/big.dcm", "deid/big.dcm", Deidentifier(LocalKey(b"k" * 32)), verify_pixels=False
    )
    # Then it passed; only the header and the first 5 MiB went through this process, the rest was
    # copied server side
    assert report.verdict is Verdict.PASSED, report.reasons
    assert store.bytes_fetched < MIN_PART_SIZE + 256 * 1024
    assert report.bytes_copied_server_side == report.pixel_bytes - MIN_PART_SIZE
    assert report.bytes_copied_server_side > 10 * 1024 * 1024
    # And the object is valid DICOM, free of the planted values, with the very same pixel bytes
    out = s3.get_object(Bucket=BUCKET, Key="deid/big.dcm")["Body"].read()
    original = src.read_bytes()
    assert out[-report.pixel_bytes :] == original[-report.pixel_bytes - 76 : -76]  # 76: dropped padding
    ds = pydicom.dcmread(io.BytesIO(out))
    assert ds.PixelData == pydicom.dcmread(src).PixelData
    assert not any(_raw_contains(out, v) for k, v in PLANTED.items() if k != "station")


def test_verified_copy_reports_equal_pixel_hashes(aws: tuple[Any, Any], tmp_path: Path) -> None:
    s3, _ = aws
    src = _big_ct(tmp_path)
    s3.put_object(Bucket=BUCKET, Key="ingest/big.dcm", Body=src.read_bytes())
    store = S3ObjectStore(BUCKET, client=s3)
    report = deidentify_object(store, "ingest/big.dcm", "deid/big.dcm", Deidentifier(LocalKey(b"k" * 32)))
    assert report.pixels_identical is True
    data = src.read_bytes()
    start = data.rfind(b"\xe0\x7f\x10\x00")
    assert report.pixel_hash_before == blake3.blake3(data[start : start + report.pixel_bytes]).hexdigest()


def test_small_object_is_one_put_and_matches_the_local_result(aws: tuple[Any, Any], tmp_path: Path) -> None:
    s3, _ = aws
    src = tmp_path / "small.dcm"
    planted_ct(src)
    s3.put_object(Bucket=BUCKET, Key="ingest/small.dcm", Body=src.read_bytes())
    deid = Deidentifier(LocalKey(b"k" * 32))
    report = deidentify_object(S3ObjectStore(BUCKET, client=s3), "ingest/small.dcm", "deid/small.dcm", deid)
    local = deidentify_file(src, tmp_path / "local.dcm", deid)
    assert report.verdict is local.verdict is Verdict.PASSED
    out = s3.get_object(Bucket=BUCKET, Key="deid/small.dcm")["Body"].read()
    assert out == (tmp_path / "local.dcm").read_bytes()


def test_rejected_and_held_objects_never_reach_the_destination(aws: tuple[Any, Any], tmp_path: Path) -> None:
    s3, _ = aws
    store = S3ObjectStore(BUCKET, client=s3)
    deid = Deidentifier(LocalKey(b"k" * 32))
    s3.put_object(Bucket=BUCKET, Key="ingest/junk.dcm", Body=b"not dicom at all" * 100)
    rejected = deidentify_object(store, "ingest/junk.dcm", "deid/junk.dcm", deid)
    assert rejected.verdict is Verdict.REJECTED and rejected.reasons
    src = tmp_path / "burned.dcm"
    ds = planted_ct(src)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(src)
    s3.put_object(Bucket=BUCKET, Key="ingest/burned.dcm", Body=src.read_bytes())
    held = deidentify_object(store, "ingest/burned.dcm", "deid/burned.dcm", deid, held_key="held/burned.dcm")
    assert held.verdict is Verdict.HELD
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert "deid/junk.dcm" not in keys and "deid/burned.dcm" not in keys
    assert "held/burned.dcm" in keys


def test_another_bucket_gets_the_same_bytes_streamed_in_parts(aws: tuple[Any, Any], tmp_path: Path) -> None:
    s3, _ = aws
    s3.create_bucket(Bucket="deidentified")
    src = _big_ct(tmp_path)
    s3.put_object(Bucket=BUCKET, Key="ingest/big.dcm", Body=src.read_bytes())
    deid = Deidentifier(LocalKey(b"k" * 32))
    ingest, out = S3ObjectStore(BUCKET, client=s3), S3ObjectStore("deidentified", client=s3)
    report = deidentify_object(ingest, "ingest/big.dcm", "big.dcm", deid, dst_store=out)
    same = deidentify_object(ingest, "ingest/big.dcm", "deid/big.dcm", deid, verify_pixels=False)
    assert report.verdict is same.verdict is Verdict.PASSED
    assert report.pixels_identical and report.bytes_copied_server_side == 0
    assert out.get_range("big.dcm", 0, out.size("big.dcm")) == ingest.get_range(
        "deid/big.dcm", 0, ingest.size("deid/big.dcm")
    )


def test_kms_hmac_key_is_deterministic_and_key_bound(aws: tuple[Any, Any], tmp_path: Path) -> None:
    _, kms = aws
    # Given two HMAC_256 keys in KMS
    ids = [
        kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
        for _ in range(2)
    ]
    src = tmp_path / "in.dcm"
    planted_ct(src)
    # When a file is de-identified twice with the first key and once with the second
    outs = []
    for i, key_id in enumerate([ids[0], ids[0], ids[1]]):
        report = deidentify_file(src, tmp_path / f"{i}.dcm", Deidentifier(KmsHmacKey(key_id, client=kms)))
        assert report.verdict is Verdict.PASSED, report.reasons
        outs.append(pydicom.dcmread(tmp_path / f"{i}.dcm"))
    # Then the same key gives the same UIDs and pseudonym, another key different ones
    assert outs[0].SOPInstanceUID == outs[1].SOPInstanceUID != outs[2].SOPInstanceUID
    assert outs[0].PatientID == outs[1].PatientID != outs[2].PatientID
    # And the MAC is KMS's HMAC-SHA256 (verify_mac agrees)
    mac = KmsHmacKey(ids[0], client=kms).mac(b"uid:1.2.3")
    assert kms.verify_mac(KeyId=ids[0], Message=b"uid:1.2.3", Mac=mac, MacAlgorithm="HMAC_SHA_256")[
        "MacValid"
    ]
