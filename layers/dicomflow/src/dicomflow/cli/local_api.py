"""``dicomflow local-api``: the upload API on localhost against an embedded moto, for manual use.

Starts moto (bucket, key, table), serves the upload handler through the local gateway and prints
the URL and token to give ``dicomflow upload``. Stops on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import secrets
import time
from pathlib import Path
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


def load_upload_handler() -> Any:
    """The upload Lambda's handler module (``functions/upload_api/handler.py`` of the checkout)."""
    try:
        return importlib.import_module("functions.upload_api.handler")
    except ImportError:
        path = Path(__file__).resolve().parents[5] / "functions" / "upload_api" / "handler.py"
        spec = importlib.util.spec_from_file_location("dicomflow_upload_api_handler", path)
        if spec is None or spec.loader is None:
            raise
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


def run(args: argparse.Namespace) -> int:
    import os

    from dicomflow.local.gateway import LocalGateway
    from dicomflow.local.moto_server import start_local_aws
    from dicomflow.settings import get_settings

    local = start_local_aws()
    os.environ.update(local.settings_env())
    get_settings.cache_clear()
    handler = load_upload_handler()
    token = None if args.no_token else secrets.token_urlsafe(16)
    gateway = LocalGateway(handler.lambda_handler, port=args.port, token=token).start()
    print(f"upload API: {gateway.url}   (moto: {local.endpoint_url})")
    if token:
        print(f"token:      export DICOMFLOW_API_TOKEN={token}")
    print(f"try:        dicomflow upload SCAN_DIR --api {gateway.url} --device-id ct-01 --scan-type 4d-ct")
    print("Ctrl-C stops.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        gateway.stop()
        local.stop()
    return 0
