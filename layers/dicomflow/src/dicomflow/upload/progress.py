"""Upload progress: a bar with bytes, rate and ETA on a terminal; a quiet line now and then otherwise
(logs, CI, a service on the device). Standard library only."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

MiB = 1024 * 1024


def format_bytes(n: float) -> str:
    """Human bytes.

    Examples
    --------
    >>> format_bytes(1536 * 1024 * 1024)
    '1.50 GiB'
    """
    for unit, size in (("GiB", 1024**3), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def format_eta(seconds: float) -> str:
    """
    Examples
    --------
    >>> format_eta(3725)
    '1:02:05'
    """
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Thread-safe progress of ``total`` bytes, of which ``already`` were uploaded before (resume)."""

    def __init__(
        self,
        total: int,
        *,
        already: int = 0,
        stream: TextIO | None = None,
        tty: bool | None = None,
        enabled: bool = True,
    ) -> None:
        self.total = max(total, 1)
        self.done = already
        self._start_done = already
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.enabled = enabled
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_draw = self._started
        self._last_line_pct = -1

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
            self._draw(final=False)

    def start(self) -> None:
        """Show where the upload stands now (a resume shows its bytes at once, not at the first part)."""
        with self._lock:
            if not self.enabled:
                return
            if self.tty:
                self._draw(final=True)
            else:
                self._last_line_pct = int(100 * self.done / self.total) // 10 * 10
                self._last_draw = time.monotonic()
                self.stream.write(f"upload: {self.line()}\n")
                self.stream.flush()

    def finish(self) -> None:
        with self._lock:
            self._draw(final=True)
            if self.enabled and self.tty:
                self.stream.write("\n")
                self.stream.flush()

    def message(self, text: str) -> None:
        """A line that does not fight the bar."""
        with self._lock:
            if not self.enabled:
                return
            if self.tty:
                self.stream.write("\r\x1b[2K")
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last_draw = 0.0

    def rate(self) -> float:
        elapsed = time.monotonic() - self._started
        return (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        left = self.total - self.done
        eta = format_eta(left / rate) if rate > 0 else "--:--"
        pct = 100.0 * self.done / self.total
        return (
            f"{pct:5.1f}% {format_bytes(self.done)} of {format_bytes(self.total)}  "
            f"{rate / 1e6:6.1f} MB/s  ETA {eta}"
        )

    def _draw(self, *, final: bool) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if not final and now - self._last_draw < 0.1:
                return
            width = 30
            filled = int(width * self.done / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.line()}")
            self.stream.flush()
            self._last_draw = now
            return
        pct = int(100 * self.done / self.total) // 10 * 10
        if pct == self._last_line_pct:
            return
        if final or pct == 100 or (pct > self._last_line_pct and now - self._last_draw >= 2.0):
            self._last_line_pct = pct
            self._last_draw = now
            self.stream.write(f"upload: {self.line()}\n")
            self.stream.flush()
