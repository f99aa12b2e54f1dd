"""Load on the local stack: 20 devices upload 20 scans of 20 different patients at once; every scan
must complete and nothing may cross between them. The peer is the serial rate: one scan alone on
the same stack, in the same run.

``dicomflow local up`` runs in one process (moto, the state machine, the handlers in-process; each
analysis task its own process), and each device is its own ``dicomflow upload`` process, all
started together, as 20 scanners finishing at the same moment would be. Each scan is a phantom of
2 phases x 20 slices of 256 x 256 (40 files, 5.3 MB): large enough that every step does real work
on every scan (a Map of two batches per step, a real analysis of a 20-slice volume), small enough
that 20 of them finish in a few minutes on 2 shared cores, where 20 default 4D-CTs (16 GB) would
take most of an hour and measure moto's memory rather than the workflow's concurrency.

Printed: scans completed / total, wall time (first upload started -> last scan ended), scans/min,
aggregate upload MB/s (bytes of all scans / first upload started -> last upload done), per-scan
upload-start-to-COMPLETED latency p50 / p95 (the end is the execution's stop time), the peak RSS of
the stack's process tree (moto, handlers and analysis tasks), and the ratios to one scan alone.
Then the isolation checks of ``tests/reliability/isolation.py`` over every scan of the run.
``BENCH_LOAD_DEVICES``, ``BENCH_LOAD_PHASES``/``_SLICES``/``_SIZE`` change the run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import ROOT, WORK, _TreeSampler, header, record

DICOMFLOW = [sys.executable, "-m", "dicomflow"]
DEVICES = int(os.environ.get("BENCH_LOAD_DEVICES", "20"))
PHASES = int(os.environ.get("BENCH_LOAD_PHASES", "2"))
SLICES = int(os.environ.get("BENCH_LOAD_SLICES", "20"))
SIZE = int(os.environ.get("BENCH_LOAD_SIZE", "256"))
TERMINAL_WAIT_S = 1800.0
#: Scans run alone, one after the other, after the load; the fastest is the serial rate (the
#: peer's best, so the ratio does not flatter the load on a noisy machine).
ALONE_RUNS = 2


@dataclass
class Device:
    """One device's scan: its folder and what the run measured of it."""

    folder: Path
    size: int = 0
    started: float = 0.0  # wall clock (time.time) when its upload process started
    uploaded: float = 0.0  # ... and when it exited
    code: int | None = None
    scan_id: str = ""
    ended: float = 0.0  # the execution's stop time
    execution: str = ""
    status: dict[str, Any] | None = None

    @property
    def latency(self) -> float:
        return self.ended - self.started


def _identity(seed: int) -> tuple[str, str]:
    from dicomflow.phantom.identity import make_identity

    who = make_identity(seed)
    return who.patient_name, who.patient_id


def distinct_seeds(count: int, first: int = 1000) -> list[int]:
    """``count`` phantom seeds whose patients differ in name and in ID."""
    seeds: list[int] = []
    names: set[str] = set()
    ids: set[str] = set()
    seed = first
    while len(seeds) < count:
        name, pid = _identity(seed)
        if name not in names and pid not in ids:
            seeds.append(seed)
            names.add(name)
            ids.add(pid)
        seed += 1
    return seeds


def make_phantoms(root: Path, seeds: list[int], env: dict[str, str]) -> list[Device]:
    def one(seed: int) -> Device:
        folder = root / f"device-{seed}"
        subprocess.run(
            [*DICOMFLOW, "phantom", str(folder), "--phases", str(PHASES), "--slices", str(SLICES),
             "--size", str(SIZE), "--seed", str(seed)],
            check=True, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        return Device(folder, size=sum(p.stat().st_size for p in folder.rglob("*.dcm")))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, seeds))


