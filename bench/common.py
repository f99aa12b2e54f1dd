"""Shared measuring helpers for the benchmarks: wall time and peak RSS of a command, ratio lines.

Peers and dicomflow are measured in the same run, on the same input, one after the other, so that
a shared, noisy machine moves both figures alike; the ratio is the figure to read.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench"
BIN = Path(sys.executable).parent
GNU_TIME = "/usr/bin/time"  # reports a command's own peak RSS (see measure)


@dataclass(frozen=True)
class Measurement:
    name: str
    wall_s: float
    peak_rss_mb: float  # the largest single process (wait4's ru_maxrss)
    returncode: int
    peak_tree_mb: float = 0.0  # the largest sum over the process and its children, sampled

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
    """Run ``cmd`` and return its wall time and peak resident memory: the largest single process
    (the process and the descendants it waited for, from ``wait4``) and the largest sum over the
    process tree (sampled every 20 ms, so that worker pools count in full).

    Linux carries the spawning process's high-water RSS into the child's ``ru_maxrss`` across exec:
    a child of a benchmark holding a local stack (400 MB) would report 400 MB whatever it used. So
    the command runs under GNU time, small itself, which reports the command's own figure; wait4's
    is the fallback where GNU time is not installed."""
    out = subprocess.DEVNULL if quiet else None
    with tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as scratch:
        rss_file = Path(scratch) / "maxrss"
        argv = [str(c) for c in cmd]
        if Path(GNU_TIME).exists():
            argv = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *argv]
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err)
        sampler = _TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
        maxrss_kb = usage.ru_maxrss
        with contextlib.suppress(OSError, ValueError, IndexError):
            maxrss_kb = int(rss_file.read_text().split()[-1])
    code = proc.returncode
    if check and code != 0:
        raise RuntimeError(f"{name}: {' '.join(map(str, cmd))} exited {code}\n{stderr[-2000:]}")
    return Measurement(
        name=name,
        wall_s=wall,
        peak_rss_mb=maxrss_kb / 1024.0,
        returncode=code,
        peak_tree_mb=max(sampler.peak_mb, maxrss_kb / 1024.0),
    )


class _TreeSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_mb = 0.0
        self._done = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._done.wait(0.02):
            total = 0
            try:
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += proc.memory_info().rss
            except psutil.Error:
                return
            self.peak_mb = max(self.peak_mb, total / 2**20)

    def stop(self) -> None:
        self._done.set()
        self.join()


def ratio(ours: float, theirs: float) -> str:
    """``theirs / ours`` style ratios are the caller's choice; this only formats one."""
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


def header(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


# The README's performance table is generated from these records (scripts/bench_table.py), never
# hand-edited: each benchmark records the row it printed, with the peer's figure from the same run.
RESULTS = WORK / "results.jsonl"


def _cpu_model() -> str:
    """' <model name>' of the first CPU (Linux), so rows measured on other machines tell apart."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return " " + " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return ""


def record(
    row: str,
    *,
    ours: str,
    peer: str,
    ratio: str,
    target: str,
    met: bool | None,
    detail: str = "",
) -> None:
    """Append one performance-table row to ``.bench/results.jsonl``, stamped with date and machine.

    ``row`` names the work (the README table's first column; a later record of the same row
    replaces an earlier one); ``ours`` and ``peer`` are the figures as printed, ``ratio`` the
    figure to read, ``target`` what the row must reach, and ``met`` whether it did (None: no target).
    """
    import json
    import platform

    WORK.mkdir(parents=True, exist_ok=True)
    entry = {
        "row": row,
        "ours": ours,
        "peer": peer,
        "ratio": ratio,
        "target": target,
        "met": met,
        "detail": detail,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}{_cpu_model()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}",
    }
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")
