"""The local stack as a user runs it: ``dicomflow local up`` in one process, ``dicomflow upload`` and
``dicomflow status`` in others, Ctrl-C to stop.

Given ``dicomflow local up --port 0`` running, when a phantom is uploaded with the device CLI, then
``dicomflow status --watch`` follows it to COMPLETED and ``dicomflow status`` shows the history and
where the results are; and SIGINT stops the stack cleanly (exit 0, the port closed).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dicomflow.phantom import generate_phantom
from dicomflow.upload.journal import Journal

CLI = [sys.executable, "-m", "dicomflow"]


def _env(info: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    env.setdefault("AWS_ACCESS_KEY_ID", "testing")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    if info:
        env["DICOMFLOW_API_URL"] = info["api_url"]
        env["DICOMFLOW_API_TOKEN"] = info["token"]
    return env


@pytest.fixture()
def local_up(tmp_path: Path):
    data = tmp_path / "local"
    process = subprocess.Popen(
        [*CLI, "local", "up", "--port", "0", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_env(),
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (data / "stack.json").exists():
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, "dicomflow local up did not start in 60 s"
        time.sleep(0.2)
    time.sleep(0.2)  # the file is written before the banner; both before serving requests matters not
    yield process, json.loads((data / "stack.json").read_text())
    if process.poll() is None:
        process.kill()
        process.wait()


def test_local_up_upload_status_and_ctrl_c(local_up, tmp_path: Path) -> None:
    process, info = local_up
    assert info["api_url"].startswith("http://127.0.0.1:") and info["token"]
    scan = tmp_path / "scan"
    generate_phantom(scan, phases=2, slices=4, size=64, workers=1)
    # When the device CLI uploads the phantom
    upload = subprocess.run(
        [*CLI, "upload", str(scan), "--device-id", "ct-01", "--scan-type", "4d-ct", "--quiet"],
        capture_output=True, text=True, env=_env(info), timeout=120,
    )  # fmt: skip
    assert upload.returncode == 0, upload.stderr
    scan_id = Journal.load(scan).state["scan_id"]
    # Then status --watch follows it to COMPLETED (exit 0), a JSON line per change
    watch = subprocess.run(
        [*CLI, "status", scan_id, "--watch", "--json", "--interval", "0.2"],
        capture_output=True, text=True, env=_env(info), timeout=120,
    )  # fmt: skip
    assert watch.returncode == 0, watch.stdout + watch.stderr
    seen = [json.loads(line)["status"] for line in watch.stdout.splitlines()]
    assert seen[-1] == "COMPLETED" and len(seen) == len(set(seen))
    # And the human view has the history with times and where the results are
    shown = subprocess.run(
        [*CLI, "status", scan_id], capture_output=True, text=True, env=_env(info), timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"scan {scan_id}: COMPLETED" in text
    for status in ("UPLOADED", "VALIDATING", "DEIDENTIFYING", "ANALYZING", "COMPLETED"):
        assert status in text
    assert f"s3://{info['buckets']['results']}/scans/{scan_id}/results.json" in text
    assert "seg " in text and "sr " in text and "preview " in text
    # And Ctrl-C stops the stack cleanly
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    assert "upload API:" in out and "token:" in out and "dicomflow local: stopped" in out
    assert "Traceback" not in out
    assert not (tmp_path / "local" / "stack.json").exists()  # no endpoints of a stopped stack left
    port = int(info["api_url"].rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_status_of_an_unknown_scan_is_one_line(local_up) -> None:
    _, info = local_up
    done = subprocess.run(
        [*CLI, "status", "no-such-scan"], capture_output=True, text=True, env=_env(info), timeout=60
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_second_stack_on_the_same_data_dir_is_refused(local_up, tmp_path: Path) -> None:
    _, info = local_up
    stack_json = tmp_path / "local" / "stack.json"
    before = stack_json.read_text()
    # When another `local up` is started on the running stack's folder
    second = subprocess.run(
        [*CLI, "local", "up", "--port", "0", "--data-dir", str(tmp_path / "local")],
        capture_output=True, text=True, env=_env(), timeout=60,
    )  # fmt: skip
    # Then it is refused in one line that says what to do, and the running stack's file is untouched
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert "another `dicomflow local up`" in second.stderr and "--data-dir" in second.stderr
    assert stack_json.read_text() == before and json.loads(before)["api_url"] == info["api_url"]
