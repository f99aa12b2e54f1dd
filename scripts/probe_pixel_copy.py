"""Probe: ``dicomflow.deid.pixels.copy_pixels`` on a whole 1 GB file beside ``cp``, on this machine.

Runs, interleaved ``--repeat`` times: ``cp SRC DST``; a child process that copies the whole file
range with ``copy_pixels`` and both BLAKE3 hashes (verify on); the same without hashes (verify off).
For each: the process's wall time and peak RSS (``wait4``), and for the children also the time of
the ``copy_pixels`` call itself and the RSS before it (the imports). Prints the ratios to ``cp``
(best and median of the runs). Not a test (a shared machine is noisy); ``make bench BENCH=deid`` is
the acceptance benchmark.

Usage::

    .venv/bin/python scripts/probe_pixel_copy.py [--src FILE] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRC = ROOT / ".bench" / "deid" / "inputs" / "mf_p1_s2000_n512" / "phase_00.dcm"
OUT = ROOT / ".bench" / "pixel_copy"


def child(src: str, dst: str, verify: bool) -> int:
    """Copy the whole of ``src`` into ``dst`` with copy_pixels; print a JSON line of figures."""
    from dicomflow.deid.pixels import copy_pixels  # imported here: the import is part of the figure

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    src_fd = os.open(src, os.O_RDONLY)
    dst_fd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        started = time.perf_counter()
        proof = copy_pixels(src_fd, 0, os.fstat(src_fd).st_size, dst_fd, verify=verify)
        seconds = time.perf_counter() - started
    finally:
        os.close(src_fd)
        os.close(dst_fd)
    if verify and not proof.identical:
        print(json.dumps({"error": "digests differ"}))
        return 1
    print(json.dumps({"copy_s": seconds, "rss_before_mb": rss_before, "after": proof.after}))
    return 0


def run(cmd: list[str]) -> tuple[float, float, str]:
    """Wall time, peak RSS (MB) and stdout of ``cmd``."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.stdout.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{cmd} exited {proc.returncode}: {out}")
    return wall, usage.ru_maxrss / 1024, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=str(DEFAULT_SRC))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=["verify", "copy-only"], help=argparse.SUPPRESS)
    parser.add_argument("--dst", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.src, args.dst, args.child == "verify")

    src = Path(args.src)
    if not src.is_file():
        raise SystemExit(f"{src} does not exist: `make bench BENCH=deid` generates it")
    OUT.mkdir(parents=True, exist_ok=True)
    dst = OUT / "copy.dcm"
    size_mb = src.stat().st_size / 1e6
    names = ["cp", "copy_pixels verify", "copy_pixels copy-only"]
    walls: dict[str, list[float]] = {n: [] for n in names}
    rss: dict[str, list[float]] = {n: [] for n in names}
    inner: dict[str, list[float]] = {n: [] for n in names[1:]}
    base_rss: dict[str, list[float]] = {n: [] for n in names[1:]}
    me = [sys.executable, str(Path(__file__).resolve()), "--src", str(src), "--dst", str(dst)]
    commands = {
        "cp": ["cp", str(src), str(dst)],
        "copy_pixels verify": [*me, "--child", "verify"],
        "copy_pixels copy-only": [*me, "--child", "copy-only"],
    }
    # Warm the page cache: every contender reads the source from memory.
    subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)
    print(f"source: {src} ({size_mb:.0f} MB); {args.repeat} interleaved runs", flush=True)
    for i in range(args.repeat):
        for name in names:
            dst.unlink(missing_ok=True)
            wall, peak, out = run(commands[name])
            walls[name].append(wall)
            rss[name].append(peak)
            line = f"  run {i + 1} {name:<22} wall {wall:6.3f} s  peak RSS {peak:6.1f} MB"
            if name != "cp":
                figures = json.loads(out)
                inner[name].append(figures["copy_s"])
                base_rss[name].append(figures["rss_before_mb"])
                line += f"  (copy_pixels call {figures['copy_s']:.3f} s, RSS after imports "
                line += f"{figures['rss_before_mb']:.1f} MB)"
            print(line, flush=True)
    dst.unlink(missing_ok=True)

    cp_best, cp_median = min(walls["cp"]), statistics.median(walls["cp"])
    print(f"\n{'':<32}{'best s':>8}{'median s':>10}{'x cp best':>11}{'x cp median':>13}{'peak RSS MB':>13}")
    for name in names:
        best, median = min(walls[name]), statistics.median(walls[name])
        print(
            f"{name + ' (process)':<32}{best:8.3f}{median:10.3f}{best / cp_best:11.2f}"
            f"{median / cp_median:13.2f}{max(rss[name]):13.1f}"
        )
    for name in names[1:]:
        best, median = min(inner[name]), statistics.median(inner[name])
        print(
            f"{name + ' (call)':<32}{best:8.3f}{median:10.3f}{best / cp_best:11.2f}{median / cp_median:13.2f}"
            f"{max(rss[name]) - max(base_rss[name]):+13.1f}"
        )
    print("(call: the copy_pixels call alone; its RSS column is the growth over the imports)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
