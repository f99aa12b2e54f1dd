"""The analysis container's entry point: one scan in, results out, a last JSON line says how it went.

The ECS task (and the local stack, as a plain process) passes the scan by arguments or environment:

- ``--scan-id`` / ``DICOMFLOW_SCAN_ID``: the scan id (recorded in results.json);
- ``--input`` / ``DICOMFLOW_INPUT_URI``: the de-identified files, ``s3://bucket/prefix/`` or a folder;
- ``--manifest`` / ``DICOMFLOW_MANIFEST_URI``: optional ``manifest.json`` of the scan, beside the files
  (default: ``<input>/manifest.json`` if present, else every non-JSON object under the input);
- ``--output`` / ``DICOMFLOW_OUTPUT_URI``: where results go, ``s3://bucket/prefix/`` or a folder;
- ``--model`` / ``DICOMFLOW_MODEL_URI``: optional ONNX model (``s3://`` or a path) replacing the packaged
  one, with ``--model-sha256`` / ``DICOMFLOW_MODEL_SHA256``, the SHA-256 it must have;
- ``--threads`` / ``DICOMFLOW_ANALYSIS_THREADS``: onnxruntime threads (default: the cores).

``DICOMFLOW_AWS_ENDPOINT_URL`` and ``DICOMFLOW_REGION`` (dicomflow's settings) point S3 at the
embedded moto server locally. Exit status 0 and ``{"status": "succeeded", ...}`` on success; 1 and
``{"status": "failed", "reason": ..., "error": <class name>}`` otherwise (the workflow records the
reason; messages never carry patient data).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def _store(uri: str) -> tuple[Any, str]:
    """An object store and key prefix for ``s3://bucket/prefix`` or a local folder."""
    from dicomflow.settings import get_settings
    from dicomflow.storage import LocalObjectStore, S3ObjectStore

    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        settings = get_settings()
        store = S3ObjectStore(
            parsed.netloc,
            kms_key_id=settings.kms_key_id,
            endpoint_url=settings.aws_endpoint_url,
            region=settings.region,
        )
        return store, parsed.path.lstrip("/")
    if parsed.scheme not in ("", "file"):
        from dicomflow.errors import ConfigurationError

        raise ConfigurationError(f"location scheme {parsed.scheme!r} is not supported: use s3:// or a folder")
    return LocalObjectStore(Path(parsed.path if parsed.scheme == "file" else uri)), ""


def _manifest_key(manifest_uri: str, input_uri: str) -> str:
    """The manifest's key in the input's store: it must live beside the files it lists."""
    from dicomflow.errors import ConfigurationError

    manifest, data = urlparse(manifest_uri), urlparse(input_uri)
    if (manifest.scheme == "s3") != (data.scheme == "s3") or manifest.netloc != data.netloc:
        raise ConfigurationError("the manifest must be in the same bucket (or folder tree) as the input")
    if manifest.scheme == "s3":
        return manifest.path.lstrip("/")
    try:
        return Path(manifest_uri).resolve().relative_to(Path(input_uri).resolve()).as_posix()
    except ValueError:
        raise ConfigurationError("a local manifest must be inside the input folder") from None


def _model_path(uri: str, workdir: Path) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        return Path(uri)
    store, key = _store(uri)
    target = workdir / Path(key).name
    with target.open("wb") as fh:
        for chunk in store.iter_chunks(key):
            fh.write(chunk)
    return target


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description="dicomflow lung analysis of one scan (ECS task entry point)")
    parser.add_argument("--scan-id", default=env.get("DICOMFLOW_SCAN_ID"))
    parser.add_argument("--input", default=env.get("DICOMFLOW_INPUT_URI"))
    parser.add_argument("--manifest", default=env.get("DICOMFLOW_MANIFEST_URI"))
    parser.add_argument("--output", default=env.get("DICOMFLOW_OUTPUT_URI"))
    parser.add_argument("--model", default=env.get("DICOMFLOW_MODEL_URI"))
    parser.add_argument("--model-sha256", default=env.get("DICOMFLOW_MODEL_SHA256"))
    parser.add_argument(
        "--threads", type=int, default=int(env.get("DICOMFLOW_ANALYSIS_THREADS") or 0) or None
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from dicomflow.analysis.model import resolve_model
    from dicomflow.analysis.pipeline import analyze_scan
    from dicomflow.errors import ConfigurationError

    for name in ("input", "output"):
        if not getattr(args, name):
            raise ConfigurationError(
                f"the {name} location is missing: pass --{name} or set DICOMFLOW_{name.upper()}_URI"
            )
    source, prefix = _store(args.input)
    dest, out_prefix = _store(args.output)
    manifest_key = None
    if args.manifest:
        manifest_key = _manifest_key(args.manifest, args.input)
    with tempfile.TemporaryDirectory(prefix="dicomflow-model-") as workdir:
        model_path = _model_path(args.model, Path(workdir)) if args.model else None
        spec = resolve_model(model_path, args.model_sha256)
        return analyze_scan(
            source,
            prefix,
            dest,
            out_prefix,
            spec,
            scan_id=args.scan_id,
            manifest_key=manifest_key,
            threads=args.threads,
        )


#: Attempts at the whole analysis when storage fails transiently once the SDK's own retries are
#: spent (the outputs are overwritten, so a repeat is safe): locally the ASL sees only the exit
#: code and cannot retry the task, and in AWS a new task costs a Fargate cold start.
TRANSIENT_ATTEMPTS = 3


def run_retrying(args: argparse.Namespace, sleep: Any = time.sleep) -> dict[str, Any]:
    """:func:`run`, again after a :class:`~dicomflow.errors.TransientStorageError` (full jitter)."""
    import random

    from dicomflow.errors import TransientStorageError

    for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
        try:
            return run(args)
        except TransientStorageError:
            if attempt == TRANSIENT_ATTEMPTS:
                raise
            sleep(random.uniform(0, min(8.0, 2.0**attempt)))
    raise AssertionError("unreachable")  # pragma: no cover


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    try:
        results = run_retrying(args)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a reason the workflow records
        from dicomflow.errors import DicomflowError

        if not isinstance(exc, DicomflowError):
            # A bug, not an expected failure: the operator needs the stack. The input is the
            # de-identified scan, so no patient identity can be in it.
            traceback.print_exc(file=sys.stderr)

        # Our errors' messages are written to be free of patient data; anything else is reported by
        # its class name only, since its message may quote data.
        reason = str(exc) if isinstance(exc, DicomflowError) else f"unexpected {exc.__class__.__name__}"
        line = {
            "status": "failed",
            "scan_id": args.scan_id,
            "error": exc.__class__.__name__,
            "reason": reason,
            "elapsed_s": round(time.perf_counter() - started, 3),
        }
        print(json.dumps(line), flush=True)
        return 1
    vent = results["ventilation"]
    line = {
        "status": "succeeded",
        "scan_id": args.scan_id,
        "reason": None,
        "results": results["outputs"]["results"],
        "outputs": results["outputs"],
        "lung_volume_ml": results["lung_volume_ml"],
        "tidal_volume_ml": results["tidal_volume_ml"],
        "ventilation_defect_percent": vent["defect_percent"],
        "ventilation_heterogeneity_cv": vent["heterogeneity_cv"],
        "model": results["model"],
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
