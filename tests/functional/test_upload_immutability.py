"""Once a file is complete its object is immutable, an aborted scan accepts nothing (issue 12,
point 3), and object keys never carry a device's file names (point 4): the upload API over real
HTTP, presigned URLs through the S3 proxy, which answers as S3 does."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from dicomflow.local.stack import UploadStack, start_upload_stack
from dicomflow.upload.journal import STATE_NAME
from dicomflow.upload.parts import MiB


@pytest.fixture(scope="module")
def stack(local_aws: Any) -> Any:
    with start_upload_stack(local=local_aws, with_proxy=True, part_size=5 * MiB) as running:
        yield running


def call(stack: UploadStack, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(urlsplit(stack.api_url).netloc, timeout=60)
    conn.request(method, path, body=json.dumps(body).encode() if body is not None else None)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, json.loads(payload or b"{}")


def put(url: dict[str, Any], data: bytes) -> tuple[int, bytes]:
    split = urlsplit(url["url"])
    conn = http.client.HTTPConnection(split.netloc, timeout=60)
    conn.request(
        "PUT",
        f"{split.path}?{split.query}",
        body=data,
        headers={**url["headers"], "Content-Type": "application/octet-stream"},
    )
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plan(stack: UploadStack, files: dict[str, bytes]) -> dict[str, Any]:
    body = {
        "manifest": {
            "device_id": "ct-01",
            "scan_type": "4d-ct",
            "files": [{"name": n, "size": len(d), "sha256": sha(d)} for n, d in files.items()],
        },
        "part_size": 5 * MiB,
        "part_sha256": [[sha(d[i : i + 5 * MiB]) for i in range(0, len(d), 5 * MiB)] for d in files.values()],
    }
    status, answer = call(stack, "POST", "/scans", body)
    assert status == 201, answer
    return answer


def stored(stack: UploadStack, scan_id: str, index: int) -> bytes:
    record = stack.service.table.get_file(scan_id, index)
    assert record is not None
    s3 = stack.local.client("s3")
    return bytes(s3.get_object(Bucket=stack.local.ingest_bucket, Key=record["key"])["Body"].read())


def test_a_completed_file_cannot_be_overwritten_by_replaying_its_urls(stack: UploadStack) -> None:
    # Given a scan of one small (single PUT) and one multipart file, uploaded and completed
    small, big = b"DICM" * 300, os.urandom(6 * MiB)
    answer = plan(stack, {"a.dcm": small, "b.dcm": big})
    scan_id = answer["scan_id"]
    single_url = answer["files"][0]["urls"][0]
    part_urls = {u["part_number"]: u for u in answer["files"][1]["urls"]}
    assert put(single_url, small)[0] == 200
    for n, url in part_urls.items():
        assert put(url, big[(n - 1) * 5 * MiB : n * 5 * MiB])[0] == 200
    status, done = call(
        stack,
        "POST",
        f"/scans/{scan_id}/files/complete",
        {"files": [{"index": 0}, {"index": 1, "part_sha256": [sha(big[: 5 * MiB]), sha(big[5 * MiB :])]}]},
    )
    assert status == 200 and [f.get("state") for f in done["files"]] == ["complete", "complete"], done
    assert call(stack, "POST", f"/scans/{scan_id}/complete", {})[1]["status"] == "UPLOADED"
    # When the URLs are replayed (still within their expiry), even with the same bytes
    stack.proxy.verify_checksums = False  # as moto: any bytes would land, were the PUT accepted
    try:
        single_status, single_body = put(single_url, b"EVIL" * 300)
        part_status, part_body = put(part_urls[1], b"\0" * 5 * MiB)
    finally:
        stack.proxy.verify_checksums = True
    # Then storage refuses both, as S3 does: the single PUT creates only, the multipart upload is over
    assert single_status == 412 and b"PreconditionFailed" in single_body
    assert part_status == 404 and b"NoSuchUpload" in part_body
    assert stored(stack, scan_id, 0) == small and stored(stack, scan_id, 1) == big
    # And no new URL is handed out for a complete file
    status, _ = call(
        stack, "POST", f"/scans/{scan_id}/files/1/parts", {"parts": [{"part_number": 1, "sha256": "0" * 64}]}
    )
    assert status == 409


def test_an_aborted_scan_accepts_nothing(stack: UploadStack) -> None:
    # Given a planned scan with every URL handed out, one single-PUT file already sent
    small, other, big = b"x" * 500, b"y" * 700, os.urandom(6 * MiB)
    answer = plan(stack, {"a.dcm": small, "b.dcm": other, "c.dcm": big})
    scan_id = answer["scan_id"]
    urls = [f["urls"] for f in answer["files"]]
    assert put(urls[0][0], small)[0] == 200
    # When the device deletes the scan
    status, aborted = call(stack, "DELETE", f"/scans/{scan_id}")
    assert status == 200, aborted
    # Then no URL handed out before lands anything: single PUTs meet a tombstone, parts no upload
    assert put(urls[0][0], small)[0] == 412
    assert put(urls[1][0], other)[0] == 412
    assert put(urls[2][0], big[: 5 * MiB])[0] == 404
    # And what is left under the scan holds no data: empty tombstones only
    s3 = stack.local.client("s3")
    listed = s3.list_objects_v2(Bucket=stack.local.ingest_bucket, Prefix=f"scans/{scan_id}/")
    sizes = {o["Key"]: o["Size"] for o in listed.get("Contents", [])}
    assert len(sizes) == 2 and set(sizes.values()) == {0}, sizes
    # And no new URL is given
    status, refused = call(
        stack,
        "POST",
        f"/scans/{scan_id}/files/1/parts",
        {"parts": [{"part_number": 1, "sha256": sha(other)}]},
    )
    assert status == 409 and "FAILED" in refused["message"]


def test_object_keys_carry_no_file_names_and_the_manifest_maps_names_to_keys(
    tmp_path: Path, stack: UploadStack
) -> None:
    # Given a device whose file names hold a patient's name and MRN (as some devices write them)
    folder = tmp_path / "scan"
    files = {
        f"DOE^JANE_MRN4711/phase_{p:02d}/slice {s}.dcm": os.urandom(900 + p * 10 + s)
        for p in range(2)
        for s in range(3)
    }
    files["DOE^JANE_MRN4711/volume.dcm"] = os.urandom(6 * MiB)  # multipart too
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    # When it is uploaded
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicomflow",
            "upload",
            str(folder),
            "--api",
            stack.api_url,
            "--device-id",
            "ct-01",
            "--scan-type",
            "4d-ct",
            "--part-size-mib",
            "5",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    scan_id = json.loads((folder / STATE_NAME).read_text())["scan_id"]
    # Then no object key holds any part of a name: keys are the scan id, position and SHA-256
    s3 = stack.local.client("s3")
    bucket = stack.local.ingest_bucket
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"scans/{scan_id}/")["Contents"]]
    data_keys = [k for k in keys if not k.endswith("/manifest.json")]
    assert len(data_keys) == len(files)
    pattern = re.compile(rf"scans/{re.escape(scan_id)}/files/\d{{5}}-[0-9a-f]{{16}}\.dcm")
    assert all(pattern.fullmatch(k) for k in data_keys), data_keys
    assert not any(word in k for k in keys for word in ("DOE", "JANE", "MRN", "4711", "slice", "phase"))
    # And the stored manifest maps every name to its key, where the file's bytes are
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"scans/{scan_id}/manifest.json")["Body"].read())
    by_name = {f["name"]: f for f in manifest["files"]}
    assert set(by_name) == set(files)
    for name, data in files.items():
        entry = by_name[name]
        assert entry["key"].endswith(f"-{sha(data)[:16]}.dcm")
        assert s3.get_object(Bucket=bucket, Key=entry["key"])["Body"].read() == data
