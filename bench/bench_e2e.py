"""End to end on the local stack: the default 4D-CT phantom (10 phases x 150 slices of 512 x 512,
1500 files, ~790 MB) from ``dicomflow upload`` to COMPLETED, and the time in each state.

``dicomflow local up`` runs in one process (moto, the state machine, the handlers in-process; the
analysis task is its own process), ``dicomflow upload`` in another, as a user runs them. The time in
each state comes from the execution's history (state entered -> exited); upload is the uploader's
wall time. Target: at most 60 s upload to COMPLETED on 2 cores. ``BENCH_E2E_PHASES``/``_SLICES``/
``_SIZE`` change the phantom; ``BENCH_E2E_LAMBDA_WORKERS`` (default 2) the local stack's Lambda
execution environments (processes; 0: the handlers in the stack's own process).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from common import WORK, record

DICOMFLOW = [sys.executable, "-m", "dicomflow"]
TARGET_S = 60.0
PHASES = int(os.environ.get("BENCH_E2E_PHASES", "10"))
SLICES = int(os.environ.get("BENCH_E2E_SLICES", "150"))
SIZE = int(os.environ.get("BENCH_E2E_SIZE", "512"))
LAMBDA_WORKERS = os.environ.get("BENCH_E2E_LAMBDA_WORKERS", "2")
ROW = "end to end, default 4D-CT, upload to COMPLETED"


def _state_times(history: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Seconds in each top-level state, in order (a Map's children have their own histories)."""
    entered: dict[str, Any] = {}
    out = []
    for event in history:
        details = event.get("stateEnteredEventDetails")
        if details and details["name"] not in entered:
            entered[details["name"]] = event["timestamp"]
        details = event.get("stateExitedEventDetails")
        if details and details["name"] in entered:
            out.append((details["name"], (event["timestamp"] - entered.pop(details["name"])).total_seconds()))
    return out


def main() -> int:
    import boto3

    print(f"\n== e2e: {PHASES} phases x {SLICES} slices of {SIZE}^2, upload -> COMPLETED on the local stack")
    work = WORK / "e2e"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")  # moto takes any; nothing reaches AWS
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    scan = work / "scan"
    subprocess.run(
        [*DICOMFLOW, "phantom", str(scan), "--phases", str(PHASES), "--slices", str(SLICES),
         "--size", str(SIZE)],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    size = sum(p.stat().st_size for p in scan.rglob("*.dcm"))
    log = (work / "local-up.log").open("wb")
    stack = subprocess.Popen(
        [*DICOMFLOW, "local", "up", "--port", "0", "--data-dir", str(work / "local")],
        env={**env, "DICOMFLOW_LOCAL_LAMBDA_WORKERS": LAMBDA_WORKERS}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    load_before = os.getloadavg()[0]
    try:
        while not (work / "local" / "stack.json").exists():
            if stack.poll() is not None:
                print(f"e2e: dicomflow local up exited; see {work / 'local-up.log'}")
                return 1
            time.sleep(0.2)
        info = json.loads((work / "local" / "stack.json").read_text())
        env.update(DICOMFLOW_API_URL=info["api_url"], DICOMFLOW_API_TOKEN=info["token"])
        started = time.perf_counter()
        subprocess.run(
            [*DICOMFLOW, "upload", str(scan), "--device-id", "ct-01", "--scan-type", "4d-ct", "--quiet"],
            check=True, env=env,
        )  # fmt: skip
        uploaded = time.perf_counter() - started
        from dicomflow.upload.journal import Journal

        scan_id = Journal.load(scan).state["scan_id"]
        sfn = boto3.client("stepfunctions", endpoint_url=info["aws_endpoint_url"], region_name=info["region"])
        arn = info["state_machine_arn"].replace(":stateMachine:", ":execution:", 1) + f":{scan_id}"
        while True:
            status = sfn.describe_execution(executionArn=arn)["status"]
            if status != "RUNNING":
                break
            time.sleep(0.2)
        total = time.perf_counter() - started
        # Where the Analyze state's time goes: the task's own stage timings, from results.json.
        analysis: dict[str, float] = {}
        if status == "SUCCEEDED":
            s3 = boto3.client("s3", endpoint_url=info["aws_endpoint_url"], region_name=info["region"])
            body = s3.get_object(Bucket=info["buckets"]["results"], Key=f"scans/{scan_id}/results.json")
            analysis = json.loads(body["Body"].read()).get("timings_s", {})
        history: list[dict[str, Any]] = []
        token = None
        while True:
            page = sfn.get_execution_history(
                executionArn=arn, maxResults=1000, **({"nextToken": token} if token else {})
            )
            history += page["events"]
            token = page.get("nextToken")
            if not token:
                break
    finally:
        stack.send_signal(signal.SIGINT)
        try:
            stack.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stack.kill()
    load_after = os.getloadavg()[0]
    states = [
        (n, t) for n, t in _state_times(history) if t >= 0.05 or n in ("Validate", "Deidentify", "Analyze")
    ]
    label = f"upload ({PHASES * SLICES} files, {size / 1e6:.0f} MB)"
    print(f"  {label:<40} {uploaded:7.1f} s  ({size / 1e6 / uploaded:.0f} MB/s, {uploaded / total:.0%})")
    for name, seconds in states:
        print(f"  {'  ' + name:<40} {seconds:7.1f} s  ({seconds / total:.0%})")
        if name == "Analyze" and analysis:
            shown = ", ".join(f"{k.removesuffix('_s')} {v:.1f}" for k, v in analysis.items() if v >= 0.1)
            print(f"  {'':<6}the task's stages (s): {shown}")
    met = total <= TARGET_S and status == "SUCCEEDED"
    verdict = "within" if met else "OVER"
    print(
        f"  {'upload start -> ' + status:<40} {total:7.1f} s  ({total / TARGET_S:.2f}x the {TARGET_S:.0f} s "
        f"target: {verdict}; load average {load_before:.1f} before, {load_after:.1f} after)"
    )
    if (PHASES, SLICES, SIZE) == (10, 150, 512):  # a smaller phantom is not the row's figure
        workflow = ", ".join(f"{n} {t:.1f} s" for n, t in states if t >= 0.5)
        record(
            ROW,
            ours=f"{total:.1f} s {status}: upload {uploaded:.1f} s, {workflow}",
            peer=f"the upload alone in the same run: {uploaded:.1f} s",
            ratio=f"{total / TARGET_S:.2f}x the 60 s target; workflow after upload {total - uploaded:.1f} s",
            target=f"<= {TARGET_S:.0f} s on 2 cores",
            met=met,
            detail=(
                f"{PHASES * SLICES} files, {size / 1e6:.0f} MB; Lambda environments: {LAMBDA_WORKERS} "
                f"processes; load average {load_before:.1f} before, {load_after:.1f} after"
            ),
        )
    return 0 if status == "SUCCEEDED" else 1
