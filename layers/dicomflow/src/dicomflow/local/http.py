"""A threaded HTTP server on 127.0.0.1 that runs in the background: the base of the local gateway
and of the S3 proxy."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


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
        self._server = ThreadingHTTPServer((host, port), request_class)
        self._server.daemon_threads = True
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
