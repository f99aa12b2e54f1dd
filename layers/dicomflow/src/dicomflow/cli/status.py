"""``dicomflow status SCAN_ID``: where a scan is, how it got there, why it stopped, where its results are.

Reads ``GET /scans/{id}`` of the upload API (the scan's record: status, history with times, the
reasons of a rejection per file, the results' location). ``--watch`` follows it until it ends
(COMPLETED, REJECTED or FAILED), a line per change; ``--json`` prints the API's answer as JSON (one
line per change with ``--watch``), for scripts. Files are named by their position in the scan
(``files[3]``) and their object key: the API never stores a device's file names outside the manifest.

Exit status: 0; with ``--watch``, 0 when the scan COMPLETED and 1 when it was REJECTED or FAILED.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from typing import Any

TERMINAL = ("COMPLETED", "REJECTED", "FAILED")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="a scan's state, history, reasons and results (from the upload API)",
        description="Show a scan's status, its history with times, per-file reasons of a rejection "
        "and where its results are.",
    )
    parser.add_argument("scan_id", metavar="SCAN_ID")
    parser.add_argument(
        "--api",
        default=os.environ.get("DICOMFLOW_API_URL"),
        help="the upload API's URL (default: $DICOMFLOW_API_URL)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("DICOMFLOW_API_TOKEN"),
        help="the local API's token, printed by dicomflow local up (default: $DICOMFLOW_API_TOKEN)",
    )
    parser.add_argument("--watch", action="store_true", help="follow the scan until it ends")
    parser.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    parser.add_argument(
        "--interval", type=_seconds, default=1.0, help="seconds between polls with --watch (default 1)"
    )
    parser.set_defaults(func=run)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be from 0.05 to 3600 seconds, not {value}")
    return value


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None


def history_lines(history: list[dict[str, Any]]) -> list[str]:
    """One line per status change, with the time spent in the status before it.

    Examples
    --------
    >>> history_lines([{"status": "UPLOADED", "at": "2026-01-01T10:00:00Z"},
    ...                {"status": "VALIDATING", "at": "2026-01-01T10:00:02Z"}])
    ['2026-01-01T10:00:00Z  UPLOADED', '2026-01-01T10:00:02Z  VALIDATING     (+2 s)']
    """
    lines = []
    previous: datetime | None = None
    for entry in history:
        at = _time(entry.get("at"))
        line = f"{entry.get('at', '?')}  {entry.get('status', '?')}"
        if at is not None and previous is not None:
            line = f"{line:<36} (+{int((at - previous).total_seconds())} s)"
        previous = at or previous
        lines.append(line)
    return lines


def reason_lines(status: dict[str, Any]) -> list[str]:
    """The per-file reasons (and caught errors) of the last transition."""
    history = status.get("history") or []
    reasons = history[-1].get("reasons", []) if history else []
    lines = []
    for reason in reasons:
        if "index" in reason:
            codes = ", ".join(reason.get("codes", []))
            lines.append(f"files[{reason['index']}]  {codes}  ({reason.get('key', '')})")
        elif "error" in reason:
            lines.append(f"{reason['error']}: {reason.get('reason', '')}")
    return lines


def result_lines(status: dict[str, Any]) -> list[str]:
    results = status.get("results") or {}
    bucket = results.get("bucket")
    if not bucket:
        return []
    lines = [f"s3://{bucket}/{results.get('prefix', '')}"]
    for name, key in sorted((results.get("outputs") or {}).items()):
        lines.append(f"{name:<8} s3://{bucket}/{key}")
    return lines


def render(status: dict[str, Any]) -> str:
    """The human view of a scan's status answer."""
    out = [f"scan {status.get('scan_id')}: {status.get('status')}"]
    total = status.get("files_total")
    if total is not None:
        out.append(
            f"  files    {status.get('files_complete', 0)} of {total} uploaded, "
            f"{status.get('bytes_uploaded', 0)} of {status.get('bytes_total', 0)} bytes"
        )
    if status.get("reason"):
        out.append(f"  reason   {status['reason']}")
    lines = history_lines(status.get("history") or [])
    if lines:
        out.append("  history")
        out += [f"    {line}" for line in lines]
    lines = reason_lines(status)
    if lines:
        out.append("  reasons")
        out += [f"    {line}" for line in lines]
    lines = result_lines(status)
    if lines:
        out.append("  results")
        out += [f"    {line}" for line in lines]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from dicomflow.upload.device import ApiClient, AwsCredentials

    if not args.api:
        print("dicomflow status: no API URL; give --api URL or set DICOMFLOW_API_URL", file=sys.stderr)
        return 2
    client = ApiClient(args.api, token=args.token, credentials=AwsCredentials.from_env())
    path = f"/scans/{args.scan_id}"
    if not args.watch:
        status = client.call("GET", path)
        print(json.dumps(status, indent=2) if args.json else render(status))
        return 0
    last: tuple[str, int] | None = None
    while True:
        status = client.call("GET", path)
        seen = (str(status.get("status")), len(status.get("history") or []))
        if seen != last:
            if args.json:
                print(json.dumps(status), flush=True)
            elif last is None or status.get("status") in TERMINAL:
                print(render(status), flush=True)
            else:
                print(f"{time.strftime('%H:%M:%S')}  {status.get('status')}", flush=True)
            last = seen
        if status.get("status") in TERMINAL:
            return 0 if status.get("status") == "COMPLETED" else 1
        time.sleep(args.interval)
