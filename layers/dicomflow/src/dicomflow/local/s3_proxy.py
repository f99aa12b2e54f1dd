"""A small HTTP proxy in front of moto that makes S3 requests behave as S3 in AWS does where moto
does not: it refuses expired presigned URLs (``X-Amz-Date`` + ``X-Amz-Expires``, 403 "Request has
expired") and bodies that do not match their ``x-amz-checksum-sha256`` header (400 ``BadDigest``).
It also counts PUTs per object and part, so that tests can see what a device re-sent, and can slow
PUTs down (``put_delay_s``) to make an upload last long enough to interrupt.

``max_url_age_s`` makes URLs expire sooner than their ``X-Amz-Expires``, as S3 does when the
credentials that signed them expire first (a URL presigned with a Lambda role's session token dies
with the session): the device cannot see it coming and must refresh on the 403.

Presigned signatures are not checked (moto's server does not know the signing key either).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import http.client
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dicomflow.local.http import BackgroundHttpServer

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
}


def _s3_error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()


class S3Proxy(BackgroundHttpServer):
    """Serve on 127.0.0.1 (a free port) and forward to ``upstream`` (the moto server's URL)."""

    def __init__(
        self, upstream: str, *, put_delay_s: float = 0.0, max_url_age_s: float | None = None
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.put_delay_s = put_delay_s
        self.max_url_age_s = max_url_age_s
        self.verify_checksums = True  # False: accept any bytes, as moto does
        self.puts: Counter[tuple[str, int]] = Counter()  # (path, part number or 0) -> PUTs received
        self.expired = 0
        self.bad_digests = 0
        self._lock = threading.Lock()
        super().__init__(self._handler_class(), name="s3-proxy")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                query = parse_qs(split.query)
                if "X-Amz-Expires" in query and _expired(query, proxy.max_url_age_s):
                    with proxy._lock:
                        proxy.expired += 1
                    self._reply(403, _s3_error("AccessDenied", "Request has expired"))
                    return
                if self.command == "PUT" and "x-amz-copy-source" not in self.headers:
                    part = int(query.get("partNumber", ["0"])[0])
                    with proxy._lock:
                        proxy.puts[(split.path, part)] += 1
                    expected = self.headers.get("x-amz-checksum-sha256")
                    if expected is not None and proxy.verify_checksums:
                        actual = base64.b64encode(hashlib.sha256(body).digest()).decode()
                        if actual != expected:
                            with proxy._lock:
                                proxy.bad_digests += 1
                            self._reply(
                                400,
                                _s3_error(
                                    "BadDigest",
                                    "The SHA256 you specified did not match the calculated checksum.",
                                ),
                            )
                            return
                    if proxy.put_delay_s:
                        time.sleep(proxy.put_delay_s)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=300)
                try:
                    conn.request(self.command, self.path, body=body if length else None, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    self.send_response(response.status, response.reason)
                    for name, value in response.getheaders():
                        if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                            self.send_header(name, value)
                    # HEAD answers the object's length without a body: pass it through.
                    length_out = response.getheader("Content-Length") if self.command == "HEAD" else None
                    self.send_header("Content-Length", length_out or str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler


def _expired(query: dict[str, list[str]], max_age_s: float | None) -> bool:
    try:
        signed = calendar.timegm(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
        lifetime = float(query["X-Amz-Expires"][0])
        if max_age_s is not None:
            lifetime = min(lifetime, max_age_s)
        return time.time() > signed + lifetime
    except (KeyError, ValueError):
        return True
