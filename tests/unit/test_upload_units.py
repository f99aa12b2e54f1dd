"""Device-upload building blocks with no AWS at all: part arithmetic, SigV4, hashing, the journal,
progress output, composite checksums and the API's request validation."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomflow.errors import ManifestError, UploadError
from dicomflow.upload.device import (
    ApiClient,
    AwsCredentials,
    RetryPolicy,
    hash_file,
    scan_folder,
    sigv4_headers,
)
from dicomflow.upload.journal import PARTS_NAME, Journal
from dicomflow.upload.parts import (
    MAX_PARTS,
    MIN_PART_SIZE,
    GiB,
    MiB,
    choose_part_size,
    part_count,
    part_range,
    part_size_is_valid,
)
from dicomflow.upload.processing import RecordingProcessor
from dicomflow.upload.progress import Progress
from dicomflow.upload.service import PayloadTooLargeError, UploadConfig, UploadService, composite_sha256


@given(st.integers(min_value=1, max_value=5 * 1024 * GiB), st.integers(min_value=0, max_value=10 * GiB))
def test_chosen_part_sizes_always_satisfy_s3s_limits(size: int, preferred: int) -> None:
    part = choose_part_size(size, preferred)
    assert MIN_PART_SIZE <= part <= 5 * GiB
    assert part_count(size, part) <= MAX_PARTS
    # The parts tile the file exactly
    last = part_range(size, part, part_count(size, part))
    assert last[1] == size and last[1] - last[0] <= part


def test_part_size_validity_follows_s3() -> None:
    assert part_size_is_valid(100 * MiB, 5 * MiB)
    assert not part_size_is_valid(100 * MiB, 5 * MiB - 1)
    assert not part_size_is_valid(60 * GiB, 5 * MiB)  # 12,288 parts


def test_sigv4_headers_match_botocore() -> None:
    # Given the same request, credentials and time
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/scans/20260101T000000Z-ab/complete"
    body = b'{"x": 1}'
    creds = AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token")
    ours = sigv4_headers("POST", url, body, creds, "eu-west-1", now=1_700_000_000)
    request = AWSRequest(method="POST", url=url, data=body)
    auth = SigV4Auth(
        Credentials(creds.access_key, creds.secret_key, creds.session_token), "execute-api", "eu-west-1"
    )
    # botocore's own steps, at our timestamp
    request.context["timestamp"] = ours["X-Amz-Date"]
    auth._modify_request_before_signing(request)
    signature = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    # Then the signatures are identical
    assert ours["Authorization"].endswith(f"Signature={signature}")
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in ours["Authorization"]
    assert ours["X-Amz-Security-Token"] == "session-token"


def test_hash_file_gives_the_whole_digest_and_every_parts_in_one_read(tmp_path: Path) -> None:
    data = os.urandom(11 * MiB + 3)
    path = tmp_path / "f.dcm"
    path.write_bytes(data)
    whole, parts = hash_file(path, 5 * MiB)
    assert whole == hashlib.sha256(data).hexdigest()
    assert parts == [hashlib.sha256(data[i : i + 5 * MiB]).hexdigest() for i in range(0, len(data), 5 * MiB)]


def test_scan_folder_skips_the_journal_hidden_files_and_manifest(tmp_path: Path) -> None:
    for name in ("b/2.dcm", "a.dcm", ".dicomflow-upload.json", ".hidden/x.dcm", "manifest.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [f.name for f in scan_folder(tmp_path)] == ["a.dcm", "b/2.dcm"]


def test_journal_survives_a_torn_last_line_and_ignores_other_scans(tmp_path: Path) -> None:
    # Given a journal with two parts recorded, one line of an older scan, and a line torn by a kill
    journal = Journal(tmp_path)
    journal.state["scan_id"] = "scan-2"
    journal.save()
    journal.record_part(0, 1, '"e1"', "a" * 64)
    journal.record_part(0, 2, '"e2"')
    with open(tmp_path / PARTS_NAME, "a") as fh:
        fh.write(json.dumps({"scan_id": "scan-1", "f": 0, "p": 3, "e": "x"}) + "\n")
        fh.write('{"scan_id": "scan-2", "f": 0, "p"')
    # When it is loaded again
    again = Journal.load(tmp_path)
    # Then the complete lines of this scan count, the rest is ignored
    assert sorted(again.parts) == [(0, 1), (0, 2)]
    assert again.part_sha256 == {(0, 1): "a" * 64}


def test_journal_state_is_replaced_atomically(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.state["scan_id"] = "s"
    journal.save()
    assert not list(tmp_path.glob("*.tmp-*"))
    assert json.loads((tmp_path / ".dicomflow-upload.json").read_text())["scan_id"] == "s"


def test_progress_writes_quiet_lines_off_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(100 * MiB, stream=out, tty=False)
    for _ in range(100):
        progress.advance(MiB)
    progress.finish()
    lines = out.getvalue().splitlines()
    assert lines and all(line.startswith("upload: ") for line in lines)
    assert "100.0%" in lines[-1] and "\r" not in out.getvalue()
    assert len(lines) <= 11


def test_progress_draws_a_bar_with_rate_and_eta_on_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(10 * MiB, stream=out, tty=True)
    progress.advance(5 * MiB)
    progress.finish()
    text = out.getvalue()
    assert "\r[" in text and "MB/s" in text and "ETA" in text


def test_composite_checksum_is_s3s() -> None:
    parts = [os.urandom(100), os.urandom(50)]
    digests = [hashlib.sha256(p).digest() for p in parts]
    expected = base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode() + "-2"
    assert composite_sha256([d.hex() for d in digests]) == expected


def _service(**config: Any) -> UploadService:
    # Request validation happens before any storage is touched: no table, no S3.
    return UploadService(
        table=None,
        uploads=None,
        store=None,
        processor=RecordingProcessor(),  # type: ignore[arg-type]
        config=UploadConfig(**config),
    )


def test_limits_answer_413_and_malformed_manifests_400() -> None:
    from dicomflow.manifest import ManifestLimits

    service = _service(limits=ManifestLimits(max_files=2))
    files = [{"name": f"{i}.dcm", "size": 1, "sha256": "0" * 64} for i in range(3)]
    with pytest.raises(PayloadTooLargeError, match="over the limit of 2"):
        service.create_scan(json.dumps({"device_id": "d", "scan_type": "4d-ct", "files": files}))
    with pytest.raises(ManifestError, match=r"'\.\.' path segment") as excinfo:
        service.create_scan(
            json.dumps(
                {
                    "device_id": "d",
                    "scan_type": "4d-ct",
                    "files": [{"name": "../x", "size": 1, "sha256": "0" * 64}],
                }
            )
        )
    assert not isinstance(excinfo.value, PayloadTooLargeError)
    with pytest.raises(PayloadTooLargeError, match="request body"):
        _service(max_body_bytes=10).create_scan(b"{" + b" " * 20 + b"}")


def test_the_api_client_gives_up_with_what_to_do_when_the_api_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    client = ApiClient(f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=2, base_s=0.01))
    with pytest.raises(
        UploadError, match=r"could not be reached after 2 attempts.*run the same command again"
    ):
        client.call("GET", "/scans/x")
