"""``dicomflow local-api``: the upload API on localhost against an embedded moto, for manual use.

Starts moto (bucket, key, table), serves the upload handler through the local gateway and prints
the URL and token to give ``dicomflow upload``. Stops on Ctrl-C.
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
    parser.add_argument("--port", type=int, default=8080, help="gateway port (default 8080; 0 picks one)")
    parser.add_argument("--no-token", action="store_true", help="accept requests without the token")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicomflow.local.stack import start_upload_stack

    token = None if args.no_token else secrets.token_urlsafe(16)
    stack = start_upload_stack(token=token, port=args.port)
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
