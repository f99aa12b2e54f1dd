"""Security of the upload API over real HTTP: the local gateway serving the real Lambda handler,
S3 and DynamoDB on an embedded moto server, presigned URLs pointing at the S3 proxy (which enforces
expiry as S3 does; moto alone does not).

Given a device, or an attacker holding a token, when it sends an expired URL, a hostile file name, an
oversized manifest, an unknown scan or a request out of the scan's order, then it is refused with
the status, the one error shape ``{"error", "message"}``, and a message that says why (and what to
do) without echoing what was sent.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from dicomflow.local.moto_server import LocalAws, start_local_aws
from dicomflow.local.stack import UploadStack, start_upload_stack
from dicomflow.upload.parts import MiB

TOKEN = "security-test-token"
EXPIRY_S = 600
MAX_FILES = 5
MAX_FILE_SIZE = 16 * MiB
#: A distinctive value in every hostile name: it must never come back in an answer.
MARK = "DOEJANEMRN12345"


class SharedAws:
    """The module's moto server lent to several stacks: a stack's ``stop`` leaves it running."""

    def __init__(self, local: LocalAws) -> None:
        self._local = local

    def __getattr__(self, name: str) -> Any:
        return getattr(self._local, name)

    def stop(self) -> None:
        pass


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    local = start_local_aws()
    yield SharedAws(local)  # type: ignore[misc]
    local.stop()


@pytest.fixture(scope="module")
def stack(aws: LocalAws) -> Iterator[UploadStack]:
    with start_upload_stack(
        local=aws,
        with_proxy=True,
        token=TOKEN,
        part_size=5 * MiB,
        presigned_url_expiry_s=EXPIRY_S,
        max_files=MAX_FILES,
        max_file_size=MAX_FILE_SIZE,
        max_total_size=4 * MAX_FILE_SIZE,
    ) as running:
        yield running


def call(
    stack: UploadStack, method: str, path: str, body: Any = None, *, raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    split = urlsplit(stack.api_url)
    conn = http.client.HTTPConnection(split.netloc, timeout=60)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(
        method, path, body=data, headers={"Content-Type": "application/json", "X-Dicomflow-Token": TOKEN}
    )
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


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(files: dict[str, bytes]) -> dict[str, Any]:
    return {
        "device_id": "ct-01",
        "scan_type": "4d-ct",
        "files": [{"name": n, "size": len(d), "sha256": sha(d)} for n, d in files.items()],
    }


def assert_error(answer: dict[str, Any], code: str | None = None) -> None:
    """The API's one error shape."""
    assert set(answer) == {"error", "message"}, answer
    assert isinstance(answer["message"], str) and answer["message"]
    if code is not None:
        assert answer["error"] == code, answer


def expires(url: str) -> str:
    return parse_qs(urlsplit(url).query)["X-Amz-Expires"][0]


def exists(stack: UploadStack, scan_id: str, index: int) -> bool:
    record = stack.service.table.get_file(scan_id, index)
    assert record is not None
    s3 = stack.local.client("s3")
    listed = s3.list_objects_v2(Bucket=stack.local.ingest_bucket, Prefix=record["key"])
    return bool(listed.get("KeyCount"))


def new_scan(stack: UploadStack, files: dict[str, bytes]) -> tuple[str, dict[str, Any]]:
    status, plan = call(stack, "POST", "/scans", manifest(files))
    assert status == 201, plan
    return plan["scan_id"], plan


def upload_and_complete_file(stack: UploadStack, scan_id: str, entry: dict[str, Any], data: bytes) -> None:
    (url,) = entry["urls"]
    assert put(url["url"], url["headers"], data)[0] == 200
    status, answer = call(stack, "POST", f"/scans/{scan_id}/files/{entry['index']}/complete", {})
    assert status == 200 and answer["state"] == "complete", answer


