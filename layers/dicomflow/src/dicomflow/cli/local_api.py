"""``dicomflow local-api``: the upload API on localhost against an embedded moto, for manual use.

Starts moto (bucket, key, table), serves the upload handler through the local gateway and prints
the URL and token to give ``dicomflow upload``. Presigned URLs point at the local S3 proxy, which
behaves as S3 where moto does not (checksums, expiry, no part after an upload completed, no hang).
Stops on Ctrl-C.
"""

from __future__ import annotations

import argparse
import secrets
import time
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "local-api",
        help="serve the upload API on localhost against an embedded moto (no AWS account)",
        description="Start an embedded moto server and the upload API behind a local gateway.",
    )
    parser.add_argument(
        "--port", type=_port, default=8080, help="gateway port, 0..65535 (default 8080; 0 picks one)"
    )
    parser.add_argument("--no-token", action="store_true", help="accept requests without the token")
    parser.set_defaults(func=run)


def _port(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, not {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, not {value}")
    return value


def run(args: argparse.Namespace) -> int:
    import sys

    from dicomflow.local.stack import start_upload_stack

    token = None if args.no_token else secrets.token_urlsafe(16)
    try:
        stack = start_upload_stack(token=token, port=args.port, with_proxy=True)
    except OSError as exc:
        print(
            f"dicomflow local-api: cannot serve on port {args.port} ({exc.strerror or type(exc).__name__}); "
            "give another with --port (0 picks a free one)",
            file=sys.stderr,
        )
        return 1
    print(f"upload API: {stack.api_url}   (moto: {stack.local.endpoint_url})")
    if token:
        print(f"token:      export DICOMFLOW_API_TOKEN={token}")
    print(f"try:        dicomflow upload SCAN_DIR --api {stack.api_url} --device-id ct-01 --scan-type 4d-ct")
    print("Ctrl-C stops.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0
