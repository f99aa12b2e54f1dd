"""``dicomflow local up``: the whole stack on this machine (embedded moto, no account, no Docker).

Starts moto, provisions the topology into it (buckets, keys, tables, bus, functions, the analysis
task, the state machine from the shared ASL), runs Lambda invocations in-process through the real
handlers and the analysis task as a local process, and serves the upload API on localhost: an upload
completed with ``dicomflow upload`` starts the scan's workflow; ``dicomflow status`` follows it. Prints
the endpoints and the token, writes them to ``DATA_DIR/stack.json`` (the analysis tasks' output goes to
``DATA_DIR/tasks/``) and stops cleanly on Ctrl-C (or SIGTERM), removing ``stack.json``. One stack
serves from a DATA_DIR at a time (a lock on ``DATA_DIR/.lock``; a second is refused). Everything
lives in memory: stopping forgets every scan.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import IO, Any

from dicomflow.cli.local_api import _port
from dicomflow.cli.paths import write_text_atomic


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "local",
        help="run the whole stack locally: upload API, workflow, analysis (embedded moto)",
        description="The local stack: `dicomflow local up` starts it.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = actions.add_parser(
        "up",
        help="start the local stack and serve until Ctrl-C",
        description="Start an embedded moto with the topology, the workflow and the upload API.",
    )
    up.add_argument(
        "--port", type=_port, default=8080, help="upload API port, 0..65535 (default 8080; 0 picks one)"
    )
    up.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".dicomflow-local"),
        help="where stack.json and the analysis tasks' logs go (default .dicomflow-local)",
    )
    up.add_argument("--no-token", action="store_true", help="accept API requests without the token")
    up.set_defaults(func=run_up)


def describe(stack: Any) -> dict[str, Any]:
    """What a client needs to use the running stack (written to stack.json)."""
    return {
        "api_url": stack.api_url,
        "token": stack.token,
        "aws_endpoint_url": stack.local.endpoint_url,
        "region": stack.local.region,
        "state_machine_arn": stack.topology.state_machine_arn,
        "buckets": {role: stack.topology.bucket(role) for role in ("ingest", "deidentified", "results")},
    }


def run_up(args: argparse.Namespace) -> int:
    from dicomflow.local.workflow_stack import start_workflow_stack

    token = None if args.no_token else secrets.token_urlsafe(16)
    data_dir: Path = args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = _claim(data_dir)
    if lock is None:
        print(
            f"dicomflow local up: another `dicomflow local up` is serving from {data_dir} (its "
            f"endpoints are in {data_dir / 'stack.json'}); stop it with Ctrl-C, or give this one "
            "another --data-dir",
            file=sys.stderr,
        )
        return 1
    stack_json = data_dir / "stack.json"
    stack_json.unlink(missing_ok=True)  # a stack that died left it; nothing serves what it says
    print("dicomflow local: starting moto and provisioning the topology...", flush=True)
    try:
        stack = start_workflow_stack(token=token, port=args.port, data_dir=data_dir)
    except OSError as exc:
        lock.close()
        print(
            f"dicomflow local up: cannot serve on port {args.port} ({exc.strerror or type(exc).__name__}); "
            "give another with --port (0 picks a free one)",
            file=sys.stderr,
        )
        return 1
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopping.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        info = describe(stack)
        # Written whole, then renamed: a client polling for the file never reads half of it.
        write_text_atomic(stack_json, json.dumps(info, indent=2) + "\n", flag="--data-dir")
        buckets = info["buckets"]
        print(f"upload API:    {stack.api_url}")
        if token:
            print(f"token:         export DICOMFLOW_API_TOKEN={token}")
        print(f"AWS (moto):    {stack.local.endpoint_url}  (region {stack.local.region})")
        print(f"state machine: {stack.topology.state_machine_arn}")
        print(
            f"buckets:       ingest {buckets['ingest']}, de-identified {buckets['deidentified']}, "
            f"results {buckets['results']}"
        )
        print(f"written:       {data_dir / 'stack.json'} (task logs in {data_dir / 'tasks'})")
        print(f"try:           export DICOMFLOW_API_URL={stack.api_url}")
        print("               dicomflow upload SCAN_DIR --device-id ct-01 --scan-type 4d-ct")
        print("               dicomflow status SCAN_ID --watch")
        print("Ctrl-C stops.", flush=True)
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        stack.stop()
        stack_json.unlink(missing_ok=True)  # its endpoints are gone: a client must not find them
        lock.close()
        print("dicomflow local: stopped", flush=True)
    return 0


def _claim(data_dir: Path) -> IO[str] | None:
    """An exclusive lock on ``DATA_DIR/.lock`` for as long as the returned file stays open (the OS
    drops it when the process ends, however it ends), or None when another stack holds it: two
    stacks on one folder would write over each other's stack.json and task logs."""
    handle = open(data_dir / ".lock", "a")  # noqa: SIM115 - held open for the stack's lifetime
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; one stack per folder is then on the user
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle
