"""`make demo`: a phantom 4D-CT scan uploaded by the real device uploader goes to COMPLETED on its own,
on this machine: the local stack runs the same state machine, handlers and analysis container entry
point as AWS does (an embedded moto; no account, no Docker).

1. ``dicomflow phantom``: a 4D-CT phantom with planted patient identity and a known ground truth;
2. ``dicomflow local up``: moto with the topology, the workflow and the upload API (its log in
   .demo/local-up.log);
3. ``dicomflow upload``: the device uploader (presigned multipart, SHA-256 per part);
4. the workflow, followed through the API until the scan ends (a line per state, with times);
5. the status history, the outputs downloaded from the results bucket into .demo/results/, and the
   measured values beside the phantom's ground truth.

Exit status 0 only if the scan COMPLETED. ``DEMO_PHASES``/``DEMO_SLICES``/``DEMO_SIZE`` change the
phantom's size.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".demo"
DICOMFLOW = [sys.executable, "-m", "dicomflow"]
TERMINAL = ("COMPLETED", "REJECTED", "FAILED")
PHASES = int(os.environ.get("DEMO_PHASES", "10"))
SLICES = int(os.environ.get("DEMO_SLICES", "32"))
SIZE = int(os.environ.get("DEMO_SIZE", "256"))


def say(title: str, args: list[str] | None = None) -> None:
    print(f"\n--- {title}", flush=True)
    if args:
        print("$ " + " ".join(shlex.quote(str(a)) for a in ["dicomflow", *args]), flush=True)


def run(args: list[str], env: dict[str, str]) -> None:
    started = time.perf_counter()
    code = subprocess.call([*DICOMFLOW, *args], cwd=ROOT, env=env)
    print(f"    ({time.perf_counter() - started:.1f} s, exit {code})", flush=True)
    if code != 0:
        sys.exit(f"demo: `dicomflow {args[0]}` failed with exit status {code}")


def start_stack(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    data = OUT / "local"
    args = ["local", "up", "--port", "0", "--data-dir", str(data)]
    say("2. the local stack: moto + the topology + the workflow + the upload API", args)
    log = (OUT / "local-up.log").open("wb")
    process = subprocess.Popen([*DICOMFLOW, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    started = time.perf_counter()
    while not (data / "stack.json").exists():
        if process.poll() is not None:
            sys.exit(f"demo: dicomflow local up exited ({process.returncode}); see {OUT / 'local-up.log'}")
        if time.perf_counter() - started > 120:
            process.kill()
            sys.exit("demo: the local stack did not start in 120 s")
        time.sleep(0.2)
    info = json.loads((data / "stack.json").read_text())
    took = time.perf_counter() - started
    print(f"    upload API {info['api_url']}, moto {info['aws_endpoint_url']} ({took:.1f} s)")
    return process, info


def follow(api: Any, scan_id: str) -> dict[str, Any]:
    """Poll the scan's status until it ends, printing each state as it is entered and left."""
    say(f"4. the workflow of scan {scan_id} (Step Functions in moto; handlers in-process)")
    started = time.perf_counter()
    current, since = None, started
    while True:
        status = api.call("GET", f"/scans/{scan_id}")
        state = status["status"]
        now = time.perf_counter()
        if state != current:
            if current is not None:
                print(f"{now - since:6.1f} s", flush=True)
            print(
                f"    {now - started:6.1f} s  {state:<14}",
                end="" if state not in TERMINAL else "\n",
                flush=True,
            )
            current, since = state, now
        if state in TERMINAL:
            return dict(status)
        if now - started > 600:
            print()
            sys.exit(f"demo: scan {scan_id} still {state} after 10 minutes")
        time.sleep(0.25)


def download(info: dict[str, Any], status: dict[str, Any]) -> dict[str, Path]:
    import boto3

    results = status["results"]
    s3 = boto3.client("s3", endpoint_url=info["aws_endpoint_url"], region_name=info["region"])
    target = OUT / "results"
    target.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, key in sorted(results["outputs"].items()):
        path = target / Path(key).name
        s3.download_file(results["bucket"], key, str(path))
        paths[name] = path
    return paths


def side_by_side(truth: dict[str, Any], measured: dict[str, Any]) -> list[str]:
    rows = [("", "true (phantom)", "measured", "error")]

    def row(label: str, true: float, got: float, unit: str) -> None:
        error = (got - true) / true * 100 if true else 0.0
        rows.append((label, f"{true:10.1f} {unit}", f"{got:10.1f} {unit}", f"{error:+6.1f} %"))

    for index, (true, got) in enumerate(
        zip(truth["lung_volume_ml"], measured["lung_volume_ml"], strict=True)
    ):
        row(f"lung volume, phase {index} ({truth['phase_percent'][index]:.0f}%)", true, got, "mL")
    row("tidal volume", truth["tidal_volume_ml"], measured["tidal_volume_ml"], "mL")
    row("ventilation defect", truth["defect_percent"], measured["ventilation"]["defect_percent"], "% ")
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)) for r in rows]


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    scan = OUT / "scan"
    # moto takes any credentials; placeholders only if there are none, and nothing reaches AWS.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    started = time.perf_counter()
    args = [
        "phantom",
        str(scan),
        "--phases",
        str(PHASES),
        "--slices",
        str(SLICES),
        "--size",
        str(SIZE),
        "--seed",
        "7",
    ]
    say(
        f"1. a phantom 4D-CT scan ({PHASES} phases x {SLICES} slices of {SIZE}^2) with planted identity",
        args,
    )
    run(args, env)
    process, info = start_stack(env)
    try:
        env["DICOMFLOW_API_URL"], env["DICOMFLOW_API_TOKEN"] = info["api_url"], info["token"]
        args = ["upload", str(scan), "--device-id", "ct-01", "--scan-type", "4d-ct"]
        say(
            "3. upload: the device uploader -> the upload API -> S3 (completing it starts the workflow)", args
        )
        run(args, env)
        from dicomflow.cli.status import render
        from dicomflow.upload.device import ApiClient
        from dicomflow.upload.journal import Journal

        scan_id = Journal.load(scan).state["scan_id"]
        api = ApiClient(info["api_url"], token=info["token"])
        status = follow(api, scan_id)
        say("5. the scan's status (dicomflow status " + scan_id + ")")
        print(render(status))
        if status["status"] != "COMPLETED":
            print(f"\ndemo: the scan ended {status['status']}, not COMPLETED (see {OUT / 'local-up.log'})")
            return 1
        paths = download(info, status)
        print("\nOutputs, downloaded from the results bucket:")
        for name, path in paths.items():
            print(f"  {name:<8} {path.relative_to(ROOT)}")
        truth_path = scan / "ground_truth.json"
        truth = json.loads(truth_path.read_text())
        measured = json.loads(paths["results"].read_text())
        print(f"\nThe phantom's ground truth: {truth_path.relative_to(ROOT)}")
        for line in side_by_side(truth, measured):
            print(f"  {line}")
        print(
            f"\nCOMPLETED in {time.perf_counter() - started:.1f} s (phantom, stack start, upload, workflow)."
        )
        return 0
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    sys.exit(main())