# -- expired presigned URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expiry_s", "max_url_age_s"),
    [(2, None), (EXPIRY_S, 2.0)],
    ids=["x-amz-expires-passed", "signing-credentials-expired-first"],
)
def test_an_expired_presigned_url_is_refused_and_nothing_lands(
    stack: UploadStack, aws: LocalAws, expiry_s: int, max_url_age_s: float | None
) -> None:
    # Given URLs presigned with the configured expiry (and, in the second case, a proxy on which
    # they die sooner, as they do in S3 when the credentials that signed them expire first)
    single, multi = b"s" * 1000, b"m" * (6 * MiB)
    try:
        with start_upload_stack(
            local=aws,
            with_proxy=True,
            token=TOKEN,
            part_size=5 * MiB,
            presigned_url_expiry_s=expiry_s,
            max_url_age_s=max_url_age_s,
        ) as short:
            scan_id, plan = new_scan(short, {"a.dcm": single, "b.dcm": multi, "c.dcm": single + b"c"})
            first, _, third = plan["files"]
            # Then every URL carries X-Amz-Expires equal to the configured expiry: real S3 enforces it
            status, parts = call(
                short,
                "POST",
                f"/scans/{scan_id}/files/1/parts",
                {"parts": [{"part_number": 1, "sha256": sha(multi[: 5 * MiB])}]},
            )
            assert status == 200, parts
            urls = [first["urls"][0], third["urls"][0], parts["urls"][0]]
            assert [expires(u["url"]) for u in urls] == [str(expiry_s)] * 3
            assert parts["url_expiry_s"] == plan["url_expiry_s"] == expiry_s
            # And a URL used in time is accepted
            assert put(first["urls"][0]["url"], first["urls"][0]["headers"], single)[0] == 200
            # When the others are used after they expired
            time.sleep(3.1)  # X-Amz-Date has whole seconds: 2 s can be 1-2 s
            single_put = put(third["urls"][0]["url"], third["urls"][0]["headers"], single + b"c")
            part_put = put(parts["urls"][0]["url"], parts["urls"][0]["headers"], multi[: 5 * MiB])
            # Then storage refuses both as S3 does, and nothing landed
            for status, body in (single_put, part_put):
                assert status == 403 and b"Request has expired" in body
            assert short.proxy is not None and short.proxy.expired == 2
            assert not exists(short, scan_id, 2)
            _, listed = call(short, "GET", f"/scans/{scan_id}/files/1")
            assert listed["parts"] == []
            assert exists(short, scan_id, 0)
    finally:
        stack.handler.use_service(stack.service)  # the handler serves one service at a time


# -- path traversal in file names -------------------------------------------------------------------


HOSTILE_NAMES = {
    "parent": f"../{MARK}.dcm",
    "deep-parent": f"a/../../{MARK}.dcm",
    "absolute": f"/{MARK}.dcm",
    "absolute-etc": f"/etc/{MARK}",
    "windows-drive": f"C:/{MARK}.dcm",
    "backslash": f"a\\{MARK}.dcm",
    "backslash-parent": f"..\\..\\{MARK}.dcm",
    "nul": f"{MARK}.dcm\x00.png",
    "dot-segment": f"./{MARK}.dcm",
    "empty-segment": f"a//{MARK}.dcm",
    "trailing-dot": f"{MARK}/..",
    "newline": f"{MARK}\n.dcm",
}


@pytest.mark.parametrize("name", HOSTILE_NAMES.values(), ids=HOSTILE_NAMES.keys())
def test_a_file_name_that_escapes_the_scan_folder_is_refused_without_echoing_it(
    stack: UploadStack, name: str
) -> None:
    scans_before = len(stack.service.table.table.scan()["Items"])
    # When a manifest names a file that would escape the scan's folder
    status, answer = call(stack, "POST", "/scans", manifest({"ok.dcm": b"x", name: b"y"}))
    # Then it is refused (400), in the one error shape, naming the entry by position only
    assert status == 400, answer
    assert_error(answer, "invalid_request")
    assert "files[1].name" in answer["message"]
    assert MARK not in answer["message"] and name not in answer["message"]
    assert "\x00" not in answer["message"]
    # And no scan was recorded
    assert len(stack.service.table.table.scan()["Items"]) == scans_before


# -- oversized manifests ----------------------------------------------------------------------------


def test_too_many_files_is_refused_with_413(stack: UploadStack) -> None:
    status, answer = call(
        stack, "POST", "/scans", manifest({f"{i}.dcm": bytes([i]) for i in range(MAX_FILES + 1)})
    )
    assert status == 413, answer
    assert_error(answer, "too_large")
    assert f"over the limit of {MAX_FILES}" in answer["message"] and "split" in answer["message"]


def test_a_file_over_the_size_limit_is_refused_with_413(stack: UploadStack) -> None:
    body = manifest({"a.dcm": b"x"})
    body["files"][0]["size"] = MAX_FILE_SIZE + 1
    status, answer = call(stack, "POST", "/scans", body)
    assert status == 413, answer
    assert_error(answer, "too_large")
    assert f"over the limit of {MAX_FILE_SIZE}" in answer["message"]


def test_a_scan_over_the_total_size_limit_is_refused_with_413(stack: UploadStack) -> None:
    body = manifest({f"{i}.dcm": bytes([i]) for i in range(5)})
    for entry in body["files"]:
        entry["size"] = MAX_FILE_SIZE
    status, answer = call(stack, "POST", "/scans", body)
    assert status == 413, answer
    assert_error(answer, "too_large")
    assert "totals" in answer["message"]


