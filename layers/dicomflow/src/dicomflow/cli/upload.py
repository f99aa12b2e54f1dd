"""``dicomflow upload SCAN_DIR --api URL``: upload a scan folder, resumably.

Scan metadata comes from ``--metadata`` / ``--device-id`` / ``--scan-type``, else from the device's
``manifest.json`` in SCAN_DIR, whose file list then also says which files make the scan (a
sidecar such as the phantom's ``ground_truth.json`` is not uploaded). Without a manifest, every
file in the folder is part of the scan.

Exit status: 0 uploaded (or already uploaded, as the server confirms), 1 failed (the message says
what to do), 2 a bad flag (refused while parsing: ``--part-size-mib`` 5..5120, S3's part sizes;
``--workers`` 1..64), 130 interrupted (the same command resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

MIN_PART_MIB = 5  # S3's smallest part (but the last)
MAX_PART_MIB = 5 * 1024  # S3's largest part
MAX_WORKERS = 64  # as dicomflow.upload.device.MAX_WORKERS (not imported: registering stays light)


def _whole(low: int, high: int) -> Any:
    """An argparse ``type=``: a whole number from ``low`` to ``high``, else one line saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a whole number from {low} to {high}, not {text!r}"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, not {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds from 1 to 3600, not {text!r}"
        ) from None
    if not 1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be a number of seconds from 1 to 3600, not {value:g}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "upload",
        help="upload a scan folder through the upload API (resumable)",
        description="Upload every file of SCAN_DIR as one scan: builds the manifest, uploads parts in "
        "parallel through presigned URLs, and resumes from the journal in SCAN_DIR after a crash, a "
        "kill or a reboot (run the same command again).",
    )
    parser.add_argument("scan_dir", type=Path, metavar="SCAN_DIR")
    parser.add_argument(
        "--api",
        default=os.environ.get("DICOMFLOW_API_URL"),
        help="the upload API's URL (default: $DICOMFLOW_API_URL)",
    )
    parser.add_argument(
        "--workers",
        type=_whole(1, MAX_WORKERS),
        default=None,
        help=f"parts in flight at once, 1..{MAX_WORKERS} (default 4, or 10 when most files are small "
        "enough for one PUT)",
    )
    parser.add_argument(
        "--part-size-mib",
        type=_whole(MIN_PART_MIB, MAX_PART_MIB),
        default=None,
        help=f"part size to propose, in MiB, {MIN_PART_MIB}..{MAX_PART_MIB} as S3 allows (default 8; "
        "the API may choose another)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        help="seconds any request may stay silent before it is retried (default 60)",
    )
    parser.add_argument(
        "--metadata",
        help="scan metadata: a JSON file or inline JSON with device_id, "
        "scan_type and optionally device_settings (default: SCAN_DIR/manifest.json if present)",
    )
    parser.add_argument("--device-id", help="the device's id (instead of --metadata)")
    parser.add_argument("--scan-type", help="4d-ct, inspiration-hold or expiration-hold")
    parser.add_argument(
        "--token",
        default=os.environ.get("DICOMFLOW_API_TOKEN"),
        help="the local API's token, printed by dicomflow local-api (default: $DICOMFLOW_API_TOKEN); "
        "an API in AWS takes SigV4 credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY instead",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def _metadata(args: argparse.Namespace) -> dict[str, Any]:
    from dicomflow.errors import UploadError

    data: dict[str, Any] = {}
    if args.metadata:
        text = args.metadata
        if not text.lstrip().startswith("{"):
            try:
                text = Path(text).read_text(encoding="utf-8")
            except OSError as exc:
                raise UploadError(f"--metadata {args.metadata}: cannot read it ({exc.strerror})") from None
        try:
            data = json.loads(text)
        except ValueError:
            raise UploadError("--metadata is not valid JSON") from None
        if not isinstance(data, dict):
            raise UploadError("--metadata must be a JSON object with device_id and scan_type")
    if args.device_id:
        data["device_id"] = args.device_id
    if args.scan_type:
        data["scan_type"] = args.scan_type
    manifest = _device_manifest(args.scan_dir)
    if manifest is not None:
        for key in ("device_id", "scan_type", "device_settings", "files"):
            if key in manifest and not data.get(key):
                data[key] = manifest[key]
    missing = [k for k in ("device_id", "scan_type") if not data.get(k)]
    if missing:
        raise UploadError(
            f"scan metadata lacks {', '.join(missing)}: give --device-id and --scan-type, or --metadata"
        )
    unknown = set(data) - {"device_id", "scan_type", "device_settings", "version", "scan_id", "files"}
    if unknown:
        raise UploadError(f"--metadata has unknown fields: {', '.join(sorted(unknown))}")
    return data


def _device_manifest(scan_dir: str) -> dict[str, Any] | None:
    """The device's own ``manifest.json`` in the scan folder, if there is one: it gives the scan's
    metadata and the files that make the scan (anything else in the folder is not uploaded)."""
    from dicomflow.errors import UploadError

    path = Path(scan_dir) / "manifest.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UploadError(f"{path} is not a readable JSON manifest; fix it, or move it away") from None
    if not isinstance(data, dict):
        raise UploadError(f"{path} must be a JSON object with device_id, scan_type and files")
    return data


def run(args: argparse.Namespace) -> int:
    from dicomflow.errors import DicomflowError
    from dicomflow.upload.device import DEFAULT_PART_SIZE, DEFAULT_TIMEOUT_S, Uploader, UploadInterrupted
    from dicomflow.upload.parts import MiB

    command = "dicomflow upload"
    try:
        if not Path(args.scan_dir).is_dir():  # first: nothing else matters until the folder is right
            print(
                f"{command}: {args.scan_dir} is not a folder; give the folder that holds the scan's files",
                file=sys.stderr,
            )
            return 1
        if not args.api:
            print(f"{command}: no API URL; give --api URL or set DICOMFLOW_API_URL", file=sys.stderr)
            return 1
        metadata = _metadata(args)
        uploader = Uploader(
            args.api,
            workers=args.workers,
            token=args.token,
            progress=not args.quiet,
            part_size=args.part_size_mib * MiB if args.part_size_mib else DEFAULT_PART_SIZE,
            timeout=args.timeout or DEFAULT_TIMEOUT_S,
        )
        result = uploader.upload(
            args.scan_dir,
            device_id=metadata["device_id"],
            scan_type=metadata["scan_type"],
            device_settings=metadata.get("device_settings"),
            names=_listed_names(metadata.get("files")),
        )
    except UploadInterrupted as exc:
        print(f"\n{command}: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(
            f"\n{command}: interrupted before the upload started; run the same command again", file=sys.stderr
        )
        return 130
    except DicomflowError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 1
    if result.already_uploaded:
        print(
            f"scan {result.scan_id} was already uploaded ({result.status}, as the upload API confirms); "
            "nothing to do"
        )
        return 0
    rate = result.bytes_sent / result.seconds / 1e6 if result.seconds else 0.0
    print(
        f"scan {result.scan_id} {result.status}: {result.files} file(s), {result.bytes_total} bytes; sent "
        f"{result.parts_sent} part(s) ({result.bytes_sent} bytes) in {result.seconds:.1f} s ({rate:.1f} MB/s)"
        + (f", {result.urls_refreshed} URL(s) refreshed" if result.urls_refreshed else "")
        + (f", {result.retries} retr{'y' if result.retries == 1 else 'ies'}" if result.retries else "")
        + (" (resumed)" if result.resumed else "")
    )
    return 0


def _listed_names(files: Any) -> list[str] | None:
    from dicomflow.errors import UploadError

    if files is None:
        return None
    if not isinstance(files, list) or not all(
        isinstance(f, dict) and isinstance(f.get("name"), str) for f in files
    ):
        raise UploadError("the manifest's files must be a list of objects with a name")
    return [f["name"] for f in files]
