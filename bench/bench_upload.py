"""Uploads to the same local moto server, `dicomflow upload` (manifest hashing, presigned URLs
through the local upload API, SHA-256 verification against the manifest, complete) against boto3:

- a 1 GiB file, against boto3's `upload_file` with s3transfer's defaults (8 MiB parts, 10 threads);
- a real 4D-CT scan's shape, 1500 single-frame files of ~0.5 MB (10 phases x 150 slices, 512^2),
  against boto3 `upload_file` of each file from a pool of 10 threads (s3transfer's concurrency).

- resuming that 1500-file scan (issue 12): after a kill (SIGKILL) at about half the files, and when
  every file was uploaded but the scan not completed, against a fresh upload of the whole scan;
  resume must not be slower than starting over, and must say where it stands at once.

``BENCH_UPLOAD_CASES`` (default ``1gib,many,resume``) picks which lines run.

The local S3 is moto (its own process; one Python process, so at most one core) behind the local
S3 proxy (this process), which refuses a body that does not hash to its signed
``x-amz-checksum-sha256`` as S3 does; so the upload API runs with ``verify="storage"`` and does not
read small files back. Both uploaders talk to that same proxy (the peer's ``upload_file`` calls go
through it to the same moto), so the ratio compares clients on the same server; the 1500-file case
also prints boto3 straight to moto, without the proxy hop, for reference. The upload API's handler
runs behind the local gateway in this process; the uploaders are measured as subprocesses, one
after the other, interleaved, in the same run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import BIN, WORK, Measurement, header, measure, record

SIZE = 1024**3
PART_MIB = int(os.environ.get("BENCH_UPLOAD_PART_MIB", "8"))
WORKERS = int(os.environ.get("BENCH_UPLOAD_WORKERS", "4"))
# The machine is shared and noisy: each side runs this many times, interleaved; the best run counts.
REPEAT = int(os.environ.get("BENCH_UPLOAD_REPEAT", "3"))

CASES = os.environ.get("BENCH_UPLOAD_CASES", "1gib,many,resume").split(",")
MANY_WORKERS = os.environ.get("BENCH_UPLOAD_MANY_WORKERS")  # default: the uploader's own
# A run with another part size, worker count or repeat count is an experiment: printed, not
# recorded as the README table's row.
DEFAULTS = not any(
    os.environ.get(f"BENCH_UPLOAD_{name}") for name in ("PART_MIB", "WORKERS", "REPEAT", "MANY_WORKERS")
)


def record_row(row: str, **figures: Any) -> None:
    """:func:`common.record`, for a run with the default settings only."""
    if DEFAULTS:
        record(row, **figures)
    else:
        print(f"  (not recorded: BENCH_UPLOAD_* settings differ from the defaults) {row}")


BOTO3_UPLOAD_MANY = """
import sys, boto3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
root = Path(sys.argv[2])
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
files = sorted(p for p in root.rglob("*.dcm"))
with ThreadPoolExecutor(max_workers=10) as pool:
    def one(p):
        s3.upload_file(str(p), sys.argv[3], "peer/" + p.relative_to(root).as_posix())
    list(pool.map(one, files))
"""

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
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)  # type: ignore[attr-defined]
    for page in pages:  # a 1500-file scan is more than one page
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])  # type: ignore[attr-defined]


def _many_scan(folder: Path) -> tuple[Path, int, int]:
    """The 1500-file phantom (made once, kept under .bench), without a journal."""
    if not (folder / "manifest.json").exists():
        subprocess.run(
            [BIN / "dicomflow", "phantom", folder, "--phases", "10", "--slices", "150", "--size", "512"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    for name in (".dicomflow-upload.json", ".dicomflow-upload.parts"):
        (folder / name).unlink(missing_ok=True)
    files = list(folder.rglob("*.dcm"))
    return folder, len(files), sum(f.stat().st_size for f in files)


def _ours_cmd(folder: Path, api_url: str, workers: str | None, part_mib: int) -> list[object]:
    cmd: list[object] = [BIN / "dicomflow", "upload", folder, "--api", api_url]
    if workers:
        cmd += ["--workers", workers]
    return [
        *cmd,
        "--part-size-mib",
        str(part_mib),
        "--device-id",
        "bench-01",
        "--scan-type",
        "4d-ct",
        "--quiet",
    ]


def _interleaved(
    ours: tuple[str, list[object], object], *theirs: tuple[str, list[object], object], empty: object
) -> tuple[list[Measurement], ...]:
    """Each side REPEAT times, the order rotating, so no side always meets a warmer or a busier
    server; ``ours[2]`` prepares before each of our runs, each peer's ``[2]`` checks after its run."""
    sides = [ours, *theirs]
    runs: list[list[Measurement]] = [[] for _ in sides]
    env = _env()
    for i in range(REPEAT):
        order = list(range(len(sides)))
        order = order[i % len(order) :] + order[: i % len(order)]
        for who in order:
            name, cmd, hook = sides[who]
            if who == 0:
                hook()  # type: ignore[operator]
                runs[0].append(measure(name, cmd, env=env))  # type: ignore[arg-type]
            else:
                runs[who].append(measure(name, cmd, env=env))  # type: ignore[arg-type]
                hook()  # type: ignore[operator]
            empty()  # type: ignore[operator]  # moto keeps objects in memory and /tmp: same start
    return tuple(runs)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def _runs(ours: list[Measurement], theirs: list[Measurement]) -> str:
    return (
        f"  runs (s): dicomflow {', '.join(f'{m.wall_s:.1f}' for m in ours)}; "
        f"boto3 {', '.join(f'{m.wall_s:.1f}' for m in theirs)} (best of {REPEAT} counts)"
    )


