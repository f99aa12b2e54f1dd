"""The local gateway and S3 proxy answer every request, in the API's one error shape, and stay quiet
when a client goes away (issue 12, points 5, 9 and 11): real sockets on localhost."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest

from dicomflow.local.gateway import LocalGateway
from dicomflow.local.s3_proxy import S3Proxy
from dicomflow.local.stack import UploadStack, start_upload_stack
from dicomflow.upload.parts import MiB

TOKEN = "servers-test-token"


@pytest.fixture(scope="module")
def stack(local_aws: Any) -> Any:
    with start_upload_stack(local=local_aws, with_proxy=True, token=TOKEN, part_size=5 * MiB) as running:
        yield running


def call(
    stack: UploadStack, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN
) -> tuple[int, dict[str, str], dict[str, Any]]:
    conn = http.client.HTTPConnection(urlsplit(stack.api_url).netloc, timeout=30)
    conn.request(method, path, body=body, headers={"X-Dicomflow-Token": token} if token else {})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), json.loads(payload or b"{}")


def raw(url: str, request: bytes, *, wait_s: float = 20) -> bytes:
    """Send ``request`` as is and read until the server closes (or ``wait_s``)."""
    split = urlsplit(url)
    with socket.create_connection((split.hostname, split.port), timeout=wait_s) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize(
    ("method", "path", "token", "status", "code"),
    [
        ("GET", "/scans/x", None, 403, "missing_token"),
        ("GET", "/scans/x", "wrong", 403, "invalid_token"),
        ("GET", "/no/such/route", TOKEN, 404, "not_found"),
        ("PUT", "/scans", TOKEN, 405, "method_not_allowed"),
        ("GET", "/scans/no-such-scan", TOKEN, 404, "not_found"),
        ("POST", "/scans", TOKEN, 400, "invalid_request"),
    ],
    ids=["no-token", "wrong-token", "unknown-route", "wrong-method", "unknown-scan", "bad-body"],
)
def test_every_error_has_the_one_shape(
    stack: UploadStack, method: str, path: str, token: str | None, status: int, code: str
) -> None:
    got, headers, answer = call(stack, method, path, b"{}" if method != "GET" else None, token)
    assert (got, answer.get("error")) == (status, code), answer
    assert set(answer) == {"error", "message"} and answer["message"]
    if status == 405:
        assert "POST" in headers["Allow"]
    if code == "missing_token":
        assert "DICOMFLOW_API_TOKEN" in answer["message"]


def test_the_gateways_own_refusals_and_a_failing_function_have_the_shape_too() -> None:
    def failing(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    with LocalGateway(failing) as gateway:
        no_length = raw(gateway.url, b"POST /scans HTTP/1.1\r\nHost: x\r\n\r\n")
        failed = raw(gateway.url, b"GET /scans HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(no_length) == 411 and json.loads(body_of(no_length))["error"] == "length_required"
    assert status_of(failed) == 502 and json.loads(body_of(failed)) == {
        "error": "internal",
        "message": "the upload API's function failed (RuntimeError)",
    }


def test_a_stalled_body_gets_408_from_the_gateway_and_the_s3_proxy_not_a_hang(local_aws: Any) -> None:
    # Given servers with a 1 s socket timeout, and clients that announce 100 bytes and send 10
    stalled = b"Content-Length: 100\r\n\r\n" + b"x" * 10

    def never(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise AssertionError("a request with half a body must not reach the handler")

    with (
        LocalGateway(never, request_timeout_s=1.0) as gateway,
        S3Proxy(local_aws.endpoint_url, request_timeout_s=1.0) as proxy,
    ):
        started = time.monotonic()
        from_gateway = raw(gateway.url, b"POST /scans HTTP/1.1\r\nHost: x\r\n" + stalled)
        from_proxy = raw(proxy.url, b"PUT /bucket/key HTTP/1.1\r\nHost: x\r\n" + stalled)
        no_length = raw(proxy.url, b"PUT /bucket/key HTTP/1.1\r\nHost: x\r\n\r\n")
        elapsed = time.monotonic() - started
    # Then each is answered with the reason, within the timeout, not left hanging
    assert status_of(from_gateway) == 408
    assert json.loads(body_of(from_gateway))["error"] == "request_timeout"
    assert status_of(from_proxy) == 408 and b"<Code>RequestTimeout</Code>" in from_proxy
    assert status_of(no_length) == 411 and b"MissingContentLength" in no_length
    assert elapsed < 15


def test_a_put_with_urllibs_default_content_type_is_answered_and_stored(stack: UploadStack) -> None:
    # Given a planned multipart file and a small file, their URLs through the local stack's S3 proxy
    big, small = b"A" * (6 * MiB), b"DICM" * 100
    hashes = [hashlib.sha256(big[: 5 * MiB]).hexdigest(), hashlib.sha256(big[5 * MiB :]).hexdigest()]
    manifest = {
        "device_id": "ct-01",
        "scan_type": "4d-ct",
        "files": [
            {"name": "big.dcm", "size": len(big), "sha256": hashlib.sha256(big).hexdigest()},
            {"name": "small.dcm", "size": len(small), "sha256": hashlib.sha256(small).hexdigest()},
        ],
    }
    body = json.dumps({"manifest": manifest, "part_size": 5 * MiB, "part_sha256": [hashes, []]}).encode()
    status, _, plan = call(stack, "POST", "/scans", body)
    assert status == 201, plan
    # When a client PUTs with urllib, which sends application/x-www-form-urlencoded by default
    answers = []
    for url, data in (
        (plan["files"][0]["urls"][0], big[: 5 * MiB]),
        (plan["files"][1]["urls"][0], small),
    ):
        request = urllib.request.Request(url["url"], data=data, method="PUT", headers=url["headers"])
        assert request.get_method() == "PUT"
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answers.append(response.status)
        except urllib.error.HTTPError as exc:
            answers.append(exc.code)
    # Then both are answered and stored, as S3 would
    assert answers == [200, 200]
    status, _, state = call(stack, "GET", f"/scans/{plan['scan_id']}/files/0")
    assert [p["part_number"] for p in state["parts"]] == [1]


def test_the_gateway_prints_no_traceback_when_a_client_goes_away(capfd: pytest.CaptureFixture[str]) -> None:
    # Given a gateway whose answer is large and comes late
    release = threading.Event()

    def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
        if event["path"] == "/slow":
            release.wait(10)
            return {"statusCode": 200, "body": "x" * (8 * MiB)}
        return {"statusCode": 200, "body": "ok"}

    with LocalGateway(slow) as gateway:
        split = urlsplit(gateway.url)
        # When clients go away: one resets the connection while its answer is being made, one
        # sends half a body and resets
        for request in (
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: 1000\r\n\r\nab",
        ):
            sock = socket.create_connection((split.hostname, split.port))
            sock.sendall(request)
            time.sleep(0.2)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
            sock.close()
        release.set()
        time.sleep(0.5)  # the gateway writes its answer into the reset connection
        # Then the gateway still serves, and printed nothing about it
        with urllib.request.urlopen(gateway.url + "/next", timeout=10) as response:
            assert response.read() == b"ok"
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err, err
