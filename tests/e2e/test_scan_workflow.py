"""Whole scans through the local stack: the real device uploader over HTTP to the upload API, the
real ASL executed by moto, the real handlers in-process, the analysis entry point as a process.

Given the local stack (``start_workflow_stack``) and a small phantom (2 phases x 6 slices of
64 x 64), when a device uploads it, then completing the upload starts the scan's one execution and
the scan ends COMPLETED with its results, or REJECTED / FAILED with the reasons, originals kept.
Faults are injected on the handlers' own S3 client (botocore events: the handlers run in-process).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from botocore.exceptions import ClientError

from dicomflow.local.workflow_stack import WorkflowStack, start_workflow_stack
from dicomflow.phantom import generate_phantom
from dicomflow.upload.device import Uploader
from dicomflow.workflow.context import step_context
from dicomflow.workflow.quarantine import TAG

TOKEN = "e2e-token"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("phantom") / "scan"
    result = generate_phantom(out, phases=2, slices=6, size=64, workers=1)
    return out, result.ground_truth


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkflowStack]:
    running = start_workflow_stack(token=TOKEN, data_dir=tmp_path_factory.mktemp("local"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture()
def scan_dir(phantom: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    """A fresh copy of the phantom (the device's journal lives in the scan's folder)."""
    folder = tmp_path / "scan"
    shutil.copytree(phantom[0], folder)
    return folder


def names(folder: Path) -> list[str]:
    return [f["name"] for f in json.loads((folder / "manifest.json").read_text())["files"]]


def upload(stack: WorkflowStack, folder: Path, listed: list[str] | None = None) -> str:
    result = Uploader(stack.api_url, token=TOKEN, progress=False).upload(
        folder, device_id="ct-01", scan_type="4d-ct", names=listed or names(folder)
    )
    # Completing the upload started the workflow: it may already have moved the scan on.
    assert result.status != "UPLOADING"
    return result.scan_id


def api(stack: WorkflowStack, method: str, path: str) -> dict[str, Any]:
    request = urllib.request.Request(
        stack.api_url + path,
        method=method,
        data=b"{}" if method == "POST" else None,
        headers={"X-Dicomflow-Token": TOKEN, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def finished(stack: WorkflowStack, scan_id: str) -> dict[str, Any]:
    stack.wait(scan_id, timeout_s=90)
    return api(stack, "GET", f"/scans/{scan_id}")


def objects(stack: WorkflowStack, role: str, prefix: str) -> dict[str, bytes]:
    s3, bucket = stack.client("s3"), stack.topology.bucket(role)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def originals(stack: WorkflowStack, scan_id: str) -> dict[str, bytes]:
    return objects(stack, "ingest", f"scans/{scan_id}/files/")


def stored_manifest(stack: WorkflowStack, scan_id: str) -> dict[str, Any]:
    (body,) = objects(stack, "ingest", f"scans/{scan_id}/manifest.json").values()
    return dict(json.loads(body))


def assert_originals_kept(stack: WorkflowStack, scan_id: str, tag: str | None = None) -> None:
    manifest = stored_manifest(stack, scan_id)
    kept = originals(stack, scan_id)
    s3 = stack.client("s3")
    for entry in manifest["files"]:
        assert hashlib.sha256(kept[entry["key"]]).hexdigest() == entry["sha256"] or tag == "corrupted"
        if tag and tag != "corrupted":
            tags = s3.get_object_tagging(Bucket=stack.topology.bucket("ingest"), Key=entry["key"])["TagSet"]
            assert {"Key": TAG, "Value": tag} in tags


def on_handler_s3(event: str, hook: Callable[..., Any]) -> Callable[[], None]:
    """Register ``hook`` on the handlers' S3 client; returns the unregister."""
    events = step_context().s3.meta.events
    events.register(event, hook)
    return lambda: events.unregister(event, hook)


