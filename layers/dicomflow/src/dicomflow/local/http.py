"""A threaded HTTP server on 127.0.0.1 that runs in the background: the base of the local gateway
and of the S3 proxy.

Every request gets an answer or a timeout with a reason, never a hang: the connection's socket has a
timeout (:data:`REQUEST_TIMEOUT_S` by default) for every read and write, so a client that stops
sending mid-body gets 408 (see :func:`read_body`). A client that goes away (a broken pipe, a reset)
costs one quiet debug line, not a traceback on the terminal.
"""

from __future__ import annotations

import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

#: Seconds a connection may stay silent (reading a request or its body, or writing the answer).
REQUEST_TIMEOUT_S = 30.0
#: What a client that went away raises in the server.
CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)

log = logging.getLogger("dicomflow.local.http")


class BodyTimeout(Exception):
    """The client stopped sending the body it announced (``Content-Length``)."""


def read_body(rfile: Any, length: int) -> bytes:
    """Exactly ``length`` bytes of the body; :class:`BodyTimeout` if the client stalls past the
    socket's timeout or closes early (a short body is never passed on as if it were whole)."""
    chunks: list[bytes] = []
    left = length
    try:
        while left > 0:
            chunk = rfile.read(min(left, 1 << 20))
            if not chunk:
                raise BodyTimeout(f"the body ended after {length - left} of {length} bytes")
            chunks.append(chunk)
            left -= len(chunk)
    except TimeoutError:
        raise BodyTimeout(
            f"the body stalled after {length - left} of {length} bytes (no data for the server's timeout)"
        ) from None
    return b"".join(chunks)


class QuietRequestHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, a socket timeout, no access log, and a client that goes away is a quiet
    line instead of a traceback."""

    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT_S  # StreamRequestHandler applies it to the connection's socket

    def log_message(self, format: str, *args: Any) -> None:  # paths may carry ids only; still quiet
        return

    def handle(self) -> None:
        try:
            super().handle()
        except CLIENT_GONE as exc:
            log.debug("client went away (%s)", type(exc).__name__)
            self.close_connection = True
        except TimeoutError:
            log.debug("connection timed out")
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr; one line is enough (and quiet for a client
        # that went away).
        exc = sys.exc_info()[1]
        if isinstance(exc, CLIENT_GONE | TimeoutError):
            log.debug("client went away (%s)", type(exc).__name__)
        else:
            log.warning("request failed (%s)", type(exc).__name__)


class BackgroundHttpServer:
    """Serves requests with ``request_class`` on a daemon thread between :meth:`start` and :meth:`stop`.

    Examples
    --------
    >>> from http.server import BaseHTTPRequestHandler
    >>> server = BackgroundHttpServer(BaseHTTPRequestHandler, name="example").start()
    >>> server.url.startswith("http://127.0.0.1:")
    True
    >>> server.stop()
    """

    def __init__(
        self,
        request_class: type[BaseHTTPRequestHandler],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str,
    ) -> None:
        self._server = _Server((host, port), request_class)
        self._name = name
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, name=self._name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
