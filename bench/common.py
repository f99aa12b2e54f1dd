"""Shared measuring helpers for the benchmarks: wall time and peak RSS of a command, ratio lines.

Peers and dicomflow are measured in the same run, on the same input, one after the other, so that
a shared, noisy machine moves both figures alike; the ratio is the figure to read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Measurement:
    name: str
    wall_s: float
    peak_rss_mb: float
    returncode: int

    def rate(self, amount: float) -> float:
        return amount / self.wall_s if self.wall_s > 0 else float("inf")


def measure(
    name: str,
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    check: bool = True,
    quiet: bool = True,
) -> Measurement:
    """Run ``cmd`` and return its wall time and peak resident memory (the largest of the process
    and the descendants it waited for, from ``wait4``)."""
    out = subprocess.DEVNULL if quiet else None
    start = time.perf_counter()
    proc = subprocess.Popen([str(c) for c in cmd], env=env, cwd=cwd, stdout=out, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if check and code != 0:
        raise RuntimeError(f"{name}: {' '.join(map(str, cmd))} exited {code}\n{stderr[-2000:]}")
    return Measurement(name=name, wall_s=wall, peak_rss_mb=usage.ru_maxrss / 1024.0, returncode=code)


def ratio(ours: float, theirs: float) -> str:
    """``theirs / ours`` style ratios are the caller's choice; this only formats one."""
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


def header(title: str) -> None:
    print(f"\n== {title} ==", flush=True)
