"""The device uploader as a device runs it (``python -m dicomflow upload``, a separate process),
over real HTTP: the local gateway with the real handler, S3 and DynamoDB on moto, and the S3 proxy
in front of moto where a test needs S3's own behaviour (checksums, expiry) or to count PUTs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom.data
import pytest

from dicomflow.local.stack import UploadStack, start_upload_stack
from dicomflow.upload.journal import PARTS_NAME, STATE_NAME
from dicomflow.upload.parts import MiB


def upload_cmd(folder: Path, stack: UploadStack, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dicomflow",
        "upload",
        str(folder),
        "--api",
        stack.api_url,
        "--device-id",
        "ct-01",
        "--scan-type",
        "4d-ct",
        "--part-size-mib",
        "5",
        *extra,
    ]


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def key_of(stack: UploadStack, scan_id: str, name: str) -> str:
    """A file's object key, as the manifest stored at completion maps it (keys carry no names)."""
    manifest = json.loads(stored_object(stack, f"scans/{scan_id}/manifest.json"))
    return str({f["name"]: f["key"] for f in manifest["files"]}[name])


def stored(stack: UploadStack, scan_id: str, name: str) -> bytes:
    return stored_object(stack, key_of(stack, scan_id, name))


def stored_object(stack: UploadStack, key: str) -> bytes:
    s3 = stack.local.client("s3")
    return bytes(s3.get_object(Bucket=stack.local.ingest_bucket, Key=key)["Body"].read())


def journal_state(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / STATE_NAME).read_text()))


def parts_landed(folder: Path) -> int:
    try:
        return sum(1 for line in (folder / PARTS_NAME).read_text().splitlines() if line.endswith("}"))
    except FileNotFoundError:
        return 0


