"""Resuming many small files costs a few requests, not a few per file, and shows where it stands at
once (issue 12, point 13); upload's numeric flags are refused while parsing (point 12). The device
uploader as a device runs it, against the real local API server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dicomflow.errors import UploadError
from dicomflow.local.stack import UploadStack, start_upload_stack
from dicomflow.upload.device import ApiClient, Uploader
from dicomflow.upload.journal import PARTS_NAME, STATE_NAME


def upload_cmd(folder: Path, api: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dicomflow",
        "upload",
        str(folder),
        "--api",
        api,
        "--device-id",
        "ct-01",
        "--scan-type",
        "4d-ct",
        *extra,
    ]


def small_scan(folder: Path, count: int) -> dict[str, bytes]:
    files = {f"phase_{i // 20:02d}/{i:04d}.dcm": os.urandom(3000 + i) for i in range(count)}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


def stored_files(stack: UploadStack, scan_id: str) -> dict[str, bytes]:
    s3 = stack.local.client("s3")
    bucket = stack.local.ingest_bucket
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"scans/{scan_id}/manifest.json")["Body"].read())
    return {f["name"]: s3.get_object(Bucket=bucket, Key=f["key"])["Body"].read() for f in manifest["files"]}


def parts_landed(folder: Path) -> int:
    try:
        return sum(1 for line in (folder / PARTS_NAME).read_text().splitlines() if line.endswith("}"))
    except FileNotFoundError:
        return 0


def test_a_killed_upload_of_many_small_files_resumes_with_a_few_requests(
    tmp_path: Path, local_aws: Any
) -> None:
    # Given 60 small files whose upload is killed (SIGKILL) about half way
    folder = tmp_path / "scan"
    files = small_scan(folder, 60)
    with start_upload_stack(local=local_aws, with_proxy=True, put_delay_s=0.05) as stack:
        assert stack.proxy is not None
        proc = subprocess.Popen(
            upload_cmd(folder, stack.api_url, "--workers", "2", "--quiet"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while parts_landed(folder) < 30:
            assert proc.poll() is None and time.monotonic() < deadline, proc.returncode
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        stack.proxy.put_delay_s = 0.0
        # When the same command runs again
        before = stack.gateway.requests
        result = subprocess.run(
            upload_cmd(folder, stack.api_url), capture_output=True, text=True, timeout=120
        )
        # Then it finishes, byte-identical, asking the API a few times in all (the state of every
        # file in one call), not once or twice per file still to send
        assert result.returncode == 0, result.stderr
        assert "(resumed)" in result.stdout
        scan_id = json.loads((folder / STATE_NAME).read_text())["scan_id"]
        assert stored_files(stack, scan_id) == files
        asked = stack.gateway.requests - before
        assert asked <= 6, f"{asked} API requests to resume 30 small files"
        # And it says where it stands before sending anything
        lines = result.stderr.splitlines()
        assert "asking the upload API what it holds" in lines[0]
        assert lines[1].startswith(f"resuming scan {scan_id}: ")


def test_a_scan_whose_files_are_all_complete_resumes_with_two_requests(
    tmp_path: Path, local_aws: Any
) -> None:
    # Given a scan whose every file was uploaded and completed, and the device stopped before the
    # scan's own completion (the journal's list of complete files is then deleted: a cache only)
    folder = tmp_path / "scan"
    files = small_scan(folder, 80)
    with start_upload_stack(local=local_aws) as stack:
        original = ApiClient.call

        def stop_before_scan_completion(self: ApiClient, method: str, path: str, body: Any = None) -> Any:
            if method == "POST" and path.endswith("/complete") and "/files/" not in path:
                raise UploadError("stopped before the scan's completion")
            return original(self, method, path, body)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ApiClient, "call", stop_before_scan_completion)
            with pytest.raises(UploadError, match="stopped before"):
                Uploader(stack.api_url, progress=False).upload(folder, device_id="ct-01", scan_type="4d-ct")
        state = json.loads((folder / STATE_NAME).read_text())
        state.pop("complete", None)
        (folder / STATE_NAME).write_text(json.dumps(state))
        # When the same command runs again
        before = stack.gateway.requests
        result = subprocess.run(
            upload_cmd(folder, stack.api_url, "--quiet"), capture_output=True, text=True, timeout=120
        )
        # Then the server's word that every file is complete is enough: one call, then the completion
        assert result.returncode == 0, result.stderr
        assert stack.gateway.requests - before == 2
        assert stored_files(stack, state["scan_id"]) == files


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--part-size-mib", "0", "from 5 to 5120, not 0"),
        ("--part-size-mib", "-4", "from 5 to 5120, not -4"),
        ("--part-size-mib", "4", "from 5 to 5120, not 4"),
        ("--part-size-mib", "5121", "from 5 to 5120, not 5121"),
        ("--part-size-mib", "eight", "not 'eight'"),
        ("--workers", "0", "from 1 to 64, not 0"),
        ("--workers", "-2", "from 1 to 64, not -2"),
        ("--workers", "65", "from 1 to 64, not 65"),
        ("--timeout", "0", "seconds from 1 to 3600"),
    ],
)
def test_numeric_flags_are_refused_while_parsing(tmp_path: Path, flag: str, value: str, says: str) -> None:
    # Given a scan folder (so nothing but the flag is wrong)
    small_scan(tmp_path, 1)
    # When upload is given an out-of-range number
    result = subprocess.run(
        upload_cmd(tmp_path, "http://127.0.0.1:9", flag, value), capture_output=True, text=True, timeout=60
    )
    # Then argparse refuses it (exit 2) in one line naming the flag and the range, before any work
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"argument {flag}" in lines[0] and says in lines[0], lines[0]
    assert not (tmp_path / STATE_NAME).exists()