def test_a_phantom_scan_goes_to_completed(stack: WorkflowStack, scan_dir: Path, phantom) -> None:
    # When the device uploads the phantom
    scan_id = upload(stack, scan_dir)
    status = finished(stack, scan_id)
    # Then the scan is COMPLETED, with every status in its history
    assert status["status"] == "COMPLETED", status
    assert [h["status"] for h in status["history"]] == [
        "UPLOADED", "VALIDATING", "DEIDENTIFYING", "ANALYZING", "COMPLETED",
    ]  # fmt: skip
    # And results.json, the SEG, the SR and the PNG are in the results bucket
    results = objects(stack, "results", f"scans/{scan_id}/")
    outputs = status["results"]["outputs"]
    assert set(outputs) == {"results", "seg", "sr", "preview"}
    assert all(outputs[name] in results for name in outputs)
    assert pydicom.dcmread(io.BytesIO(results[outputs["seg"]])).Modality == "SEG"
    assert pydicom.dcmread(io.BytesIO(results[outputs["sr"]])).Modality == "SR"
    assert results[outputs["preview"]].startswith(b"\x89PNG")
    measured = json.loads(results[outputs["results"]])
    assert measured["scan_id"] == scan_id
    # And the de-identified files are in their bucket, free of every planted identifying value
    deidentified = objects(stack, "deidentified", f"scans/{scan_id}/")
    dicoms = {k: v for k, v in deidentified.items() if k.endswith(".dcm")}
    assert len(dicoms) == 12
    planted = [str(v).upper().encode() for v in phantom[1]["identifying_values"].values()]
    for body in deidentified.values():
        upper = body.upper()
        assert not [v for v in planted if v in upper]
    # And the originals are untouched in ingest, and the execution was named after the scan
    assert_originals_kept(stack, scan_id)
    assert any(e["name"] == scan_id for e in stack.executions())


def test_a_sha256_mismatch_is_rejected_naming_the_file(stack: WorkflowStack, scan_dir: Path) -> None:
    # Given file 3's object corrupted in storage between the upload and the workflow
    service = stack.upload.service
    real = service.processor

    class Corrupting:
        def start(self, scan_id: str, manifest_key: str) -> str:
            key = stored_manifest(stack, scan_id)["files"][3]["key"]
            s3 = stack.client("s3")
            body = bytearray(s3.get_object(Bucket=stack.topology.bucket("ingest"), Key=key)["Body"].read())
            body[-1] ^= 0xFF
            s3.put_object(Bucket=stack.topology.bucket("ingest"), Key=key, Body=bytes(body))
            return real.start(scan_id, manifest_key)

    service.processor = Corrupting()
    try:
        scan_id = upload(stack, scan_dir)
    finally:
        service.processor = real
    status = finished(stack, scan_id)
    # Then the scan is REJECTED, its reason naming file 3 and the code
    assert status["status"] == "REJECTED", status
    assert "files[3] SHA256_MISMATCH" in status["reason"]
    reasons = status["history"][-1]["reasons"]
    assert [r["index"] for r in reasons] == [3] and reasons[0]["codes"] == ["SHA256_MISMATCH"]
    # And the originals are kept (tagged), nothing de-identified, nothing analysed
    assert len(originals(stack, scan_id)) == 12
    assert objects(stack, "deidentified", f"scans/{scan_id}/") == {}
    assert objects(stack, "results", f"scans/{scan_id}/") == {}


def test_a_non_dicom_file_is_rejected(stack: WorkflowStack, scan_dir: Path) -> None:
    listed = names(scan_dir)
    (scan_dir / listed[5]).write_bytes(b"a text file where a DICOM slice should be\n" * 50)
    scan_id = upload(stack, scan_dir, listed)
    status = finished(stack, scan_id)
    assert status["status"] == "REJECTED", status
    assert "files[5] NOT_DICOM" in status["reason"]
    assert_originals_kept(stack, scan_id, tag="REJECTED")