def wait_for_parts(folder: Path, count: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while parts_landed(folder) < count:
        assert proc.poll() is None, f"the uploader ended early: {proc.returncode}"
        assert time.monotonic() < deadline, "the upload did not progress"
        time.sleep(0.02)


def random_file(path: Path, size: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def test_a_multi_file_dicom_scan_uploads_byte_identical_and_is_handed_to_processing_once(
    tmp_path: Path, local_aws: Any
) -> None:
    # Given a scan folder of real DICOM files and one large file that goes up in parts
    folder = tmp_path / "scan"
    sources = [
        Path(p)
        for p in pydicom.data.get_testdata_files("CT_small.dcm")
        + pydicom.data.get_testdata_files("MR_small.dcm")
    ]
    for i, source in enumerate(sources):
        (folder / "phase_00").mkdir(parents=True, exist_ok=True)
        shutil.copy(source, folder / "phase_00" / f"slice_{i:04d}.dcm")
    random_file(folder / "phase_01" / "volume.dcm", 12 * MiB + 7)
    with start_upload_stack(local=local_aws, part_size=5 * MiB) as stack:
        # When the device uploads it
        result = run(upload_cmd(folder, stack, "--workers", "3"))
        # Then it succeeds, says so, and every object is byte-identical to its file
        assert result.returncode == 0, result.stderr
        scan_id = journal_state(folder)["scan_id"]
        assert f"scan {scan_id} UPLOADED: 3 file(s)" in result.stdout
        s3 = stack.local.client("s3")
        for path in folder.rglob("*.dcm"):
            name = path.relative_to(folder).as_posix()
            assert stored(stack, scan_id, name) == path.read_bytes(), name
            head = s3.head_object(Bucket=stack.local.ingest_bucket, Key=key_of(stack, scan_id, name))
            assert (head["ServerSideEncryption"], head["SSEKMSKeyId"].rsplit("/", 1)[-1]) == (
                "aws:kms",
                stack.local.kms_key_id,
            ), name
        # And the manifest next to the data lists each file's SHA-256
        manifest = json.loads(
            s3.get_object(Bucket=stack.local.ingest_bucket, Key=f"scans/{scan_id}/manifest.json")[
                "Body"
            ].read()
        )
        assert {f["name"]: f["sha256"] for f in manifest["files"]} == {
            p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*.dcm")
        }
        assert [h.scan_id for h in stack.processor.hand_offs] == [scan_id]
        # And running the command again does nothing, successfully
        again = run(upload_cmd(folder, stack))
        assert again.returncode == 0 and "already uploaded" in again.stdout
        # But not once the folder changed: that is another scan, and the device is told so
        (folder / "phase_00" / "extra.dcm").write_bytes(b"late file")
        changed = run(upload_cmd(folder, stack))
        assert changed.returncode == 1 and "files changed since" in changed.stderr


@pytest.mark.slow
def test_resume_after_sigkill_resends_at_most_one_part_per_worker(tmp_path: Path, local_aws: Any) -> None:
    # Given a 64 MiB file (13 parts of 5 MiB), two workers, and PUTs slowed so the upload can be killed
    folder = tmp_path / "scan"
    data = random_file(folder / "series" / "big.dcm", 64 * MiB)
    workers = 2
    with start_upload_stack(local=local_aws, with_proxy=True, put_delay_s=0.15, part_size=5 * MiB) as stack:
        assert stack.proxy is not None
        cmd = upload_cmd(folder, stack, "--workers", str(workers), "--quiet")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # When it is killed (SIGKILL: no cleanup at all) once 4 parts are recorded in the journal
        wait_for_parts(folder, 4, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        landed = parts_landed(folder)
        assert 4 <= landed < 13
        # And restarted
        stack.proxy.put_delay_s = 0.0
        result = run(cmd)
        # Then the upload finishes, the object is byte-identical, and few parts were sent twice
        assert result.returncode == 0, result.stderr
        assert "(resumed)" in result.stdout
        scan_id = journal_state(folder)["scan_id"]
        assert (
            hashlib.sha256(stored(stack, scan_id, "series/big.dcm")).digest() == hashlib.sha256(data).digest()
        )
        big_key = key_of(stack, scan_id, "series/big.dcm")
        puts = {part: count for (path, part), count in stack.proxy.puts.items() if path.endswith(big_key)}
        assert set(puts) == set(range(1, 14))
        resent = [part for part, count in puts.items() if count > 1]
        print(f"resume: killed after {landed} of 13 parts were journaled; parts sent twice: {sorted(resent)}")
        assert len(resent) <= workers, puts
        assert [h.scan_id for h in stack.processor.hand_offs] == [scan_id]


def test_expired_urls_are_refreshed(tmp_path: Path, local_aws: Any) -> None:
    # Given a scan of five slices, whose URLs all come with the plan, that S3 will refuse 2 s after
    # signing (as when the signing credentials expire before X-Amz-Expires, which the device cannot
    # know), and PUTs that take 1 s each
    folder = tmp_path / "scan"
    slices = {
        f"phase_00/{i:04d}.dcm": random_file(folder / "phase_00" / f"{i:04d}.dcm", 100_000) for i in range(5)
    }
    with start_upload_stack(
        local=local_aws, with_proxy=True, put_delay_s=1.0, max_url_age_s=2.0, part_size=5 * MiB
    ) as stack:
        # When one worker uploads them one after the other
        result = run(upload_cmd(folder, stack, "--workers", "1"))
        # Then the URLs that expired meanwhile were refused, refreshed, and the upload succeeded
        assert result.returncode == 0, result.stderr
        assert stack.proxy is not None and stack.proxy.expired >= 1
        assert "URL(s) refreshed" in result.stdout
        scan_id = journal_state(folder)["scan_id"]
        for name, data in slices.items():
            assert stored(stack, scan_id, name) == data


@pytest.mark.parametrize("storage_checks_checksums", [True, False], ids=["like-s3", "like-moto"])
def test_a_file_changed_during_upload_is_caught_and_the_device_says_what_to_do(
    tmp_path: Path, local_aws: Any, storage_checks_checksums: bool
) -> None:
    # Given a slowed upload, through storage that checks the signed part checksums as S3 does, or
    # that checks nothing, as moto
    folder = tmp_path / "scan"
    random_file(folder / "big.dcm", 30 * MiB)
    with start_upload_stack(local=local_aws, with_proxy=True, put_delay_s=0.3, part_size=5 * MiB) as stack:
        assert stack.proxy is not None
        stack.proxy.verify_checksums = storage_checks_checksums
        proc = subprocess.Popen(
            upload_cmd(folder, stack, "--workers", "1", "--quiet"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # When another program rewrites the end of the file once the upload has begun
        wait_for_parts(folder, 1, proc)
        with open(folder / "big.dcm", "r+b") as fh:
            fh.seek(-1000, os.SEEK_END)
            fh.write(b"\0" * 1000)
        out, err = proc.communicate(timeout=60)
        # Then the changed bytes are refused (by storage, or else by the API's SHA-256 check when the
        # file completes), and the uploader fails saying what happened and what to do
        assert proc.returncode == 1, (out, err)
        assert "changed on the device after the upload began" in err
        assert "upload the scan again" in err
        assert stack.proxy.bad_digests == (1 if storage_checks_checksums else 0)
        assert stack.processor.hand_offs == []
        scan_id = journal_state(folder)["scan_id"]
        keys = (
            stack.local.client("s3")
            .list_objects_v2(Bucket=stack.local.ingest_bucket, Prefix=f"scans/{scan_id}/")
            .get("KeyCount", 0)
        )
        assert keys == 0  # nothing was accepted


def test_the_device_follows_the_apis_part_size_and_hashes_parts_as_it_reads(
    tmp_path: Path, local_aws: Any
) -> None:
    from dicomflow.upload.device import Uploader

    # Given a device (the library: the CLI refuses such a size) proposing a part size S3 would
    # refuse (1 MiB) to an API that prefers 8 MiB
    folder = tmp_path / "scan"
    data = random_file(folder / "big.dcm", 11 * MiB)
    with start_upload_stack(local=local_aws, part_size=8 * MiB) as stack:
        # When it uploads
        result = Uploader(stack.api_url, part_size=1 * MiB, progress=False).upload(
            folder, device_id="ct-01", scan_type="4d-ct"
        )
        # Then the API's part size was used and the object is byte-identical
        assert result.status == "UPLOADED"
        scan_id = journal_state(folder)["scan_id"]
        record = stack.service.table.get_file(scan_id, 0)
        assert record is not None and (record["part_size"], record["part_count"]) == (8 * MiB, 2)
        assert stored(stack, scan_id, "big.dcm") == data


def test_ctrl_c_stops_cleanly_says_how_to_resume_and_the_same_command_resumes(
    tmp_path: Path, local_aws: Any
) -> None:
    folder = tmp_path / "scan"
    data = random_file(folder / "big.dcm", 30 * MiB)
    with start_upload_stack(local=local_aws, with_proxy=True, put_delay_s=0.2, part_size=5 * MiB) as stack:
        assert stack.proxy is not None
        cmd = upload_cmd(folder, stack, "--workers", "1")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # When the operator presses Ctrl-C part-way
        wait_for_parts(folder, 2, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        # Then it stops with status 130 and says how to resume
        assert proc.returncode == 130, (out, err)
        assert "Run the same command again to resume" in err
        # And the same command finishes the upload
        stack.proxy.put_delay_s = 0.0
        result = run(cmd)
        assert result.returncode == 0, result.stderr
        assert stored(stack, journal_state(folder)["scan_id"], "big.dcm") == data


def test_failures_end_with_a_message_and_a_failing_status(tmp_path: Path, local_aws: Any) -> None:
    with start_upload_stack(local=local_aws, token="secret") as stack:
        (tmp_path / "empty").mkdir()
        # A folder with no files
        result = run(upload_cmd(tmp_path / "empty", stack))
        assert result.returncode == 1 and "holds no files" in result.stderr
        # Missing metadata
        random_file(tmp_path / "scan" / "a.dcm", 100)
        result = run(
            [sys.executable, "-m", "dicomflow", "upload", str(tmp_path / "scan"), "--api", stack.api_url]
        )
        assert result.returncode == 1 and "lacks device_id, scan_type" in result.stderr
        # A refused request: the gateway's token is missing, and the device says what to set
        result = run(upload_cmd(tmp_path / "scan", stack))
        assert result.returncode == 1 and "Missing Authentication Token" in result.stderr
        assert "DICOMFLOW_API_TOKEN" in result.stderr and "--token" in result.stderr
        assert "AWS_ACCESS_KEY_ID" in result.stderr  # what an API in AWS would want instead
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        # A wrong token: said so
        result = run(upload_cmd(tmp_path / "scan", stack, "--token", "wrong"))
        assert result.returncode == 1 and "token sent was refused" in result.stderr
        # The right token: success
        result = run(upload_cmd(tmp_path / "scan", stack, "--token", "secret"))
        assert result.returncode == 0, result.stderr


def test_a_device_manifest_in_the_folder_names_the_scan_and_its_files(tmp_path: Path, local_aws: Any) -> None:
    # Given a phantom scan folder: DICOM files, the device's manifest.json and a sidecar that is not
    # part of the scan (the phantom's ground truth, which holds the planted identity in clear)
    from dicomflow.phantom import generate_phantom

    folder = tmp_path / "scan"
    phantom = generate_phantom(folder, phases=2, slices=3, size=32)
    with start_upload_stack(local=local_aws, part_size=5 * MiB) as stack:
        # When the device uploads the folder with no metadata flags
        cmd = [sys.executable, "-m", "dicomflow", "upload", str(folder), "--api", stack.api_url, "--quiet"]
        result = run(cmd)
        # Then the manifest's metadata and files make the scan, and nothing else is uploaded
        assert result.returncode == 0, result.stderr
        scan_id = journal_state(folder)["scan_id"]
        keys = {
            o["Key"]
            for o in stack.local.client("s3").list_objects_v2(
                Bucket=stack.local.ingest_bucket, Prefix=f"scans/{scan_id}/files/"
            )["Contents"]
        }
        assert keys == {key_of(stack, scan_id, f.name) for f in phantom.manifest.files}
        assert len(keys) == len(phantom.manifest.files)
        stored_manifest = json.loads(stored_object(stack, f"scans/{scan_id}/manifest.json"))
        assert (stored_manifest["device_id"], stored_manifest["scan_type"]) == ("phantom-ct-01", "4d-ct")
        assert stored_manifest["device_settings"]["phases"] == 2

    # And a file the manifest lists but the folder lacks is refused by position, before any upload
    (folder / phantom.manifest.files[0].name).unlink()
    (folder / STATE_NAME).unlink()
    with start_upload_stack(local=local_aws, part_size=5 * MiB) as stack:
        result = run([sys.executable, "-m", "dicomflow", "upload", str(folder), "--api", stack.api_url])
    assert result.returncode == 1
    assert "file 0 of the manifest (sorted by name) is not in" in result.stderr


def test_many_small_files_are_completed_in_batches_and_an_api_without_the_batch_route_still_works(
    tmp_path: Path, local_aws: Any
) -> None:
    from dicomflow.local.gateway import LocalGateway

    # Given a scan of 120 small files (more than one batch of completions)
    folder = tmp_path / "scan"
    files = {
        f"phase_{i // 60:02d}/{i:04d}.dcm": random_file(folder / f"phase_{i // 60:02d}/{i:04d}.dcm", 2000 + i)
        for i in range(120)
    }
    with start_upload_stack(local=local_aws, part_size=5 * MiB) as stack:
        # When the device uploads it
        before = stack.gateway.requests
        result = run(upload_cmd(folder, stack, "--quiet"))
        # Then every object is the device's bytes, and completing took a few requests, not 120
        assert result.returncode == 0, result.stderr
        scan_id = journal_state(folder)["scan_id"]
        assert all(stored(stack, scan_id, name) == data for name, data in files.items())
        assert stack.gateway.requests - before <= 8  # create, a few batch completions, complete

        # When an API from before the batch route (it answers that route 404) serves the next upload
        def older(event: dict[str, Any], context: Any) -> dict[str, Any]:
            if event["path"].endswith("/files/complete"):
                return {"statusCode": 404, "body": json.dumps({"message": "Not found"})}
            return dict(stack.handler.lambda_handler(event, context))

        for name in (STATE_NAME, PARTS_NAME):
            (folder / name).unlink(missing_ok=True)
        with LocalGateway(older) as gateway:
            result = run(
                upload_cmd(folder, SimpleNamespace(api_url=gateway.url), "--quiet")  # type: ignore[arg-type]
            )
            # Then the device completes the files one by one and the scan is uploaded all the same
            assert result.returncode == 0, result.stderr
            assert gateway.requests >= 120
        scan_id = journal_state(folder)["scan_id"]
        assert all(stored(stack, scan_id, name) == data for name, data in files.items())
