"""The device's journal is a cache of the server's state, never the truth (issue 12, point 2), and
every upload error names the file at fault by its path in the scan folder (point 10): the device
uploader as a device runs it, against the real local API server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dicomflow.local.stack import UploadStack, start_upload_stack
from dicomflow.upload.journal import STATE_NAME
from dicomflow.upload.parts import MiB


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
        "--quiet",
        *extra,
    ]


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def scan_folder(root: Path, count: int = 3) -> dict[str, bytes]:
    files = {f"phase_00/{i:04d}.dcm": bytes([i]) * (1000 + i) for i in range(count)}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def scan_id_of(folder: Path) -> str:
    return str(json.loads((folder / STATE_NAME).read_text())["scan_id"])


def stored_files(stack: UploadStack, scan_id: str) -> dict[str, bytes]:
    s3 = stack.local.client("s3")
    bucket = stack.local.ingest_bucket
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"scans/{scan_id}/manifest.json")["Body"].read())
    return {f["name"]: s3.get_object(Bucket=bucket, Key=f["key"])["Body"].read() for f in manifest["files"]}


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_journal_for_another_api_uploads_a_new_scan_there(tmp_path: Path, local_aws: Any) -> None:
    # Given a folder uploaded to one API
    folder = tmp_path / "scan"
    files = scan_folder(folder)
    with start_upload_stack(local=local_aws) as first:
        assert run(upload_cmd(folder, first.api_url)).returncode == 0
        old_scan = scan_id_of(folder)
    # When the same command is pointed at another API (a new server knows nothing of that scan)
    with start_upload_stack(local=local_aws) as second:
        result = run(upload_cmd(folder, second.api_url))
        # Then the folder is uploaded there as a new scan, not reported "already uploaded"
        assert result.returncode == 0, result.stderr
        assert "already uploaded" not in result.stdout and "UPLOADED" in result.stdout
        new_scan = scan_id_of(folder)
        assert new_scan != old_scan
        assert stored_files(second, new_scan) == files
        assert [h.scan_id for h in second.processor.hand_offs] == [new_scan]


def test_a_scan_the_server_does_not_know_is_uploaded_again_as_a_new_scan(
    tmp_path: Path, local_aws: Any
) -> None:
    # Given a folder uploaded, whose scan the server then forgets (a new server at the same URL)
    folder = tmp_path / "scan"
    files = scan_folder(folder)
    with start_upload_stack(local=local_aws) as stack:
        assert run(upload_cmd(folder, stack.api_url)).returncode == 0
        old_scan = scan_id_of(folder)
        table = stack.local.client("dynamodb")
        items = table.query(
            TableName=stack.local.scans_table,
            KeyConditionExpression="scan_id = :s",
            ExpressionAttributeValues={":s": {"S": old_scan}},
        )["Items"]
        for item in items:
            table.delete_item(
                TableName=stack.local.scans_table, Key={"scan_id": item["scan_id"], "item": item["item"]}
            )
        # When the same command runs again
        result = run(upload_cmd(folder, stack.api_url))
        # Then the journal is not believed: the server says 404, so the folder is a new scan
        assert result.returncode == 0, result.stderr
        assert "already uploaded" not in result.stdout
        new_scan = scan_id_of(folder)
        assert new_scan != old_scan and stored_files(stack, new_scan) == files
        # And once the server holds it, running again is "already uploaded", as the server confirms
        again = run(upload_cmd(folder, stack.api_url))
        assert again.returncode == 0 and "already uploaded" in again.stdout, again.stderr


@pytest.mark.parametrize("api", ["notaurl", "http://", "ftp://example.org", "http://127.0.0.1:notaport"])
def test_a_bad_api_url_is_an_error_even_when_the_journal_says_uploaded(
    tmp_path: Path, local_aws: Any, api: str
) -> None:
    # Given a folder whose journal says it was uploaded
    folder = tmp_path / "scan"
    scan_folder(folder)
    with start_upload_stack(local=local_aws) as stack:
        assert run(upload_cmd(folder, stack.api_url)).returncode == 0
    # When the command is given something that is not an API URL
    result = run(upload_cmd(folder, api))
    # Then it fails in one line saying what a URL looks like, not "already uploaded"
    assert result.returncode == 1, result.stdout
    assert "is not an http(s) URL with a host" in one_line(result.stderr)
    assert "already uploaded" not in result.stdout


def test_a_server_that_is_not_there_or_does_not_answer_is_an_error(tmp_path: Path, local_aws: Any) -> None:
    folder = tmp_path / "scan"
    scan_folder(folder)
    with start_upload_stack(local=local_aws) as stack:
        assert run(upload_cmd(folder, stack.api_url)).returncode == 0
        gone = stack.api_url
    # When the API the journal names is gone: an error in seconds, not "already uploaded"
    result = run(upload_cmd(folder, gone), timeout=60)
    assert result.returncode == 1, result.stdout
    assert "could not be reached" in one_line(result.stderr)
    # When a server accepts connections but never answers: the request times out, with the reason
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = run(upload_cmd(folder, url, "--timeout", "1"), timeout=60)
    assert result.returncode == 1, result.stdout
    assert "did not answer within 1 s" in one_line(result.stderr)


def test_an_upload_error_names_the_file_by_its_path_in_the_scan_folder(
    tmp_path: Path, local_aws: Any
) -> None:
    # Given a scan folder with an empty file (the manifest refuses a file of 0 bytes)
    folder = tmp_path / "scan"
    scan_folder(folder)
    (folder / "phase_01").mkdir()
    (folder / "phase_01" / "0007.dcm").write_bytes(b"")
    with start_upload_stack(local=local_aws, part_size=5 * MiB) as stack:
        # When it is uploaded
        result = run(upload_cmd(folder, stack.api_url))
    # Then the message names that file as the user knows it, not by its position
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "phase_01/0007.dcm" in line and "files[" not in line, line