def test_a_burned_in_file_is_held_not_published(stack: WorkflowStack, scan_dir: Path) -> None:
    listed = names(scan_dir)
    ds = pydicom.dcmread(scan_dir / listed[2])
    ds.BurnedInAnnotation = "YES"
    ds.save_as(scan_dir / listed[2])
    scan_id = upload(stack, scan_dir, listed)
    status = finished(stack, scan_id)
    assert status["status"] == "REJECTED", status
    assert "BURNED_IN_HELD" in status["reason"]
    assert list(objects(stack, "ingest", f"scans/{scan_id}/held/")) == [f"scans/{scan_id}/held/00002.dcm"]
    published = objects(stack, "deidentified", f"scans/{scan_id}/")
    assert f"scans/{scan_id}/00002.dcm" not in published
    assert f"scans/{scan_id}/manifest.json" not in published
    assert objects(stack, "results", f"scans/{scan_id}/") == {}
    assert_originals_kept(stack, scan_id, tag="REJECTED")


def test_completing_twice_or_racing_gives_one_execution(stack: WorkflowStack, scan_dir: Path) -> None:
    # Given an uploaded scan
    scan_id = upload(stack, scan_dir)
    # When the device completes it again, and two clients race to complete it
    again = api(stack, "POST", f"/scans/{scan_id}/complete")
    answers: list[dict[str, Any]] = []
    racers = [
        threading.Thread(target=lambda: answers.append(api(stack, "POST", f"/scans/{scan_id}/complete")))
        for _ in range(2)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    # Then every answer is a success, and there is exactly one execution for the scan
    assert again["already_completed"] is True and len(answers) == 2
    assert finished(stack, scan_id)["status"] == "COMPLETED"
    assert [e["name"] for e in stack.executions()].count(scan_id) == 1
    prepared = [e for e in stack.history(scan_id) if e["type"] == "TaskScheduled"]
    assert sum("prepare_scan" in e["taskScheduledEventDetails"]["parameters"] for e in prepared) == 1


def test_a_transient_s3_error_is_retried_and_the_scan_completes(stack: WorkflowStack, scan_dir: Path) -> None:
    # Given S3 answering SlowDown once to the validator's first read of this scan's files
    failed: list[str] = []

    def slow_down(params: dict[str, Any], **kwargs: Any) -> None:
        if "/files/" in str(params.get("Key", "")) and not failed:
            failed.append(params["Key"])
            raise ClientError(
                {"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
                 "ResponseMetadata": {"HTTPStatusCode": 503}},
                "GetObject",
            )  # fmt: skip

    errors_before = stack.dispatcher.errors.get("dicomflow-validate_batch", 0)
    remove = on_handler_s3("before-parameter-build.s3.GetObject", slow_down)
    try:
        scan_id = upload(stack, scan_dir)
        status = finished(stack, scan_id)
    finally:
        remove()
    # Then the batch failed once with TransientStorageError, was retried, and the scan completed
    assert failed and status["status"] == "COMPLETED", status
    assert stack.dispatcher.errors["dicomflow-validate_batch"] == errors_before + 1
    retried = [
        e["taskFailedEventDetails"]["error"] for e in stack.history(scan_id) if e["type"] == "TaskFailed"
    ]
    assert retried == [] or retried == ["TransientStorageError"]  # a Map's children: own history in AWS


def test_a_permanent_s3_error_fails_the_scan_with_the_reason(stack: WorkflowStack, scan_dir: Path) -> None:
    # Given S3 refusing (AccessDenied) every write of this scan's work items
    def access_denied(params: dict[str, Any], **kwargs: Any) -> None:
        if str(params.get("Key", "")).endswith("/work/items.json"):
            raise ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                 "ResponseMetadata": {"HTTPStatusCode": 403}},
                "PutObject",
            )  # fmt: skip

    remove = on_handler_s3("before-parameter-build.s3.PutObject", access_denied)
    try:
        scan_id = upload(stack, scan_dir)
        done = stack.wait(scan_id, timeout_s=90)
        status = api(stack, "GET", f"/scans/{scan_id}")
    finally:
        remove()
    # Then the execution failed, the scan is FAILED with the error named, the originals kept
    assert done["status"] == "FAILED"
    assert status["status"] == "FAILED", status
    assert "StorageError" in status["reason"]
    assert [h["status"] for h in status["history"]][-1] == "FAILED"
    assert_originals_kept(stack, scan_id, tag="FAILED")
