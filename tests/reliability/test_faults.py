"""Fault injection: AWS errors at chosen points of a scan's workflow on the local stack.

Given the local stack (moto, the real ASL with its Retry/Catch, the handlers in-process, the
analysis entry point as a process) and a tiny phantom (2 phases x 4 slices of 64 x 64), when
S3, KMS or DynamoDB answer a chosen call with an error (:mod:`dicomflow.local.faults`), then:

- an error that is transient and happens once (throttling, a 5xx) is retried and the scan ends
  COMPLETED;
- an error that is permanent (AccessDenied, a disabled key) or transient but persistent ends the
  scan FAILED, with a reason that names the failed operation and its error code, and no PHI.

After every case, :func:`check_invariants` holds. Precisely:

1. **Originals kept.** Every file of the stored manifest (``scans/{id}/manifest.json`` in the
   ingest bucket) is at its ingest key with the manifest's SHA-256, and ``scans/{id}/files/``
   holds exactly those keys.
2. **History legal.** The API's ``history`` is a sequence of lifecycle-allowed transitions
   (:func:`dicomflow.status.can_transition`) from UPLOADED, no status twice, ending in the scan's
   status, which is terminal (no scan is left VALIDATING or ANALYZING by a fault).
3. **Execution agrees.** COMPLETED and REJECTED scans' executions SUCCEEDED, FAILED scans' FAILED.
4. **COMPLETED implies the objects.** The scan has a ``results`` record whose outputs (results,
   seg, sr, preview) are all in the results bucket, results.json names the scan, the SEG and SR
   read as DICOM SEG and SR; the de-identified bucket holds ``scans/{id}/{i:05d}.dcm`` for every
   file of the manifest and the de-identified manifest; no original is tagged for quarantine and
   no reason is recorded.
5. **FAILED / REJECTED implies no publication, originals tagged, reasons recorded.** No
   ``results`` record on the scan (publication is that record and its COMPLETED event; outputs an
   analysis task wrote before a later step failed may sit unreferenced in the results bucket);
   every original is tagged ``dicomflow-quarantine=<status>`` and the record counts them; the
   summary ``reason`` starts with the status and the ``reasons`` list is not empty; a REJECTED scan
   has no de-identified manifest. Neither the reason nor the history holds any identifying value
   planted in the phantom.

A case also proves its fault happened (the injector recorded it): a fault that never fires would
make the case vacuous. Moto's Retry waits are scaled by :data:`RETRY_WAIT_FACTOR` (the ASL's
attempts and backoff unchanged) so that the persistent cases do not sleep the ASL's 15 s.

Reproduce one case: ``pytest tests/reliability/test_faults.py -k kms-disabled -q``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicomflow.local import faults
from dicomflow.local.faults import Fault, FaultInjector
from dicomflow.local.workflow_stack import WorkflowStack, start_workflow_stack
from dicomflow.phantom import generate_phantom
from dicomflow.status import ScanStatus, can_transition
from dicomflow.upload.device import Uploader
from dicomflow.workflow.quarantine import TAG

TOKEN = "faults-token"
RETRY_WAIT_FACTOR = 0.05
SCANS = "dicomflow-scans"
IDEMPOTENCY = "dicomflow-idempotency"

VALIDATE = "dicomflow-validate_batch"
VALIDATE_SCAN = "dicomflow-validate_scan"
PREPARE = "dicomflow-prepare_scan"
DEIDENTIFY = "dicomflow-deidentify_batch"
PUBLISH = "dicomflow-publish"
QUARANTINE = "dicomflow-quarantine"


@dataclass(frozen=True)
class Case:
    """One cell of the matrix: the faults, the scan's expected end and what its reason names."""

    id: str
    faults: tuple[Fault, ...]
    expect: str
    reason: tuple[str, ...] = ()
    #: The function whose failed invocations Step Functions retried (a transient error reached it).
    retried: str | None = None
    #: The faults go to the analysis task's process instead of the handlers.
    task: bool = False


def once(service: str, operation: str, error: str, function: str | None, **where: str) -> Fault:
    return Fault(service, operation, error, function=function, where=where)


def always(service: str, operation: str, error: str, function: str | None, **where: str) -> Fault:
    return Fault(service, operation, error, function=function, where=where, times=None)


#: Publish refused its read of results.json: a permanent failure late in the scan, with which the
#: quarantine's own calls are then faulted.
PUBLISH_DENIED = always("s3", "GetObject", "AccessDenied", PUBLISH)