def test_a_body_over_the_lambda_limit_is_refused_by_the_handler_with_413(stack: UploadStack) -> None:
    # Under API Gateway's 10 MiB but over the 6 MiB Lambda takes: valid JSON padded with spaces
    raw = json.dumps(manifest({"a.dcm": b"x"})).encode() + b" " * (7 * MiB)
    before = stack.gateway.requests
    status, answer = call(stack, "POST", "/scans", raw=raw)
    assert status == 413, answer
    assert_error(answer, "too_large")
    assert "over the limit" in answer["message"]
    assert stack.gateway.requests == before + 1


def test_a_body_over_api_gateways_limit_is_refused_before_the_handler(stack: UploadStack) -> None:
    status, answer = call(stack, "POST", "/scans", raw=b"{" + b" " * (10 * MiB + 1))
    assert status == 413, answer
    assert_error(answer)


def test_a_name_over_the_length_limit_is_refused_with_400(stack: UploadStack) -> None:
    status, answer = call(stack, "POST", "/scans", manifest({MARK * 40: b"x"}))
    assert status == 400, answer
    assert_error(answer, "invalid_request")
    assert "longer than" in answer["message"] and MARK not in answer["message"]


def test_too_many_part_urls_in_one_request_is_refused_with_413(stack: UploadStack) -> None:
    scan_id, _ = new_scan(stack, {"big.dcm": b"b" * (11 * MiB)})
    parts = [{"part_number": 1, "sha256": "0" * 64}] * 101
    status, answer = call(stack, "POST", f"/scans/{scan_id}/files/0/parts", {"parts": parts})
    assert status == 413, answer
    assert_error(answer, "too_large")


# -- unknown scans ----------------------------------------------------------------------------------


ROUTES = [
    ("GET", "/scans/{id}", None),
    ("DELETE", "/scans/{id}", None),
    ("POST", "/scans/{id}/complete", {}),
    ("GET", "/scans/{id}/files/0", None),
    ("POST", "/scans/{id}/files/0/parts", {"parts": [{"part_number": 1, "sha256": "0" * 64}]}),
    ("POST", "/scans/{id}/files/0/complete", {}),
    ("POST", "/scans/{id}/files/complete", {"files": [{"index": 0}]}),
]
UNKNOWN_IDS = {
    "well-formed": "20260101T000000Z-0123456789abcdef",
    "dot-dot": "..",
    "encoded-traversal": "..%2F..%2Fetc",
    "too-long": "a" * 65,
    "nul": "abc%00def",
}


@pytest.mark.parametrize(("method", "route", "body"), ROUTES, ids=[f"{m} {r}" for m, r, _ in ROUTES])
@pytest.mark.parametrize("scan_id", UNKNOWN_IDS.values(), ids=UNKNOWN_IDS.keys())
def test_every_route_answers_404_for_an_unknown_scan(
    stack: UploadStack, method: str, route: str, body: Any, scan_id: str
) -> None:
    status, answer = call(stack, method, route.format(id=scan_id), body)
    assert status == 404, answer
    assert_error(answer, "not_found")


@pytest.mark.parametrize("index", ["99", "100000", "-1", "x", "..", "0x0"])
def test_every_file_route_answers_404_for_an_unknown_file(stack: UploadStack, index: str) -> None:
    scan_id, _ = new_scan(stack, {"a.dcm": b"a"})
    for method, route, body in ROUTES[3:6]:
        status, answer = call(stack, method, route.format(id=scan_id).replace("/0", f"/{index}"), body)
        assert status == 404, (route, answer)
        assert_error(answer, "not_found")


# -- illegal state transitions ----------------------------------------------------------------------


def assert_conflict(answer: dict[str, Any], *instructions: str) -> None:
    assert_error(answer, "conflict")
    assert any(i in answer["message"] for i in instructions), answer["message"]


def aborted_scan(stack: UploadStack) -> tuple[str, dict[str, Any], dict[str, bytes]]:
    files = {"a.dcm": b"a" * 10, "b.dcm": b"b" * (6 * MiB)}
    scan_id, plan = new_scan(stack, files)
    assert call(stack, "DELETE", f"/scans/{scan_id}")[0] == 200
    return scan_id, plan, files


def completed_scan(stack: UploadStack) -> tuple[str, dict[str, Any], dict[str, bytes]]:
    files = {"a.dcm": b"a" * 10, "b.dcm": b"b" * 20}
    scan_id, plan = new_scan(stack, files)
    for entry, data in zip(plan["files"], files.values(), strict=True):
        upload_and_complete_file(stack, scan_id, entry, data)
    status, done = call(stack, "POST", f"/scans/{scan_id}/complete", {})
    assert status == 200 and done["status"] == "UPLOADED", done
    return scan_id, plan, files


def part_request(data: bytes) -> dict[str, Any]:
    return {"parts": [{"part_number": 1, "sha256": sha(data[: 5 * MiB])}]}


