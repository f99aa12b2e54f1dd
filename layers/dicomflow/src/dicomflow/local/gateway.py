"""A local API Gateway: HTTP on 127.0.0.1 turned into API Gateway REST proxy events, handed to the
SAME Lambda handler in-process, its proxy response turned back into HTTP.

What it checks, standing in for API Gateway (IAM/SigV4 in AWS, throttling on the stage):

- **Authentication**: when started with a ``token``, every request must carry
  ``X-Dicomflow-Token: <token>`` (compared in constant time), else 403. SigV4 signatures are not
  verified locally (there is no IAM); the device still sends them when it has AWS credentials.
- **Size**: a body over 10 MiB (API Gateway's payload limit) gets 413 without reaching the handler;
  a request without ``Content-Length`` on POST/PUT gets 411, a body that stalls 408 (the socket's
  timeout, :data:`~dicomflow.local.http.REQUEST_TIMEOUT_S`): no request hangs.
- Paths and methods are routed by the handler itself (its resolver answers 404 / 405).

Every answer of its own has the API's one error shape, ``{"error": code, "message": reason}``, the
reason saying what to do. Not emulated: the 29 s integration timeout, stage throttling, mutual TLS.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from dicomflow.local.http import (
    REQUEST_TIMEOUT_S,
    BackgroundHttpServer,
    BodyTimeout,
    QuietRequestHandler,
    read_body,
)

MAX_BODY_BYTES = 10 * 1024 * 1024
TOKEN_HEADER = "X-Dicomflow-Token"
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def error_body(code: str, message: str) -> bytes:
    """The API's one error shape.

    Examples
    --------
    >>> error_body("forbidden", "no token")
    b'{"error": "forbidden", "message": "no token"}'
    """
    return json.dumps({"error": code, "message": message}).encode()


@dataclass
class LambdaContextStub:
    """The attributes of a Lambda context that handlers and powertools read."""

    function_name: str = "local-upload-api"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:local-upload-api"
    memory_limit_in_mb: int = 1024
    aws_request_id: str = ""
    log_group_name: str = "/aws/lambda/local-upload-api"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def proxy_event(
    method: str,
    raw_path: str,
    headers: dict[str, str],
    body: bytes,
    *,
    stage: str = "local",
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """The API Gateway REST (v1) proxy event for one HTTP request.

    Examples
    --------
    >>> e = proxy_event("GET", "/scans/abc?x=1", {"Host": "h"}, b"")
    >>> e["httpMethod"], e["path"], e["queryStringParameters"]
    ('GET', '/scans/abc', {'x': '1'})
    """
    split = urlsplit(raw_path)
    query = parse_qsl(split.query, keep_blank_values=True)
    multi_query: dict[str, list[str]] = {}
    for key, value in query:
        multi_query.setdefault(key, []).append(value)
    try:
        text = body.decode("utf-8")
        encoded = False
    except UnicodeDecodeError:
        text = base64.b64encode(body).decode("ascii")
        encoded = True
    request_id = str(uuid.uuid4())
    return {
        "resource": "/{proxy+}",
        "path": unquote(split.path),
        "httpMethod": method,
        "headers": dict(headers),
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": dict(query) or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {"proxy": unquote(split.path).lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/{stage}{split.path}",
            "stage": stage,
            "requestId": request_id,
            "accountId": "123456789012",
            "apiId": "local",
            "protocol": "HTTP/1.1",
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {
                "sourceIp": source_ip,
                "userAgent": headers.get("User-Agent", ""),
                "caller": "local",
                "user": "local",
            },
        },
        "body": text if body else None,
        "isBase64Encoded": encoded,
    }


class LocalGateway(BackgroundHttpServer):
    """Serve ``handler`` on 127.0.0.1.

    Examples
    --------
    >>> gw = LocalGateway(lambda event, context: {"statusCode": 200, "body": "ok"}).start()
    >>> import urllib.request
    >>> urllib.request.urlopen(gw.url + "/anything").read()
    b'ok'
    >>> gw.stop()
    """

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.handler = handler
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.request_timeout_s = request_timeout_s
        self.requests = 0
        super().__init__(self._request_class(), host=host, port=port, name="local-gateway")

    def _request_class(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Request(QuietRequestHandler):
            timeout = gateway.request_timeout_s

            def _handle(self) -> None:
                gateway.requests += 1
                if gateway.token is not None:
                    sent = self.headers.get(TOKEN_HEADER, "")
                    if not sent:
                        self._refuse(
                            403,
                            "missing_token",
                            f"Missing Authentication Token: this API wants the {TOKEN_HEADER} header "
                            "(dicomflow upload --token, or DICOMFLOW_API_TOKEN; dicomflow local-api "
                            "prints the token)",
                        )
                        return
                    if not hmac.compare_digest(sent.encode(), gateway.token.encode()):
                        self._refuse(
                            403,
                            "invalid_token",
                            f"the {TOKEN_HEADER} token is not this API's: give the one dicomflow "
                            "local-api printed (--token, or DICOMFLOW_API_TOKEN)",
                        )
                        return
                length_header = self.headers.get("Content-Length")
                if length_header is None and self.command in ("POST", "PUT", "PATCH"):
                    self._refuse(411, "length_required", "send the body with a Content-Length header")
                    return
                try:
                    length = int(length_header or 0)
                    if length < 0:
                        raise ValueError
                except ValueError:
                    self._refuse(400, "invalid_request", "Content-Length must be a whole number of bytes")
                    return
                if length > gateway.max_body_bytes:
                    # Drain (a bounded amount) so the client reads the answer instead of a broken pipe.
                    left = min(length, 8 * gateway.max_body_bytes)
                    while left > 0:
                        chunk = self.rfile.read(min(left, 1 << 20))
                        if not chunk:
                            break
                        left -= len(chunk)
                    self._refuse(
                        413,
                        "too_large",
                        f"Request Too Long: the body is {length} bytes, over the limit of "
                        f"{gateway.max_body_bytes}",
                    )
                    return
                try:
                    body = read_body(self.rfile, length) if length else b""
                except BodyTimeout as exc:
                    self._refuse(408, "request_timeout", f"{exc}; send the whole body, then retry")
                    return
                event = proxy_event(
                    self.command,
                    self.path,
                    dict(self.headers.items()),
                    body,
                    source_ip=self.client_address[0],
                )
                context = LambdaContextStub(aws_request_id=event["requestContext"]["requestId"])
                try:
                    result = gateway.handler(event, context)
                except Exception as exc:  # noqa: BLE001 - API Gateway answers 502 when the function fails
                    self._refuse(502, "internal", f"the upload API's function failed ({type(exc).__name__})")
                    return
                payload = result.get("body") or ""
                data = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode("utf-8")
                headers = dict(result.get("headers") or {})
                for name, values in (result.get("multiValueHeaders") or {}).items():
                    headers[name] = ",".join(values)
                self._reply(int(result.get("statusCode", 200)), headers, data)

            def _refuse(self, status: int, code: str, message: str) -> None:
                self.close_connection = True  # a body the gateway did not read may still be in flight
                self._reply(status, {}, error_body(code, message))

            def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                headers.setdefault("Content-Type", "application/json")
                for name, value in headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        return Request