CASES = [
    # -- transient, once: retried, COMPLETED ---------------------------------------------------------
    Case(
        "s3-slowdown-validate-read",
        (once("s3", "GetObject", "SlowDown", VALIDATE),),
        "COMPLETED",
        retried=VALIDATE,
    ),
    Case(
        "s3-internal-validate-report",
        (once("s3", "PutObject", "InternalError", VALIDATE),),
        "COMPLETED",
        retried=VALIDATE,
    ),
    Case(
        "s3-internal-deid-read",
        (once("s3", "GetObject", "InternalError", DEIDENTIFY),),
        "COMPLETED",
        retried=DEIDENTIFY,
    ),
    Case(
        "s3-slowdown-deid-write",
        (once("s3", "PutObject", "SlowDown", DEIDENTIFY),),
        "COMPLETED",
        retried=DEIDENTIFY,
    ),
    Case(
        # The pixel proof's read-back of the de-identified object (a slice written in one PUT is
        # read back whole: its pixels compared, its length its size; no HEAD, no checksum copy).
        "s3-slowdown-deid-readback",
        (once("s3", "GetObject", "SlowDown", DEIDENTIFY, Bucket="deidentified"),),
        "COMPLETED",
        retried=DEIDENTIFY,
    ),
    Case(
        "s3-internal-publish-read",
        (once("s3", "GetObject", "InternalError", PUBLISH),),
        "COMPLETED",
        retried=PUBLISH,
    ),
    Case(
        "s3-slowdown-on-the-wire",
        (Fault("s3", "GetObject", "SlowDown", function=VALIDATE, wire=True),),
        "COMPLETED",
    ),
    Case(
        "kms-throttling-mac",
        (once("kms", "GenerateMac", "ThrottlingException", DEIDENTIFY),),
        "COMPLETED",
        retried=DEIDENTIFY,
    ),
    Case(
        "kms-internal-mac",
        (once("kms", "GenerateMac", "KMSInternalException", DEIDENTIFY),),
        "COMPLETED",
        retried=DEIDENTIFY,
    ),
    Case(
        "ddb-throughput-status-write",
        (once("dynamodb", "UpdateItem", "ProvisionedThroughputExceededException", PUBLISH, TableName=SCANS),),
        "COMPLETED",
        retried=PUBLISH,
    ),
    Case(
        "ddb-throttling-status-write",
        (once("dynamodb", "UpdateItem", "DynamoDBThrottlingException", PREPARE, TableName=SCANS),),
        "COMPLETED",
        retried=PREPARE,
    ),
    Case(
        "ddb-internal-status-read",
        (once("dynamodb", "GetItem", "InternalServerError", VALIDATE_SCAN, TableName=SCANS),),
        "COMPLETED",
        retried=VALIDATE_SCAN,
    ),
    Case(
        "ddb-throttling-idempotency",
        (once("dynamodb", "PutItem", "DynamoDBThrottlingException", VALIDATE, TableName=IDEMPOTENCY),),
        "COMPLETED",
        retried=VALIDATE,
    ),
    Case("analysis-s3-slowdown-read", (once("s3", "GetObject", "SlowDown", None),), "COMPLETED", task=True),
    # -- permanent, or transient but persistent: FAILED naming the operation ------------------------
    Case(
        "s3-denied-validate-read",
        (always("s3", "GetObject", "AccessDenied", VALIDATE),),
        "FAILED",
        ("S3 get", "AccessDenied"),
    ),
    Case(
        "s3-slowdown-persistent-deid-read",
        (always("s3", "GetObject", "SlowDown", DEIDENTIFY),),
        "FAILED",
        ("S3 get", "SlowDown"),
        retried=DEIDENTIFY,
    ),
    Case(
        "s3-denied-deid-write",
        (always("s3", "PutObject", "AccessDenied", DEIDENTIFY),),
        "FAILED",
        ("S3 put", "AccessDenied"),
    ),
    Case("s3-denied-publish-read", (PUBLISH_DENIED,), "FAILED", ("S3 get", "AccessDenied")),
    Case(
        "kms-disabled",
        (always("kms", "GenerateMac", "DisabledException", DEIDENTIFY),),
        "FAILED",
        ("KMS GenerateMac", "DisabledException"),
    ),
    Case(
        "kms-denied",
        (always("kms", "GenerateMac", "KMSAccessDeniedException", DEIDENTIFY),),
        "FAILED",
        ("KMS GenerateMac", "AccessDeniedException"),
    ),
    Case(
        "kms-throttling-persistent",
        (always("kms", "GenerateMac", "ThrottlingException", DEIDENTIFY),),
        "FAILED",
        ("KMS GenerateMac", "ThrottlingException"),
        retried=DEIDENTIFY,
    ),
    Case(
        "ddb-denied-status-write",
        (always("dynamodb", "UpdateItem", "DynamoDBAccessDeniedException", PUBLISH, TableName=SCANS),),
        "FAILED",
        ("scans table: update item", "AccessDeniedException"),
    ),
    Case(
        "ddb-throughput-persistent-status-write",
        (
            always(
                "dynamodb",
                "UpdateItem",
                "ProvisionedThroughputExceededException",
                VALIDATE_SCAN,
                TableName=SCANS,
            ),
        ),
        "FAILED",
        ("scans table: update item", "ProvisionedThroughputExceededException"),
        retried=VALIDATE_SCAN,
    ),
    Case(
        "analysis-s3-denied-read",
        (always("s3", "GetObject", "AccessDenied", None),),
        "FAILED",
        ("AnalysisError", "exited with code 1"),
        task=True,
    ),
    # -- the quarantine's own calls, after a permanent failure ---------------------------------------
    Case(
        "quarantine-s3-slowdown-tagging",
        (PUBLISH_DENIED, once("s3", "PutObjectTagging", "SlowDown", None)),
        "FAILED",
        ("S3 get", "AccessDenied"),
        retried=QUARANTINE,
    ),
    Case(
        "quarantine-ddb-throughput-status-write",
        (
            PUBLISH_DENIED,
            once(
                "dynamodb",
                "UpdateItem",
                "ProvisionedThroughputExceededException",
                QUARANTINE,
                TableName=SCANS,
            ),
        ),
        "FAILED",
        ("S3 get", "AccessDenied"),
        retried=QUARANTINE,
    ),
    Case(
        "quarantine-s3-denied-tagging",
        (PUBLISH_DENIED, always("s3", "PutObjectTagging", "AccessDenied", None)),
        "FAILED",
        ("S3 get", "AccessDenied", "ORIGINALS_NOT_TAGGED"),
    ),
]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    out = tmp_path_factory.mktemp("phantom") / "scan"
    result = generate_phantom(out, phases=2, slices=4, size=64, workers=1)
    planted = [str(v).upper().encode() for v in result.ground_truth["identifying_values"].values()]
    return out, planted


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkflowStack]:
    running = start_workflow_stack(token=TOKEN, data_dir=tmp_path_factory.mktemp("local"))
    try:
        with faults.scaled_retry_waits(RETRY_WAIT_FACTOR):
            yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def injector(stack: WorkflowStack) -> FaultInjector:
    return faults.install(stack.dispatcher)


