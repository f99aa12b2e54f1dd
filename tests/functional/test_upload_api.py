"""The upload API over real HTTP: the local gateway serving the Lambda handler, S3 and DynamoDB on an
embedded moto server, presigned PUTs straight to S3 (or to the S3 proxy that behaves as S3 does)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from dicomflow.local.stack import UploadStack, start_upload_stack
from dicomflow.upload.parts import MiB
from dicomflow.upload.service import ABORT_REASON

TOKEN = "functional-test-token"


@pytest.fixture(scope="module")
def stack(local_aws: Any) -> Any:
    # Small parts and limits so that tests stay small; URLs go through the S3 proxy.
    with start_upload_stack(
        local=local_aws,
        with_proxy=True,
        token=TOKEN,
        part_size=5 * MiB,
        max_files=20,
        max_file_size=64 * MiB,
        max_total_size=128 * MiB,
    ) as running:
        yield running


def call(
    stack: UploadStack,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    token: str | None = TOKEN,
) -> tuple[int, dict[str, Any]]:
    split = urlsplit(stack.api_url)
    conn = http.client.HTTPConnection(split.netloc, timeout=60)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Dicomflow-Token"] = token
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, json.loads(payload or b"{}")


def put(url: str, headers: dict[str, str], data: bytes) -> tuple[int, bytes]:
    split = urlsplit(url)
    conn = http.client.HTTPConnection(split.netloc, timeout=60)
    conn.request(
        "PUT",
        f"{split.path}?{split.query}",
        body=data,
        headers={**headers, "Content-Type": "application/octet-stream"},
    )
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def object_key(stack: UploadStack, scan_id: str, index: int) -> str:
    record = stack.service.table.get_file(scan_id, index)
    assert record is not None
    return str(record["key"])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(files: dict[str, bytes], **extra: Any) -> dict[str, Any]:
    return {
        "device_id": "ct-01",
        "scan_type": "4d-ct",
        "files": [{"name": n, "size": len(d), "sha256": sha(d)} for n, d in files.items()],
        **extra,
    }


def part_hashes(data: bytes, part_size: int = 5 * MiB) -> list[str]:
    return [sha(data[i : i + part_size]) for i in range(0, len(data), part_size)]


def upload_all(stack: UploadStack, scan_id: str, plan: dict[str, Any], files: dict[str, bytes]) -> None:
    """PUT every part of every file (asking for URLs the plan lacks) and complete each file."""
    for entry, data in zip(plan["files"], files.values(), strict=True):
        urls = {u["part_number"]: u for u in entry["urls"]}
        hashes = part_hashes(data, entry["part_size"])
        missing = [n for n in range(1, entry["part_count"] + 1) if n not in urls]
        if missing:
            status, answer = call(
                stack,
                "POST",
                f"/scans/{scan_id}/files/{entry['index']}/parts",
                {"parts": [{"part_number": n, "sha256": hashes[n - 1]} for n in missing]},
            )
            assert status == 200, answer
            urls.update({u["part_number"]: u for u in answer["urls"]})
        for n in range(1, entry["part_count"] + 1):
            chunk = data[(n - 1) * entry["part_size"] : n * entry["part_size"]]
            status, body = put(urls[n]["url"], urls[n]["headers"], chunk)
            assert status == 200, body
        body = {"part_sha256": hashes} if entry["method"] == "multipart" else {}
        status, answer = call(stack, "POST", f"/scans/{scan_id}/files/{entry['index']}/complete", body)
        assert status == 200, answer


def test_plan_signs_each_parts_sha256_into_its_url(stack: UploadStack) -> None:
    # Given a manifest with one multipart file and one small file, and the device's part hashes
    big, small = os.urandom(11 * MiB), b"DICM" * 100
    body = {
        "manifest": manifest({"series/big.dcm": big, "series/small.dcm": small}),
        "part_size": 5 * MiB,
        "part_sha256": [part_hashes(big), [sha(small)]],
    }
    # When the scan is created
    status, plan = call(stack, "POST", "/scans", body)
    # Then every part has a URL whose signature covers its SHA-256 header, base64 of the part's digest
    assert status == 201, plan
    assert plan["status"] == "UPLOADING"
    big_plan, small_plan = plan["files"]
    assert (big_plan["method"], big_plan["part_count"], big_plan["part_size"]) == ("multipart", 3, 5 * MiB)
    assert (small_plan["method"], small_plan["part_count"]) == ("single", 1)
    for entry, data in ((big_plan, big), (small_plan, small)):
        for url, digest in zip(entry["urls"], part_hashes(data), strict=True):
            signed = parse_qs(urlsplit(url["url"]).query)["X-Amz-SignedHeaders"][0].split(";")
            assert "x-amz-checksum-sha256" in signed
            assert bytes.fromhex(digest) == base64.b64decode(url["headers"]["x-amz-checksum-sha256"])
    # And the API addresses files by position, never by a name (names can carry patient data)
    status, answer = call(stack, "GET", f"/scans/{plan['scan_id']}/files/0")
    assert status == 200 and answer["name"] == "series/big.dcm"
    status, answer = call(stack, "GET", f"/scans/{plan['scan_id']}/files/small.dcm")
    assert status == 404 and "position in the manifest" in answer["message"]


def test_a_corrupted_part_is_refused_by_the_s3_proxy_as_s3_would(stack: UploadStack) -> None:
    # Given a planned file
    data = os.urandom(6 * MiB)
    status, plan = call(
        stack,
        "POST",
        "/scans",
        {"manifest": manifest({"a.dcm": data}), "part_sha256": [part_hashes(data)], "part_size": 5 * MiB},
    )
    url = plan["files"][0]["urls"][0]
    # When part 1 is sent with one byte flipped under the signed checksum
    corrupted = bytearray(data[: 5 * MiB])
    corrupted[100] ^= 0xFF
    status, body = put(url["url"], url["headers"], bytes(corrupted))
    # Then storage refuses it with S3's BadDigest
    assert status == 400 and b"BadDigest" in body


def test_bytes_that_do_not_match_the_manifest_are_caught_at_complete_and_the_file_can_be_sent_again(
    stack: UploadStack, local_aws: Any
) -> None:
    # Given a scan planned straight against moto (which checks no checksum at all)
    direct = start_upload_stack(local=local_aws, part_size=5 * MiB)
    try:
        big, small = os.urandom(7 * MiB), b"small file" * 10
        files = {"phase_00/0001.dcm": big, "phase_00/0002.dcm": small}
        status, plan = call(direct, "POST", "/scans", manifest(files), token=None)
        assert status == 201
        scan_id = plan["scan_id"]
        # When the device sends other bytes than it declared (same sizes), under the signed checksums
        bad_big = big[:-1] + bytes([big[-1] ^ 1])
        status, answer = call(
            direct,
            "POST",
            f"/scans/{scan_id}/files/0/parts",
            {"parts": [{"part_number": n, "sha256": h} for n, h in enumerate(part_hashes(big), start=1)]},
            token=None,
        )
        for u in answer["urls"]:
            n = u["part_number"]
            assert (
                put(u["url"], u["headers"], bad_big[(n - 1) * 5 * MiB : n * 5 * MiB])[0] == 200
            )  # moto takes it
        status, refused = call(
            direct,
            "POST",
            f"/scans/{scan_id}/files/0/complete",
            {"part_sha256": part_hashes(big)},
            token=None,
        )
        # Then completing the file refuses it with the reason (the storage's SHA-256 of the parts it
        # holds is not the device's), and nothing was accepted
        assert status == 409, refused
        assert refused["error"] == "checksum_mismatch"
        assert "do not hash to the part SHA-256s" in refused["message"]
        assert "upload the file again" in refused["message"]
        status, state = call(direct, "GET", f"/scans/{scan_id}/files/0", token=None)
        assert state["state"] == "uploading" and state["parts"] == []  # a fresh upload: recoverable
        # And a wrong small file is caught too, and the scan cannot complete meanwhile
        put(plan["files"][1]["urls"][0]["url"], plan["files"][1]["urls"][0]["headers"], b"other byte" * 10)
        status, refused = call(direct, "POST", f"/scans/{scan_id}/files/1/complete", {}, token=None)
        assert status == 409 and refused["error"] == "checksum_mismatch"
        assert "SHA-256" in refused["message"]  # same size, other bytes: the hash catches it
        status, refused = call(direct, "POST", f"/scans/{scan_id}/complete", {}, token=None)
        assert status == 409 and "not complete (files[0])" in refused["message"]
        assert direct.processor.hand_offs == []
        # When the right bytes are sent again
        upload_all(direct, scan_id, {"files": [{**plan["files"][0], "urls": []}, plan["files"][1]]}, files)
        status, done = call(direct, "POST", f"/scans/{scan_id}/complete", {}, token=None)
        # Then the scan completes and its objects are the device's bytes
        assert status == 200 and done["status"] == "UPLOADED", done
        s3 = local_aws.client("s3")
        for index, data in enumerate(files.values()):
            key = object_key(direct, scan_id, index)
            assert s3.get_object(Bucket=local_aws.ingest_bucket, Key=key)["Body"].read() == data
    finally:
        direct.gateway.stop()
        stack.handler.use_service(stack.service)  # the module's stack serves again


def test_many_small_files_complete_in_one_request_each_answered_and_a_wrong_one_caught(
    stack: UploadStack, local_aws: Any
) -> None:
    # Given a scan of small files straight against moto (no checksum checked at the PUT), every URL
    # in the plan, one file sent with other bytes of the same size and one not sent at all
    direct = start_upload_stack(local=local_aws, part_size=5 * MiB)
    try:
        files = {f"phase_00/{i:04d}.dcm": os.urandom(1000 + i) for i in range(6)}
        status, plan = call(direct, "POST", "/scans", manifest(files), token=None)
        assert status == 201 and all(len(f["urls"]) == 1 for f in plan["files"])
        scan_id = plan["scan_id"]
        data = list(files.values())
        for entry, body in zip(plan["files"][:5], data[:5], strict=True):
            sent = body if entry["index"] != 2 else bytes(b ^ 1 for b in body)
            assert put(entry["urls"][0]["url"], entry["urls"][0]["headers"], sent)[0] == 200
        # When the device completes them all in one request
        status, answer = call(
            direct, "POST", f"/scans/{scan_id}/files/complete", {"files": [{"index": i} for i in range(6)]}
        )
        # Then each file is answered on its own: the good ones complete, the wrong one refused and
        # restarted (recoverable), the missing one said to be not uploaded yet
        assert status == 200, answer
        by_index = {f["index"]: f for f in answer["files"]}
        assert [by_index[i]["state"] for i in (0, 1, 3, 4)] == ["complete"] * 4
        assert by_index[2]["error"] == "checksum_mismatch" and "SHA-256" in by_index[2]["message"]
        assert by_index[5]["error"] == "conflict" and "not been uploaded" in by_index[5]["message"]
        s3 = local_aws.client("s3")
        with pytest.raises(s3.exceptions.ClientError):
            s3.head_object(Bucket=local_aws.ingest_bucket, Key=object_key(direct, scan_id, 2))
        # And asking again is answered the same for the complete ones (idempotent); once the right
        # bytes are sent the scan completes with the device's bytes
        for i in (2, 5):
            assert (
                put(plan["files"][i]["urls"][0]["url"], plan["files"][i]["urls"][0]["headers"], data[i])[0]
                == 200
            )
        status, again = call(
            direct, "POST", f"/scans/{scan_id}/files/complete", {"files": [{"index": i} for i in range(6)]}
        )
        assert status == 200 and all(f["state"] == "complete" for f in again["files"]), again
        status, done = call(direct, "POST", f"/scans/{scan_id}/complete", {}, token=None)
        assert status == 200 and done["status"] == "UPLOADED"
        for index, body in enumerate(files.values()):
            key = object_key(direct, scan_id, index)
            assert s3.get_object(Bucket=local_aws.ingest_bucket, Key=key)["Body"].read() == body
    finally:
        direct.gateway.stop()
        stack.handler.use_service(stack.service)  # the module's stack serves again


def test_a_batch_completion_over_the_limit_or_malformed_gets_4xx(stack: UploadStack) -> None:
    # Given a scan
    status, plan = call(stack, "POST", "/scans", manifest({"a.dcm": b"x" * 10}))
    assert status == 201
    scan_id = plan["scan_id"]
    # When the batch is too big, malformed, lists a file twice or one the scan does not have
    over = {"files": [{"index": i} for i in range(101)]}
    answers = [
        call(stack, "POST", f"/scans/{scan_id}/files/complete", body)
        for body in (
            over,
            {"files": "all"},
            {"files": [{"index": 0}, {"index": 0}]},
            {"files": [{"index": 7}]},
        )
    ]
    # Then each gets its 4xx with the reason
    assert [s for s, _ in answers] == [413, 400, 400, 404]
    assert "over the limit of 100" in answers[0][1]["message"]
    assert "listed twice" in answers[2][1]["message"]
    assert "files[7]" in answers[3][1]["message"]


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 400, "not valid JSON"),
        (json.dumps({"device_id": "ct-01", "scan_type": "4d-ct"}).encode(), 400, "lacks files"),
        (json.dumps(manifest({"../../etc/passwd": b"x"})).encode(), 400, "'..' path segment"),
        (json.dumps(manifest({"/abs/file.dcm": b"x"})).encode(), 400, "absolute path"),
        (json.dumps(manifest({"a\x00b.dcm": b"x"})).encode(), 400, "control character"),
        (json.dumps(manifest({"a.dcm": b"x"}, scan_type="mri")).encode(), 400, "scan_type"),
        (json.dumps(manifest({"a.dcm": b"x"}, scan_id="mine")).encode(), 400, "assigned by the server"),
        (json.dumps(manifest({"a.dcm": b"x"}, owner="me")).encode(), 400, "unknown fields: owner"),
        (json.dumps(manifest({f"f{i}.dcm": b"x" for i in range(21)})).encode(), 413, "over the limit of 20"),
        (
            json.dumps(
                {
                    "device_id": "ct-01",
                    "scan_type": "4d-ct",
                    "files": [{"name": "a.dcm", "size": 65 * MiB, "sha256": "0" * 64}],
                }
            ).encode(),
            413,
            "over the limit",
        ),
        (
            json.dumps({"manifest": manifest({"a.dcm": b"x"}), "part_sha256": [["zz"]]}).encode(),
            400,
            "part_sha256[0]",
        ),
    ],
    ids=[
        "malformed-json",
        "no-files",
        "path-traversal",
        "absolute",
        "control-char",
        "bad-scan-type",
        "client-scan-id",
        "unknown-field",
        "too-many-files",
        "file-too-large",
        "bad-part-hash",
    ],
)
def test_malformed_hostile_and_oversized_manifests_get_4xx_with_the_reason(
    stack: UploadStack, body: bytes, status: int, reason: str
) -> None:
    # When a bad manifest is posted
    got, answer = call(stack, "POST", "/scans", raw=body)
    # Then it is refused with the status and a message that says why
    assert got == status, answer
    assert reason in answer["message"]


def test_a_body_over_api_gateways_limit_is_refused_before_the_handler(stack: UploadStack) -> None:
    before = stack.gateway.requests
    status, answer = call(stack, "POST", "/scans", raw=b"x" * (10 * MiB + 1))
    assert status == 413 and stack.gateway.requests == before + 1
    assert answer["error"] == "too_large" and answer["message"].startswith("Request Too Long")


def test_requests_without_the_token_are_refused(stack: UploadStack) -> None:
    status, answer = call(stack, "GET", "/scans/anything", token=None)
    assert status == 403 and answer["error"] == "missing_token"
    assert answer["message"].startswith("Missing Authentication Token")
    status, answer = call(stack, "GET", "/scans/no-such-scan")
    assert status == 404 and "no scan" in answer["message"]


def test_complete_twice_and_concurrently_starts_processing_once(stack: UploadStack) -> None:
    # Given two fully uploaded scans
    scans = []
    for _ in range(2):
        files = {"a.dcm": os.urandom(1000), "b.dcm": os.urandom(2000)}
        _status, plan = call(stack, "POST", "/scans", manifest(files))
        upload_all(stack, plan["scan_id"], plan, files)
        scans.append(plan["scan_id"])
    first, second = scans
    # When the first is completed twice in a row
    status1, answer1 = call(stack, "POST", f"/scans/{first}/complete", {})
    status2, answer2 = call(stack, "POST", f"/scans/{first}/complete", {})
    # And the second by eight callers at once
    results: list[tuple[int, dict[str, Any]]] = []
    barrier = threading.Barrier(8)

    def racer() -> None:
        barrier.wait()
        results.append(call(stack, "POST", f"/scans/{second}/complete", {}))

    threads = [threading.Thread(target=racer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then every call is answered UPLOADED, and processing started exactly once per scan
    assert (status1, answer1["already_completed"]) == (200, False)
    assert (status2, answer2["already_completed"]) == (200, True)
    assert all(s == 200 and a["status"] == "UPLOADED" for s, a in results), results
    assert sum(not a["already_completed"] for _, a in results) == 1
    started = [h.scan_id for h in stack.processor.hand_offs]
    assert started.count(first) == 1 and started.count(second) == 1
    # And the manifest sits next to the data, with the server's scan id
    body = (
        stack.local.client("s3")
        .get_object(Bucket=stack.local.ingest_bucket, Key=f"scans/{first}/manifest.json")["Body"]
        .read()
    )
    assert json.loads(body)["scan_id"] == first


def test_progress_counts_parts_as_they_land(stack: UploadStack) -> None:
    data = os.urandom(11 * MiB)
    status, plan = call(
        stack,
        "POST",
        "/scans",
        {"manifest": manifest({"a.dcm": data}), "part_sha256": [part_hashes(data)], "part_size": 5 * MiB},
    )
    url = plan["files"][0]["urls"][0]
    assert put(url["url"], url["headers"], data[: 5 * MiB])[0] == 200
    status, progress = call(stack, "GET", f"/scans/{plan['scan_id']}")
    assert status == 200
    assert (progress["status"], progress["bytes_total"], progress["bytes_uploaded"]) == (
        "UPLOADING",
        11 * MiB,
        5 * MiB,
    )
    status, refused = call(stack, "POST", f"/scans/{plan['scan_id']}/complete", {})
    assert status == 409 and "not complete" in refused["message"]


def test_delete_aborts_every_multipart_upload_and_marks_the_scan_failed(stack: UploadStack) -> None:
    # Given a scan with two multipart files part-way through
    a, b = os.urandom(6 * MiB), os.urandom(6 * MiB)
    status, plan = call(
        stack,
        "POST",
        "/scans",
        {
            "manifest": manifest({"a.dcm": a, "b.dcm": b}),
            "part_sha256": [part_hashes(a), part_hashes(b)],
            "part_size": 5 * MiB,
        },
    )
    scan_id = plan["scan_id"]
    url = plan["files"][0]["urls"][0]
    put(url["url"], url["headers"], a[: 5 * MiB])
    s3 = stack.local.client("s3")
    prefix = f"scans/{scan_id}/"

    def open_uploads() -> int:
        listed = s3.list_multipart_uploads(Bucket=stack.local.ingest_bucket).get("Uploads", [])
        return sum(u["Key"].startswith(prefix) for u in listed)

    assert open_uploads() == 2
    # When the device aborts it
    status, answer = call(stack, "DELETE", f"/scans/{scan_id}")
    # Then no upload is left, the scan is FAILED with the reason, and nothing more is accepted
    assert status == 200 and answer["uploads_aborted"] == 2
    assert open_uploads() == 0
    status, progress = call(stack, "GET", f"/scans/{scan_id}")
    assert (progress["status"], progress["reason"]) == ("FAILED", ABORT_REASON)
    status, refused = call(
        stack, "POST", f"/scans/{scan_id}/files/1/parts", {"parts": [{"part_number": 1, "sha256": "0" * 64}]}
    )
    assert status == 409 and "FAILED" in refused["message"]
    status, refused = call(stack, "POST", f"/scans/{scan_id}/complete", {})
    assert status == 409 and "upload it as a new scan" in refused["message"]
    assert call(stack, "DELETE", f"/scans/{scan_id}")[0] == 200  # repeating is harmless


def test_presigned_urls_expire_at_the_s3_proxy(stack: UploadStack, local_aws: Any) -> None:
    # Given URLs issued with a 1 s lifetime
    with start_upload_stack(local=local_aws, with_proxy=True, presigned_url_expiry_s=1) as short:
        data = b"x" * 100
        status, plan = call(short, "POST", "/scans", manifest({"a.dcm": data}), token=None)
        url = plan["files"][0]["urls"][0]
        # When one is used after it expired
        time.sleep(2.1)
        status, body = put(url["url"], url["headers"], data)
        # Then storage refuses it as S3 does
        assert status == 403 and b"Request has expired" in body
        assert short.proxy is not None and short.proxy.expired == 1
    stack.handler.use_service(stack.service)


def test_the_step_functions_hand_off_starts_one_execution_per_scan(local_aws: Any) -> None:
    # Given a state machine (the workflow issue supplies the real one)
    from dicomflow.upload.processing import StepFunctionsProcessor

    sfn = local_aws.client("stepfunctions")
    arn = sfn.create_state_machine(
        name="hand-off-test",
        roleArn="arn:aws:iam::123456789012:role/sfn",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
    )["stateMachineArn"]
    processor = StepFunctionsProcessor(sfn, arn, local_aws.ingest_bucket)
    # When the same scan is handed off twice
    first = processor.start("scan-a", "scans/scan-a/manifest.json")
    second = processor.start("scan-a", "scans/scan-a/manifest.json")
    # Then there is one execution, named after the scan, with the manifest's location as input
    assert first == second and first.endswith(":scan-a")
    executions = sfn.list_executions(stateMachineArn=arn)["executions"]
    assert [e["name"] for e in executions] == ["scan-a"]
    started = json.loads(sfn.describe_execution(executionArn=first)["input"])
    assert started == {
        "scan_id": "scan-a",
        "bucket": local_aws.ingest_bucket,
        "manifest_key": "scans/scan-a/manifest.json",
    }