def start_stack(work: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    data = work / "local"
    log = (work / "local-up.log").open("wb")
    stack = subprocess.Popen(
        [*DICOMFLOW, "local", "up", "--port", "0", "--data-dir", str(data)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not (data / "stack.json").exists():
        if stack.poll() is not None or time.monotonic() > deadline:
            stack.kill()
            raise RuntimeError(f"dicomflow local up did not start; see {work / 'local-up.log'}")
        time.sleep(0.2)
    time.sleep(0.2)  # stack.json is written whole, but give the writer its close
    return stack, json.loads((data / "stack.json").read_text())


def upload_all(devices: list[Device], env: dict[str, str]) -> None:
    """Start one ``dicomflow upload`` per device, all at once, and wait for them all."""
    from dicomflow.upload.journal import Journal

    running = []
    for n, device in enumerate(devices):
        device.started = time.time()
        args = [*DICOMFLOW, "upload", str(device.folder), "--device-id", f"ct-{n:02d}",
                "--scan-type", "4d-ct", "--quiet"]  # fmt: skip
        log = (device.folder.parent / f"{device.folder.name}.upload.log").open("wb")
        running.append((device, subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    pending = list(running)
    while pending:
        for item in list(pending):
            device, proc, log = item
            code = proc.poll()
            if code is not None:
                device.uploaded, device.code = time.time(), code
                log.close()
                pending.remove(item)
        time.sleep(0.05)
    for device in devices:
        if device.code == 0:
            device.scan_id = str(Journal.load(device.folder).state["scan_id"])


def wait_terminal(devices: list[Device], info: dict[str, Any]) -> None:
    """Poll each scan's execution (about once a second each) until it ended; its stop time is the
    scan's end. Then read its status as a user would (``GET /scans/{id}``)."""
    import boto3

    from dicomflow.upload.device import ApiClient

    sfn = boto3.client("stepfunctions", endpoint_url=info["aws_endpoint_url"], region_name=info["region"])
    base = info["state_machine_arn"].replace(":stateMachine:", ":execution:", 1)
    api = ApiClient(info["api_url"], token=info["token"])
    waiting = [d for d in devices if d.scan_id]
    deadline = time.monotonic() + TERMINAL_WAIT_S
    while waiting and time.monotonic() < deadline:
        for device in list(waiting):
            try:
                described = sfn.describe_execution(executionArn=f"{base}:{device.scan_id}")
            except sfn.exceptions.ExecutionDoesNotExist:
                continue
            if described["status"] != "RUNNING":
                device.execution = str(described["status"])
                device.ended = described["stopDate"].timestamp()
                device.status = dict(api.call("GET", f"/scans/{device.scan_id}"))
                waiting.remove(device)
        time.sleep(1.0)
    for device in waiting:
        device.status = dict(api.call("GET", f"/scans/{device.scan_id}"))


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile by linear interpolation between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def run_phase(
    devices: list[Device], env: dict[str, str], info: dict[str, Any], stack_pid: int
) -> tuple[float, float]:
    """Upload ``devices`` at once and wait for their scans; the peak RSS of the stack meanwhile."""
    sampler = _TreeSampler(stack_pid)
    sampler.start()
    try:
        upload_all(devices, env)
        wait_terminal(devices, info)
    finally:
        sampler.stop()
    return sampler.peak_mb, os.getloadavg()[0]


def main() -> int:
    header(
        f"load: {DEVICES} devices upload {DEVICES} scans at once ({PHASES} phases x {SLICES} slices of "
        f"{SIZE}^2 each), beside one scan alone"
    )
    work = WORK / "load"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")  # moto takes any; nothing reaches AWS
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    load_before = os.getloadavg()
    started = time.perf_counter()
    devices = make_phantoms(work / "devices", distinct_seeds(DEVICES + ALONE_RUNS), env)
    crowd, alones = devices[:DEVICES], devices[DEVICES:]
    print(f"  {len(devices)} phantoms of different patients written ({time.perf_counter() - started:.0f} s)")
    stack, info = start_stack(work, env)
    try:
        env.update(DICOMFLOW_API_URL=info["api_url"], DICOMFLOW_API_TOKEN=info["token"])
        peak_load, loadavg_load = run_phase(crowd, env, info, stack.pid)
        # The serial rate: the same stack, warm, one scan with nothing else running.
        peak_alone, loadavg_alone = 0.0, 0.0
        for alone in alones:
            peak, loadavg_alone = run_phase([alone], env, info, stack.pid)
            peak_alone = max(peak_alone, peak)
        problems = isolation(devices, info)
    finally:
        stack.send_signal(signal.SIGINT)
        try:
            stack.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stack.kill()
    problems += step_logs(devices, work / "local-up.log")
    ok = [d for d in alones if (d.status or {}).get("status") == "COMPLETED"]
    alone = min(ok, key=lambda d: d.latency) if len(ok) == len(alones) else alones[0]
    latencies = ", ".join(f"{d.latency:.1f} s" for d in alones)
    print(f"  alone, one after the other: {latencies}; the fastest is the peer")
    return report(crowd, alone, problems, (peak_load, peak_alone), (load_before, loadavg_load, loadavg_alone))


def isolation(devices: list[Device], info: dict[str, Any]) -> list[str]:
    import boto3

    sys.path.insert(0, str(ROOT))  # the checks live beside the test that runs them on tiny scans
    from tests.reliability.isolation import ScanUnderLoad, check_isolation

    scans = [ScanUnderLoad(d.folder, d.scan_id, d.status or {}) for d in devices]
    s3 = boto3.client("s3", endpoint_url=info["aws_endpoint_url"], region_name=info["region"])
    started = time.perf_counter()
    problems = check_isolation(s3, info["buckets"], scans)
    took = time.perf_counter() - started
    print(f"  isolation checks over {len(scans)} scans: {len(problems)} problems ({took:.0f} s)")
    return problems


def step_logs(devices: list[Device], log: Path) -> list[str]:
    """The functions' log lines of the run (the stack's stdout) name each scan's steps under its id."""
    from tests.reliability.isolation import ScanUnderLoad, check_step_logs

    scans = [ScanUnderLoad(d.folder, d.scan_id) for d in devices]
    problems = check_step_logs(log.read_text(errors="replace"), scans)
    print(f"  the functions' log lines, per scan: {len(problems)} problems")
    return problems


def report(
    crowd: list[Device],
    alone: Device,
    problems: list[str],
    peaks: tuple[float, float],
    loads: tuple[tuple[float, float, float], float, float],
) -> int:
    completed = [d for d in crowd if (d.status or {}).get("status") == "COMPLETED"]
    total_mb = sum(d.size for d in crowd) / 1e6
    first = min(d.started for d in crowd)
    wall = max([d.ended for d in crowd if d.ended] or [time.time()]) - first
    upload_wall = max(d.uploaded for d in crowd) - first
    rate = len(completed) / wall * 60 if wall > 0 else 0.0
    latencies = [d.latency for d in completed]
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    alone_ok = (alone.status or {}).get("status") == "COMPLETED"
    serial = 60 / alone.latency if alone_ok and alone.latency > 0 else float("nan")
    alone_mb_s = alone.size / 1e6 / (alone.uploaded - alone.started)
    failed = [f"#{n} {(d.status or {}).get('status', 'upload exit ' + str(d.code))}"
              for n, d in enumerate(crowd) if d not in completed]  # fmt: skip
    before, during, after = loads
    not_done = f" (not: {', '.join(failed)})" if failed else ""
    rows = [
        ("scans completed", f"{len(completed)} / {len(crowd)}{not_done}"),
        ("wall time", f"{wall:.1f} s (first upload started -> last scan ended)"),
        ("scans/min", f"{rate:.2f}; one scan alone {serial:.2f} (the serial rate): {rate / serial:.2f}x"),
        (
            "upload, aggregate",
            f"{total_mb / upload_wall:.1f} MB/s ({total_mb:.0f} MB in {upload_wall:.1f} s); "
            f"one alone {alone_mb_s:.1f} MB/s",
        ),
        (
            "upload -> COMPLETED",
            f"p50 {p50:.1f} s, p95 {p95:.1f} s, max {max(latencies or [0]):.1f} s; "
            f"one alone {alone.latency:.1f} s (p50 {p50 / alone.latency:.1f}x)",
        ),
        (
            "peak RSS of the stack",
            f"{peaks[0]:.0f} MB (moto, handlers, analysis); one alone {peaks[1]:.0f} MB",
        ),
        ("load average", f"{before[0]:.1f} before, {during:.1f} after the load, {after:.1f} after the one"),
    ]
    for label, text in rows:
        print(f"  {label:<22} {text}")
    for problem in problems[:20]:
        print(f"  CROSSED: {problem}")
    met = len(completed) == len(crowd) and not problems and alone_ok
    verdict = "all complete, nothing crossed" if met else "NOT MET"
    print(f"  {verdict}")
    record(
        f"load: {len(crowd)} scans uploaded at once ({PHASES} x {SLICES} x {SIZE}², {total_mb:.0f} MB)",
        ours=(
            f"{len(completed)}/{len(crowd)} COMPLETED in {wall:.0f} s: {rate:.1f} scans/min, upload "
            f"{total_mb / upload_wall:.1f} MB/s, latency p50 {p50:.0f} s / p95 {p95:.0f} s, "
            f"peak RSS {peaks[0]:.0f} MB, {len(problems)} crossings"
        ),
        peer=f"one scan alone, same stack: {alone.latency:.1f} s ({serial:.1f} scans/min)",
        ratio=f"{rate / serial:.2f}x the serial rate",
        target="every scan COMPLETED, nothing crosses between scans",
        met=met,
        detail=f"load average {during:.1f} at the end of the load",
    )
    return 0 if met else 1