# -- helpers ----------------------------------------------------------------------------------------


def api(stack: WorkflowStack, path: str) -> dict[str, Any]:
    request = urllib.request.Request(stack.api_url + path, headers={"X-Dicomflow-Token": TOKEN})
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def objects(stack: WorkflowStack, role: str, prefix: str) -> dict[str, bytes]:
    s3, bucket = stack.client("s3"), stack.topology.bucket(role)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def upload(stack: WorkflowStack, phantom: Path, folder: Path) -> str:
    shutil.copytree(phantom, folder)
    names = [f["name"] for f in json.loads((folder / "manifest.json").read_text())["files"]]
    result = Uploader(stack.api_url, token=TOKEN, progress=False).upload(
        folder, device_id="ct-01", scan_type="4d-ct", names=names
    )
    return result.scan_id


def check_invariants(
    stack: WorkflowStack, scan_id: str, execution: dict[str, Any], planted: list[bytes]
) -> dict[str, Any]:
    """The invariants of the module's docstring; returns the scan's status as the API gives it."""
    status = api(stack, f"/scans/{scan_id}")
    s3, ingest = stack.client("s3"), stack.topology.bucket("ingest")
    # 1. originals kept, byte for byte
    (raw,) = objects(stack, "ingest", f"scans/{scan_id}/manifest.json").values()
    manifest = json.loads(raw)["files"]
    kept = objects(stack, "ingest", f"scans/{scan_id}/files/")
    assert sorted(kept) == sorted(f["key"] for f in manifest)
    for entry in manifest:
        assert hashlib.sha256(kept[entry["key"]]).hexdigest() == entry["sha256"]
    # 2. history: legal transitions to a terminal status
    history = [ScanStatus(h["status"]) for h in status["history"]]
    assert history[0] is ScanStatus.UPLOADED and len(set(history)) == len(history), history
    assert all(can_transition(a, b) for a, b in itertools.pairwise(history)), history
    assert history[-1] == status["status"] and history[-1].is_terminal, history
    # 3. the execution agrees
    assert execution["status"] == ("FAILED" if status["status"] == "FAILED" else "SUCCEEDED"), execution
    tags = {
        entry["key"]: {
            t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=ingest, Key=entry["key"])["TagSet"]
        }
        for entry in manifest
    }
    if status["status"] == "COMPLETED":
        # 4. results record, SEG/SR, every de-identified file
        outputs = status["results"]["outputs"]
        assert set(outputs) == {"results", "seg", "sr", "preview"}
        results = objects(stack, "results", f"scans/{scan_id}/")
        assert all(key in results for key in outputs.values())
        assert json.loads(results[outputs["results"]])["scan_id"] == scan_id
        assert pydicom.dcmread(io.BytesIO(results[outputs["seg"]])).Modality == "SEG"
        assert pydicom.dcmread(io.BytesIO(results[outputs["sr"]])).Modality == "SR"
        deidentified = objects(stack, "deidentified", f"scans/{scan_id}/")
        expected = {f"scans/{scan_id}/{i:05d}.dcm" for i in range(len(manifest))} | {
            f"scans/{scan_id}/manifest.json"
        }
        assert expected <= set(deidentified), sorted(expected - set(deidentified))
        assert not any(TAG in t for t in tags.values()) and not status.get("reasons")
    else:
        # 5. nothing published, originals tagged (or the reason says why not), reasons recorded
        assert "results" not in status, status
        reasons = status.get("reasons") or status["history"][-1].get("reasons")
        assert status["reason"].startswith(status["status"]) and reasons, status
        codes = status.get("codes", []) or []
        if "ORIGINALS_NOT_TAGGED" not in status["reason"] and "ORIGINALS_NOT_TAGGED" not in codes:
            assert all(t.get(TAG) == status["status"] for t in tags.values()), tags
        if status["status"] == "REJECTED":
            assert f"scans/{scan_id}/manifest.json" not in objects(stack, "deidentified", f"scans/{scan_id}/")
        recorded = json.dumps([status["reason"], reasons, status["history"]]).upper().encode()
        assert not [v for v in planted if v in recorded]
    return status