def test_an_aborted_scan_can_be_neither_completed_nor_uploaded_to(stack: UploadStack) -> None:
    # Given an aborted scan
    scan_id, plan, files = aborted_scan(stack)
    # When the device tries to complete it, complete a file, or get part URLs
    completed = call(stack, "POST", f"/scans/{scan_id}/complete", {})
    file_completed = call(stack, "POST", f"/scans/{scan_id}/files/0/complete", {})
    urls = call(stack, "POST", f"/scans/{scan_id}/files/1/parts", part_request(files["b.dcm"]))
    # Then each is a conflict (409); completing the scan says to upload it as a new scan
    for status, answer in (completed, file_completed, urls):
        assert status == 409, answer
        assert_error(answer, "conflict")
        assert "aborted" in answer["message"] or "FAILED" in answer["message"]
    assert_conflict(completed[1], "upload it as a new scan")
    # And the presigned URL handed out before the abort lands nothing (the tombstone refuses it)
    single = plan["files"][0]["urls"][0]
    assert put(single["url"], single["headers"], files["a.dcm"])[0] == 412
    assert stack.service.table.get_scan(scan_id)["status"] == "FAILED"  # type: ignore[index]


@pytest.mark.parametrize(
    ("scan", "method", "route"),
    [
        ("aborted", "POST", "/scans/{id}/files/0/complete"),
        ("aborted", "POST", "/scans/{id}/files/1/parts"),
        ("completed", "POST", "/scans/{id}/files/1/parts"),
    ],
    ids=["aborted-complete-file", "aborted-part-urls", "completed-scan-part-urls"],
)
def test_every_409_out_of_uploading_says_what_to_do(
    stack: UploadStack, scan: str, method: str, route: str
) -> None:
    scan_id, _, files = aborted_scan(stack) if scan == "aborted" else completed_scan(stack)
    status, answer = call(stack, method, route.format(id=scan_id), part_request(files["b.dcm"]))
    assert status == 409, answer
    assert_conflict(answer, "new scan", "nothing to upload", "nothing left to upload")


def test_a_complete_file_gets_no_part_urls(stack: UploadStack) -> None:
    # Given a scan whose file 0 is complete
    files = {"a.dcm": b"a" * 10, "b.dcm": b"b" * 20}
    scan_id, plan = new_scan(stack, files)
    upload_and_complete_file(stack, scan_id, plan["files"][0], files["a.dcm"])
    # When part URLs are asked for that file
    status, answer = call(
        stack, "POST", f"/scans/{scan_id}/files/0/parts", {"parts": [{"part_number": 1, "sha256": sha(b"z")}]}
    )
    # Then it is a conflict: nothing to upload
    assert status == 409, answer
    assert_conflict(answer, "nothing to upload")
    assert MARK not in answer["message"]


def test_an_incomplete_scan_cannot_be_completed(stack: UploadStack) -> None:
    scan_id, _ = new_scan(stack, {"big.dcm": b"b" * (6 * MiB)})
    status, answer = call(stack, "POST", f"/scans/{scan_id}/complete", {})
    assert status == 409, answer
    assert_conflict(answer, "upload and complete them")
    assert stack.service.table.get_scan(scan_id)["status"] == "UPLOADING"  # type: ignore[index]


def test_a_file_not_uploaded_cannot_be_completed(stack: UploadStack) -> None:
    scan_id, _ = new_scan(stack, {"a.dcm": b"a"})
    status, answer = call(stack, "POST", f"/scans/{scan_id}/files/0/complete", {})
    assert status == 409, answer
    assert_conflict(answer, "PUT it to its presigned URL")


def test_a_completed_scan_can_be_neither_aborted_nor_uploaded_to(stack: UploadStack) -> None:
    # Given a completed (UPLOADED) scan
    scan_id, plan, files = completed_scan(stack)
    # When the device aborts it, or asks for URLs to upload into it
    aborted = call(stack, "DELETE", f"/scans/{scan_id}")
    urls = call(stack, "POST", f"/scans/{scan_id}/files/1/parts", part_request(files["b.dcm"]))
    # Then both are conflicts, the scan and its objects unchanged
    assert aborted[0] == 409, aborted
    assert_conflict(aborted[1], "can no longer be aborted")
    assert urls[0] == 409, urls
    assert_error(urls[1], "conflict")
    assert stack.service.table.get_scan(scan_id)["status"] == "UPLOADED"  # type: ignore[index]
    assert exists(stack, scan_id, 0) and exists(stack, scan_id, 1)
    # And completing it again is answered, not repeated
    status, again = call(stack, "POST", f"/scans/{scan_id}/complete", {})
    assert status == 200 and again["already_completed"] is True
    # And the URL used before cannot overwrite the completed file
    single = plan["files"][0]["urls"][0]
    assert put(single["url"], single["headers"], files["a.dcm"])[0] == 412
