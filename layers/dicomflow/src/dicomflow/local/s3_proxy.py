"""A small HTTP proxy in front of moto that makes S3 requests behave as S3 in AWS does where moto
does not: it refuses expired presigned URLs (``X-Amz-Date`` + ``X-Amz-Expires``, 403 "Request has
expired") and bodies that do not match their ``x-amz-checksum-sha256`` header (400 ``BadDigest``).
It also counts PUTs per object and part, so that tests can see what a device re-sent, and can slow
PUTs down (``put_delay_s``) to make an upload last long enough to interrupt.

``max_url_age_s`` makes URLs expire sooner than their ``X-Amz-Expires``, as S3 does when the
credentials that signed them expire first (a URL presigned with a Lambda role's session token dies
with the session): the device cannot see it coming and must refresh on the 403.

It also answers where moto does not as S3 would:

- An UploadPart (or UploadPartCopy) to a multipart upload that is no longer in progress (completed
  or aborted) gets 404 ``NoSuchUpload``, as S3 answers; moto fails it with a 500 the device would
  retry. So a replayed part URL cannot touch a completed file.
- A PUT with a form content type (urllib's default) reaches moto as ``application/octet-stream``:
  moto parses a form body as query parameters and fails the request.
- No request hangs: a body that stalls gets 408 ``RequestTimeout`` after the socket's timeout, a PUT
  without ``Content-Length`` 411 ``MissingContentLength``, one over 5 GiB 400 ``EntityTooLarge``, and
  moto not answering in ``upstream_timeout_s`` 503 ``SlowDown`` (which a device retries).

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
from urllib.parse import parse_qs, quote, urlsplit

from dicomflow.local.http import BackgroundHttpServer, BodyTimeout, QuietRequestHandler, read_body

MAX_PUT_BYTES = 5 * 1024**3  # S3's largest part or single PUT
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
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
        self,
        upstream: str,
        *,
        put_delay_s: float = 0.0,
        max_url_age_s: float | None = None,
        request_timeout_s: float | None = None,
        upstream_timeout_s: float = 120.0,
    ) -> None:
        parts = urlsplit(upstream)
        self.request_timeout_s = request_timeout_s
        self.upstream_timeout_s = upstream_timeout_s
        self.refused_uploads = 0  # part PUTs refused because their upload is no longer in progress
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

        class Handler(QuietRequestHandler):
            if proxy.request_timeout_s is not None:
                timeout = proxy.request_timeout_s

            def _relay(self) -> None:
                split = urlsplit(self.path)
                query = parse_qs(split.query)
                length_header = self.headers.get("Content-Length")
                if length_header is None and self.command == "PUT":
                    self._refuse(
                        411, "MissingContentLength", "You must provide the Content-Length HTTP header."
                    )
                    return
                try:
                    length = int(length_header or 0)
                except ValueError:
                    self._refuse(400, "InvalidArgument", "Content-Length must be a whole number.")
                    return
                if length > MAX_PUT_BYTES:
                    self._refuse(
                        400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size."
                    )
                    return
                try:
                    body = read_body(self.rfile, length) if length else b""
                except BodyTimeout:
                    self._refuse(
                        408,
                        "RequestTimeout",
                        "Your socket connection to the server was not read from or written to within "
                        "the timeout period.",
                    )
                    return
                if "X-Amz-Expires" in query and _expired(query, proxy.max_url_age_s):
                    with proxy._lock:
                        proxy.expired += 1
                    self._reply(403, _s3_error("AccessDenied", "Request has expired"))
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if self.command == "PUT":
                    if "uploadId" in query and not self._upload_in_progress(split.path, query["uploadId"][0]):
                        with proxy._lock:
                            proxy.refused_uploads += 1
                        self._reply(
                            404,
                            _s3_error(
                                "NoSuchUpload",
                                "The specified upload does not exist. The upload ID may be invalid, or "
                                "the upload may have been aborted or completed.",
                            ),
                        )
                        return
                    content_type = headers.get("Content-Type", "")
                    if content_type.split(";")[0].strip().lower() in _FORM_TYPES:
                        headers["Content-Type"] = "application/octet-stream"
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
                try:
                    status, reason, response_headers, data = self._upstream(
                        self.command, self.path, body if length else None, headers
                    )
                except (TimeoutError, OSError) as exc:
                    self._refuse(
                        503, "SlowDown", f"The local S3 (moto) did not answer ({type(exc).__name__}); retry."
                    )
                    return
                self.send_response(status, reason)
                for name, value in response_headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                # HEAD answers the object's length without a body: pass it through.
                length_out = (
                    dict((k.lower(), v) for k, v in response_headers).get("content-length")
                    if self.command == "HEAD"
                    else None
                )
                self.send_header("Content-Length", length_out or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            _conn: http.client.HTTPConnection | None = None

            def _upstream(
                self, method: str, path: str, body: bytes | None, headers: dict[str, str]
            ) -> tuple[int, str, list[tuple[str, str]], bytes]:
                # One kept-alive connection to moto per client connection (a pool the size of the
                # device's workers): a new TCP connection per request costs moto a thread each.
                for attempt in (0, 1):
                    reused = self._conn is not None
                    if self._conn is None:
                        self._conn = http.client.HTTPConnection(
                            proxy.upstream_host, proxy.upstream_port, timeout=proxy.upstream_timeout_s
                        )
                    try:
                        self._conn.request(method, path, body=body, headers=headers)
                        response = self._conn.getresponse()
                        data = response.read()
                        if response.will_close:
                            self._close_upstream()
                        return response.status, response.reason, response.getheaders(), data
                    except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                        self._close_upstream()
                        if not reused or attempt:
                            raise  # moto closed a fresh connection: not a stale keep-alive
                    except BaseException:
                        self._close_upstream()
                        raise
                raise AssertionError("unreachable")

            def _close_upstream(self) -> None:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    self._close_upstream()

            def _upload_in_progress(self, path: str, upload_id: str) -> bool:
                """Whether moto still has the multipart upload (ListParts, one part)."""
                status, _, _, _ = self._upstream(
                    "GET", f"{path}?uploadId={quote(upload_id, safe='')}&max-parts=1", None, {}
                )
                return status != 404

            def _refuse(self, status: int, code: str, message: str) -> None:
                self.close_connection = True  # the rest of the request may still be in flight
                self._reply(status, _s3_error(code, message))

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
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