def main() -> int:
    from dicomflow.local.moto_server import LocalAws
    from dicomflow.local.stack import start_upload_stack

    header("upload: dicomflow upload vs boto3 (1 GiB file; 1500-file 4D-CT scan; its resume; local moto)")
    work = WORK / "upload"
    env = _env()
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
        with start_upload_stack(
            local=local, part_size=PART_MIB * 1024**2, with_proxy=True, upload_verify="storage"
        ) as stack:
            # The upload API's INFO lines ("scan created", ...) would fall between the figures.
            logging.getLogger("upload-api").setLevel(logging.WARNING)
            s3 = local.client("s3")
            assert stack.proxy is not None and stack.proxy.verify_checksums
            s3_url = stack.proxy.url  # what both uploaders talk to

            def empty() -> None:
                _empty(s3, local.ingest_bucket)

            if "1gib" in CASES:
                path = _scan(work / "scan")
                ours_runs, theirs_runs = _interleaved(
                    (
                        "dicomflow upload",
                        _ours_cmd(path.parent, stack.api_url, str(WORKERS), PART_MIB),
                        lambda: _scan(work / "scan"),  # no journal: a fresh upload every time
                    ),
                    (
                        "boto3 upload_file",
                        [
                            BIN / "python",
                            "-c",
                            BOTO3_UPLOAD,
                            s3_url,
                            path,
                            local.ingest_bucket,
                            "peer/v",
                        ],
                        lambda: _check_size(s3, local.ingest_bucket, "peer/v", SIZE),
                    ),
                    empty=empty,
                )
                _report_1gib(ours_runs, theirs_runs)
            if "many" in CASES:
                folder, count, total = _many_scan(work / "scan1500")
                peer = [BIN / "python", "-c", BOTO3_UPLOAD_MANY]
                ours_runs, theirs_runs, direct_runs = _interleaved(
                    (
                        "dicomflow upload (1500 files)",
                        _ours_cmd(folder, stack.api_url, MANY_WORKERS, PART_MIB),
                        lambda: _many_scan(folder),
                    ),
                    (
                        "boto3 upload_file x 1500",
                        [*peer, s3_url, folder, local.ingest_bucket],
                        lambda: _check_count(s3, local.ingest_bucket, count),
                    ),
                    (
                        "boto3 upload_file x 1500, straight to moto",
                        [*peer, local.endpoint_url, folder, local.ingest_bucket],
                        lambda: _check_count(s3, local.ingest_bucket, count),
                    ),
                    empty=empty,
                )
                _report_many(ours_runs, theirs_runs, direct_runs, count, total)
            if "resume" in CASES:
                folder, count, _ = _many_scan(work / "scan1500")
                _report_resume(_resume_runs(folder, count, stack.api_url, empty), count)
    finally:
        if moto.stdin:
            moto.stdin.close()
        moto.wait(timeout=60)
    return 0


# Uploads every file of the scan, then stops before the scan's own completion (as a device that
# lost power at the last request): what resuming "all files done, scan not completed" starts from.
STOP_BEFORE_SCAN_COMPLETION = """
import sys
from dicomflow.cli import main
from dicomflow.errors import UploadError
from dicomflow.upload.device import ApiClient
original = ApiClient.call
def call(self, method, path, body=None):
    if method == "POST" and path.endswith("/complete") and "/files/" not in path:
        raise UploadError("stopped before the scan's completion")
    return original(self, method, path, body)
ApiClient.call = call
sys.exit(0 if main(sys.argv[1:]) == 1 else 1)  # the upload command, stopped at its last request
"""


