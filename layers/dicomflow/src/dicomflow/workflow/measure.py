"""Measure the S3 de-identifier on one large enhanced multi-frame file (issue 13's acceptance: a
1 GB file reads at most 16 MiB of the source, and its pixel data comes out byte-identical).

Runs the workflow's own per-file step (:func:`dicomflow.workflow.deidentify_batch.deidentify_file`)
against moto in this process (``moto`` is a development dependency, imported here only), on a
phantom made with ``dicomflow.phantom`` (one phase, ``frames`` frames of ``size`` x ``size``,
2 bytes a pixel: 2000 x 512 x 512 is about 1 GB). ``make bench`` and the functional test call it.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from dicomflow.settings import Settings

_REGION = "us-east-1"


def deidentify_multiframe_in_moto(
    workdir: str | os.PathLike[str], *, frames: int = 2000, size: int = 512
) -> dict[str, Any]:
    """De-identify a phantom enhanced multi-frame file from an ingest bucket into a de-identified
    bucket (moto) and return the figures: file and pixel sizes, bytes read from the source, bytes
    copied server side, seconds, and whether the output's pixel data is byte-identical (checked
    here by reading both in full, outside the counted reads)."""
    import boto3
    from moto import mock_aws

    from dicomflow.dicom.header import read_header_from_path, read_header_from_store
    from dicomflow.phantom import generate_phantom
    from dicomflow.workflow.context import StepContext
    from dicomflow.workflow.deidentify_batch import deidentify_file

    out = Path(workdir)
    phantom = out / f"multiframe-{frames}x{size}"
    path = phantom / "phase_00.dcm"
    if not path.exists():
        generate_phantom(phantom, phases=1, slices=frames, size=size, multiframe=True, workers=1)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        s3 = boto3.client("s3", region_name=_REGION)
        for bucket in ("measure-ingest", "measure-deidentified"):
            s3.create_bucket(Bucket=bucket)
        kms = boto3.client("kms", region_name=_REGION)
        key_id = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
        s3.upload_file(str(path), "measure-ingest", "scans/m/files/00000")
        ctx = StepContext(
            Settings(region=_REGION, pseudonym_key_id=key_id, deidentified_bucket="measure-deidentified")
        )
        ingest, output = ctx.store("measure-ingest"), ctx.store("measure-deidentified")
        started = time.perf_counter()
        entry = deidentify_file(ctx, "m", 0, "scans/m/files/00000", ingest, output)
        seconds = time.perf_counter() - started
        identical = False
        if entry["verdict"] == "passed":
            before = read_header_from_path(path)
            after = read_header_from_store(output, entry["destination"])
            length = int(before.pixel_data_length or 0)
            identical = (
                length > 0
                and after.pixel_data_length == length
                and _sha256(output, entry["destination"], int(after.pixel_data_value_offset or 0), length)
                == _file_sha256(path, int(before.pixel_data_value_offset or 0), length)
            )
    return {
        "file_bytes": path.stat().st_size,
        "pixel_bytes": entry["pixel_bytes"],
        "verdict": entry["verdict"],
        "source_bytes_read": entry["source_bytes_read"],
        "bytes_copied_server_side": entry["bytes_copied_server_side"],
        "pixel_proof": entry["pixel_hash_algorithm"],
        "pixels_identical": identical,
        "seconds": round(seconds, 3),
    }


def _sha256(store: Any, key: str, start: int, length: int) -> str:
    digest = hashlib.sha256()
    step = 8 * 1024 * 1024
    for pos in range(start, start + length, step):
        digest.update(store.get_range(key, pos, min(start + length, pos + step)))
    return digest.hexdigest()


def _file_sha256(path: Path, start: int, length: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        fh.seek(start)
        remaining = length
        while remaining:
            chunk = fh.read(min(remaining, 8 * 1024 * 1024))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()