# -- the matrix -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(
    case: Case,
    stack: WorkflowStack,
    injector: FaultInjector,
    phantom: tuple[Path, list[bytes]],
    tmp_path: Path,
) -> None:
    # Given a fresh step context (MACs and clients cold) and the case's faults armed
    faults.renew(injector)
    errors_before = dict(stack.dispatcher.errors)
    task_env = stack.tasks.environment
    assert isinstance(task_env, dict)
    added = faults.task_environment(list(case.faults), tmp_path / "faults") if case.task else {}
    saved = {name: task_env.get(name) for name in added}
    task_env.update(added)
    try:
        with injector.armed(*([] if case.task else case.faults)):
            # When a device uploads the phantom and the workflow runs
            scan_id = upload(stack, phantom[0], tmp_path / "scan")
            execution = stack.wait(scan_id, timeout_s=120)
            injected = list(injector.injected)
    finally:
        for name, value in saved.items():
            if value is None:
                task_env.pop(name, None)
            else:
                task_env[name] = value
    # Then the fault happened
    if case.task:
        record = Path(added[faults.RECORD])
        assert record.exists() and record.read_text().strip(), "the analysis task injected nothing"
    else:
        assert {i.fault for i in injected} == set(case.faults), injector.summary()
    # And the scan ended as expected, the invariants hold
    status = check_invariants(stack, scan_id, execution, phantom[1])
    assert status["status"] == case.expect, status.get("reason")
    for needle in case.reason:
        assert needle in status["reason"] or needle in json.dumps(status.get("codes", [])), status["reason"]
    if case.retried:
        assert stack.dispatcher.errors.get(case.retried, 0) > errors_before.get(case.retried, 0)
    if case.id == "s3-slowdown-on-the-wire":
        # the SDK's own retry absorbed it: no invocation failed
        assert stack.dispatcher.errors == errors_before