@dataclass
class _Resume:
    fresh_s: float
    killed_at: int  # parts journaled when the first run was killed
    resume_s: float
    first_line_s: float  # from the resume's start to its first line on stderr
    done_resume_s: float  # every file uploaded, the scan not completed


def _journaled(folder: Path) -> int:
    try:
        return (folder / ".dicomflow-upload.parts").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _first_line_and_wall(cmd: list[object], env: dict[str, str]) -> tuple[float, float]:
    """Wall time of ``cmd`` (with progress output on) and when its first stderr line came."""
    start = time.perf_counter()
    proc = subprocess.Popen([str(c) for c in cmd], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    first_s = time.perf_counter() - start
    rest = proc.stderr.read()
    code = proc.wait()
    wall = time.perf_counter() - start
    if code != 0 or not first:
        raise RuntimeError(f"resume exited {code}: {(first + rest)[-2000:]!r}")
    return wall, first_s


def _resume_runs(folder: Path, count: int, api_url: str, empty: object) -> list[_Resume]:
    env = _env()
    quiet = _ours_cmd(folder, api_url, MANY_WORKERS, PART_MIB)
    loud = [c for c in quiet if c != "--quiet"]
    runs = []
    for _ in range(REPEAT):
        _many_scan(folder)
        fresh = measure("dicomflow upload (1500 files, fresh)", quiet, env=env).wall_s
        empty()  # type: ignore[operator]
        # A kill at about half the files, then the same command again
        _many_scan(folder)
        proc = subprocess.Popen([str(c) for c in quiet], env=env, stdout=subprocess.DEVNULL)
        while _journaled(folder) < count // 2 and proc.poll() is None:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = _journaled(folder)
        resume_s, first_s = _first_line_and_wall(loud, env)
        empty()  # type: ignore[operator]
        # Every file uploaded and completed, the scan not: the same command again
        _many_scan(folder)
        subprocess.run(
            [BIN / "python", "-c", STOP_BEFORE_SCAN_COMPLETION, *quiet[1:]],
            env=env,
            check=True,
            stderr=subprocess.DEVNULL,
        )
        done_s = measure("dicomflow upload (1500 files, all done, resume)", quiet, env=env).wall_s
        empty()  # type: ignore[operator]
        runs.append(_Resume(fresh, killed_at, resume_s, first_s, done_s))
    return runs


def _report_resume(runs: list[_Resume], count: int) -> None:
    fresh = min(r.fresh_s for r in runs)
    killed = min(runs, key=lambda r: r.resume_s)
    done = min(r.done_resume_s for r in runs)
    first = max(r.first_line_s for r in runs)
    print(
        "  resume: one GET /scans/{id}?files_from=0&urls=1 tells every file's state (ListParts only for "
        "multipart files in progress) and hands out the URLs of the single PUTs still to send"
    )
    print(
        "  runs (s): fresh "
        + ", ".join(f"{r.fresh_s:.1f}" for r in runs)
        + "; resume after kill "
        + ", ".join(f"{r.resume_s:.1f} (killed at {r.killed_at} of {count})" for r in runs)
        + "; resume all done "
        + ", ".join(f"{r.done_resume_s:.1f}" for r in runs)
        + f" (best of {REPEAT} counts)"
    )
    print(f"  resume's first line on stderr after {first:.2f} s at most (worst of {REPEAT})")
    met = killed.resume_s <= fresh and done <= fresh
    print(
        f"resume {count} files: after a kill at ~50% {killed.resume_s:.1f} s, all files done "
        f"{done:.1f} s, vs fresh upload {fresh:.1f} s: {killed.resume_s / fresh:.2f}x and "
        f"{done / fresh:.2f}x of fresh (resume <= fresh: {'met' if met else 'NOT MET'}; {_load()})",
        flush=True,
    )
    record_row(
        "resume a 1500-file scan after kill",
        ours=(
            f"after a kill at ~50%: {killed.resume_s:.1f} s; every file sent, scan not completed: "
            f"{done:.1f} s; first line after {first:.2f} s"
        ),
        peer=f"a fresh upload of the same scan {fresh:.1f} s",
        ratio=f"{killed.resume_s / fresh:.2f}x and {done / fresh:.2f}x of fresh",
        target="<= a fresh upload",
        met=met,
        detail=f"best of {REPEAT}",
    )


def _check_size(s3: object, bucket: str, key: str, size: int) -> None:
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == size  # type: ignore[attr-defined]


def _check_count(s3: object, bucket: str, count: int) -> None:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="peer/")  # type: ignore[attr-defined]
    assert sum(len(page.get("Contents", [])) for page in pages) == count


