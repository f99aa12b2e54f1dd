"""Upload of a 1 GiB file to the same local moto server: `dicomflow upload` (manifest hashing, presigned
multipart through the local upload API, SHA-256 verification of the object against the manifest,
complete) against boto3's `upload_file` with s3transfer's defaults (8 MiB parts, 10 threads).

moto runs in its own process (it is the bottleneck, about 100 MB/s on 2 cores); the upload API's
handler runs behind the local gateway in this process; both uploaders are measured as subprocesses,
one after the other, in the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from common import BIN, WORK, header, measure

SIZE = 1024**3
PART_MIB = int(os.environ.get("BENCH_UPLOAD_PART_MIB", "8"))
WORKERS = int(os.environ.get("BENCH_UPLOAD_WORKERS", "4"))
# The machine is shared and noisy: each side runs this many times, interleaved; the best run counts.
REPEAT = int(os.environ.get("BENCH_UPLOAD_REPEAT", "3"))

BOTO3_UPLOAD = """
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
s3.upload_file(sys.argv[2], sys.argv[3], sys.argv[4])
"""


def _scan(folder: Path) -> Path:
    path = folder / "volume.dcm"
    if not (path.exists() and path.stat().st_size == SIZE):
        folder.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            for _ in range(SIZE // (64 * 1024**2)):
                fh.write(os.urandom(64 * 1024**2))
    for name in (".dicomflow-upload.json", ".dicomflow-upload.parts"):
        (folder / name).unlink(missing_ok=True)
    return path


def _empty(s3: object, bucket: str) -> None:
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):  # type: ignore[attr-defined]
        s3.delete_object(Bucket=bucket, Key=item["Key"])  # type: ignore[attr-defined]


def main() -> int:
    from dicomflow.local.moto_server import LocalAws
    from dicomflow.local.stack import start_upload_stack

    header("upload: dicomflow upload vs boto3 upload_file (1 GiB, local moto)")
    work = WORK / "upload"
    path = _scan(work / "scan")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    moto = subprocess.Popen(
        [sys.executable, "-m", "dicomflow.local.moto_server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert moto.stdout is not None
        settings = json.loads(moto.stdout.readline())
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        os.environ["MOTO_PORT"] = settings["DICOMFLOW_AWS_ENDPOINT_URL"].rsplit(":", 1)[1]
        local = LocalAws(
            endpoint_url=settings["DICOMFLOW_AWS_ENDPOINT_URL"],
            region="us-east-1",
            ingest_bucket=settings["DICOMFLOW_INGEST_BUCKET"],
            scans_table=settings["DICOMFLOW_SCANS_TABLE"],
            kms_key_id=settings["DICOMFLOW_KMS_KEY_ID"],
        )
        with start_upload_stack(local=local, part_size=PART_MIB * 1024**2) as stack:
            s3 = local.client("s3")
            ours_cmd = [
                BIN / "dicomflow",
                "upload",
                path.parent,
                "--api",
                stack.api_url,
                "--workers",
                str(WORKERS),
                "--part-size-mib",
                str(PART_MIB),
                "--device-id",
                "bench-01",
                "--scan-type",
                "4d-ct",
                "--quiet",
            ]
            theirs_cmd = [
                BIN / "python",
                "-c",
                BOTO3_UPLOAD,
                local.endpoint_url,
                path,
                local.ingest_bucket,
                "peer/v",
            ]
            ours_runs, theirs_runs = [], []
            for i in range(REPEAT):
                # Alternate who goes first, so neither always meets a warmer or a busier server.
                for who in ("ours", "theirs") if i % 2 == 0 else ("theirs", "ours"):
                    if who == "ours":
                        _scan(work / "scan")  # no journal: a fresh upload every time
                        ours_runs.append(measure("dicomflow upload", ours_cmd, env=env))
                    else:
                        theirs_runs.append(measure("boto3 upload_file", theirs_cmd, env=env))
                        assert (
                            s3.head_object(Bucket=local.ingest_bucket, Key="peer/v")["ContentLength"] == SIZE
                        )
                    _empty(s3, local.ingest_bucket)  # moto keeps objects in memory and /tmp: same start
            ours = min(ours_runs, key=lambda m: m.wall_s)
            theirs = min(theirs_runs, key=lambda m: m.wall_s)
    finally:
        if moto.stdin:
            moto.stdin.close()
        moto.wait(timeout=60)
    mb = SIZE / 1e6
    print(
        f"  dicomflow: {WORKERS} workers, {PART_MIB} MiB parts; one read hashes the file (manifest "
        "SHA-256 and part SHA-256s), parts signed with their SHA-256, storage's composite SHA-256 "
        "checked at completion; "
        f"peak RSS {ours.peak_rss_mb:.0f} MB"
    )
    print(f"  boto3 upload_file: s3transfer defaults; peak RSS {theirs.peak_rss_mb:.0f} MB")
    print(
        f"  runs (s): dicomflow {', '.join(f'{m.wall_s:.1f}' for m in ours_runs)}; "
        f"boto3 {', '.join(f'{m.wall_s:.1f}' for m in theirs_runs)} (best of {REPEAT} counts)"
    )
    print(
        f"upload 1 GiB: dicomflow {ours.wall_s:.1f} s ({ours.rate(mb):.0f} MB/s) vs boto3 upload_file "
        f"{theirs.wall_s:.1f} s ({theirs.rate(mb):.0f} MB/s): {theirs.wall_s / ours.wall_s:.2f}x",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
