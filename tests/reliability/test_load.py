"""Load: several devices upload at once to the local stack; every scan completes and nothing crosses.

Given the local stack (``start_workflow_stack``: moto, the real ASL, the handlers in-process, the
analysis entry point as processes) and four tiny phantoms of four different patients (2 phases x
4 slices of 64 x 64), when four devices (one :class:`~dicomflow.upload.device.Uploader` each, in
its own thread) upload them at the same moment, then every scan ends COMPLETED and each scan's
originals, de-identified files, results record, results.json, SEG and SR are its own
(:func:`tests.reliability.isolation.check_isolation`). ``bench/bench_load.py`` runs the same
checks on 20 larger scans and measures the rate.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomflow.local.lambda_runtime import load_handler
from dicomflow.local.workflow_stack import WorkflowStack, start_workflow_stack
from dicomflow.phantom import generate_phantom
from dicomflow.upload.device import ApiClient, Uploader
from tests.reliability.isolation import (
    BATCH_STEPS,
    SCAN_STEPS,
    ScanUnderLoad,
    check_isolation,
    check_step_logs,
    distinct_patients,
)

TOKEN = "load-token"
STEPS = SCAN_STEPS + BATCH_STEPS
DEVICES = 4
#: Seeds whose phantoms have four different patients (names and IDs; checked below).
SEEDS = (11, 12, 13, 14)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkflowStack]:
    running = start_workflow_stack(token=TOKEN, data_dir=tmp_path_factory.mktemp("local"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> list[ScanUnderLoad]:
    root = tmp_path_factory.mktemp("devices")
    made = []
    for seed in SEEDS:
        folder = root / f"device-{seed}"
        generate_phantom(folder, phases=2, slices=4, size=64, seed=seed, workers=1)
        made.append(ScanUnderLoad(folder))
    return made


def upload_at_once(stack: WorkflowStack, scans: list[ScanUnderLoad]) -> list[BaseException]:
    """Each scan uploaded by its own device, all released at the same moment."""
    start = threading.Barrier(len(scans))
    errors: list[BaseException] = []

    def device(n: int, scan: ScanUnderLoad) -> None:
        try:
            names = [f["name"] for f in scan.manifest["files"]]
            start.wait(timeout=30)
            result = Uploader(stack.api_url, token=TOKEN, progress=False).upload(
                scan.folder, device_id=f"ct-{n:02d}", scan_type="4d-ct", names=names
            )
            scan.scan_id = result.scan_id
        except BaseException as exc:  # noqa: BLE001 - reported by the test, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=device, args=(n, s)) for n, s in enumerate(scans)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def handler_log(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Every line the functions' powertools loggers write (they keep the stream they were made
    with and do not propagate, so their handlers' streams are pointed here)."""
    for step in STEPS:  # imported now, so that their loggers exist
        load_handler(f"functions.{step}.handler.lambda_handler")
    buffer = io.StringIO()
    for step in STEPS:
        for handler in logging.getLogger(step).handlers:
            if isinstance(handler, logging.StreamHandler):
                monkeypatch.setattr(handler, "stream", buffer)
    return buffer


def test_devices_uploading_at_once_all_complete_and_nothing_crosses(
    stack: WorkflowStack, scans: list[ScanUnderLoad], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given four phantoms of four different patients, and the functions' log lines caught
    assert distinct_patients(scans)
    log = handler_log(monkeypatch)
    # When four devices upload them at once
    errors = upload_at_once(stack, scans)
    assert not errors, [type(e).__name__ + ": " + str(e) for e in errors]
    # Then each scan's one execution ends, and every scan is COMPLETED
    api = ApiClient(stack.api_url, token=TOKEN)
    for scan in scans:
        assert stack.wait(scan.scan_id, timeout_s=240)["status"] == "SUCCEEDED"
        scan.status = api.call("GET", f"/scans/{scan.scan_id}")
    assert [s.status["status"] for s in scans] == ["COMPLETED"] * DEVICES
    assert len({e["name"] for e in stack.executions()}) == DEVICES
    # And nothing crossed: keys, counts, UIDs, pseudonyms, results and planted values are each scan's own
    assert check_isolation(stack.client("s3"), buckets(stack), scans) == []
    # And every function logged its step once for each scan, under that scan's id (in the local
    # stack the invocations of all scans share one process and its loggers)
    assert check_step_logs(log.getvalue(), scans) == []


def buckets(stack: WorkflowStack) -> dict[str, str]:
    return {role: stack.topology.bucket(role) for role in ("ingest", "deidentified", "results")}


def test_the_checks_see_a_crossing(stack: WorkflowStack, scans: list[ScanUnderLoad], tmp_path: Path) -> None:
    """The checks are not vacuous: a file of one scan copied into another's de-identified prefix,
    and scan 0's SEG swapped for scan 1's, are both found."""
    if not all(s.status.get("status") == "COMPLETED" for s in scans):
        pytest.skip("needs the completed scans of the test above")
    s3, names = stack.client("s3"), buckets(stack)
    first, second = scans[0], scans[1]
    deid, results = names["deidentified"], names["results"]
    intruder = f"scans/{first.scan_id}/00000.dcm"
    target = f"scans/{second.scan_id}/00099.dcm"
    seg0, seg1 = (s.status["results"]["outputs"]["seg"] for s in (first, second))
    saved_seg0 = s3.get_object(Bucket=results, Key=seg0)["Body"].read()
    s3.copy_object(Bucket=deid, Key=target, CopySource={"Bucket": deid, "Key": intruder})
    s3.copy_object(Bucket=results, Key=seg0, CopySource={"Bucket": results, "Key": seg1})
    try:
        problems = check_isolation(s3, names, scans)
    finally:
        s3.delete_object(Bucket=deid, Key=target)
        s3.put_object(Bucket=results, Key=seg0, Body=saved_seg0)
    assert any("scan #1" in p and "de-identified files" in p for p in problems), problems
    assert any("scans #0 and #1 share" in p for p in problems), problems
    assert any("scan #0: its seg names another patient" in p for p in problems), problems
    assert any("scan #0: its seg references" in p for p in problems), problems
    assert check_isolation(s3, names, scans) == []
    # And a log without the steps' lines is found short for every step of every scan
    assert len(check_step_logs("", scans)) == len(scans) * len(STEPS)