def _load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def _report_1gib(ours_runs: list[Measurement], theirs_runs: list[Measurement]) -> None:
    ours = min(ours_runs, key=lambda m: m.wall_s)
    theirs = min(theirs_runs, key=lambda m: m.wall_s)
    rss = max(m.peak_rss_mb for m in ours_runs)
    mb = SIZE / 1e6
    print(
        f"  dicomflow: {WORKERS} workers, {PART_MIB} MiB parts; one read hashes the file (manifest "
        "SHA-256 and part SHA-256s), parts signed with their SHA-256 (checked by the proxy), storage's "
        f"composite SHA-256 checked at completion; peak RSS {rss:.0f} MB (worst of {REPEAT})"
    )
    print(
        f"  boto3 upload_file: s3transfer defaults, through the same proxy; peak RSS "
        f"{theirs.peak_rss_mb:.0f} MB"
    )
    print(_runs(ours_runs, theirs_runs))
    rounds = ", ".join(f"{t.wall_s / o.wall_s:.2f}x" for o, t in zip(ours_runs, theirs_runs, strict=True))
    print(f"  ratio in each round: {rounds}")
    ratio = theirs.wall_s / ours.wall_s
    met = ratio >= 1.0 and rss <= 200
    print(
        f"upload 1 GiB: dicomflow {ours.wall_s:.1f} s ({ours.rate(mb):.0f} MB/s, {rss:.0f} MB) vs boto3 "
        f"upload_file {theirs.wall_s:.1f} s ({theirs.rate(mb):.0f} MB/s): {ratio:.2f}x "
        f"(>= 1.0x and <= 200 MB: {'met' if met else 'NOT MET'}; {_load()})",
        flush=True,
    )
    record_row(
        "upload one 1 GiB file",
        ours=f"{ours.wall_s:.1f} s ({ours.rate(mb):.0f} MB/s), peak RSS {rss:.0f} MB",
        peer=f"boto3 upload_file {theirs.wall_s:.1f} s ({theirs.rate(mb):.0f} MB/s), same proxy and moto",
        ratio=f"{ratio:.2f}x (rounds {rounds})",
        target=">= 1.0x boto3, RSS <= 200 MB",
        met=met,
        detail=f"best of {REPEAT}, interleaved; {WORKERS} workers, {PART_MIB} MiB parts",
    )


def _report_many(
    ours_runs: list[Measurement],
    theirs_runs: list[Measurement],
    direct_runs: list[Measurement],
    count: int,
    total: int,
) -> None:
    ours = min(ours_runs, key=lambda m: m.wall_s)
    theirs = min(theirs_runs, key=lambda m: m.wall_s)
    direct = min(direct_runs, key=lambda m: m.wall_s)
    mb = total / 1e6
    workers = MANY_WORKERS or "default"
    print(
        f"  dicomflow: {workers} workers; manifest hashed, one presigned PUT per file with its SHA-256 "
        "(checked by the proxy as S3 does), files completed 100 a request from one listing, no "
        f"read-back; peak RSS {ours.peak_rss_mb:.0f} MB"
    )
    print(
        f"  boto3: upload_file per file from 10 threads, through the same proxy; peak RSS "
        f"{theirs.peak_rss_mb:.0f} MB; straight to moto (no proxy hop) "
        + ", ".join(f"{m.wall_s:.1f}" for m in direct_runs)
        + " s"
    )
    print(_runs(ours_runs, theirs_runs))
    ratio = theirs.wall_s / ours.wall_s
    print(
        f"upload {count} files ({mb:.0f} MB): dicomflow {ours.wall_s:.1f} s ({ours.rate(mb):.0f} MB/s) "
        f"vs boto3 {theirs.wall_s:.1f} s: {ratio:.2f}x (>= 1.0x: {'met' if ratio >= 1.0 else 'NOT MET'}); "
        f"vs boto3 straight to moto {direct.wall_s:.1f} s: {direct.wall_s / ours.wall_s:.2f}x ({_load()})",
        flush=True,
    )
    record_row(
        "upload a 1500-file scan through the local stack",
        ours=f"{ours.wall_s:.1f} s ({ours.rate(mb):.0f} MB/s, {mb:.0f} MB)",
        peer=(
            f"boto3 upload_file, 10 threads, same proxy and moto: {theirs.wall_s:.1f} s "
            f"({theirs.rate(mb):.0f} MB/s); straight to moto {direct.wall_s:.1f} s"
        ),
        ratio=f"{ratio:.2f}x ({direct.wall_s / ours.wall_s:.2f}x of boto3 straight to moto)",
        target=">= 1.0x boto3",
        met=ratio >= 1.0,
        detail=f"best of {REPEAT}, interleaved",
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
