"""The workflow's steps driven in order through their real Lambda handlers, against moto in-process:
a phantom scan (2 phases x 4 slices of 64 x 64, one file named after the patient) put into the
ingest bucket as the upload API leaves it (objects at nameless keys, the manifest with each file's
``key``), then prepare -> validate (batches) -> validate scan -> de-identify (batches) ->
de-identify scan -> analysis (the real pipeline) -> publish, or -> quarantine. Status events are
caught by a real EventBridge rule with an SQS target. No file name or patient value may appear in
a result, an event, a log line or the scan's record."""

from __future__ import annotations

import importlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pydicom
import pytest
from moto import mock_aws

from dicomflow.phantom import generate_phantom
from dicomflow.settings import get_settings
from dicomflow.status import ScanStatus
from dicomflow.storage import S3ObjectStore
from dicomflow.upload.scans_table import ScansTable, create_idempotency_table, create_table
from dicomflow.validation import validate_object
from dicomflow.workflow.context import reset_context
from dicomflow.workflow.quarantine import TAG

REGION = "us-east-1"
INGEST, DEID, RESULTS = "wf-ingest", "wf-deidentified", "wf-results"
BUS = "wf-bus"
BATCH = 3  # 8 files: batches starting at 0, 3 and 6


@dataclass
class LambdaContext:
    function_name: str
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@dataclass
class Stack:
    s3: Any
    table: ScansTable
    sqs: Any
    queue_url: str
    phantom: Path
    truth: dict[str, Any]
    handlers: dict[str, Any] = field(default_factory=dict)

    def invoke(self, step: str, event: dict[str, Any]) -> dict[str, Any]:
        if step not in self.handlers:
            self.handlers[step] = importlib.import_module(f"functions.{step}.handler")
        result = self.handlers[step].lambda_handler(event, LambdaContext(step))
        json.dumps(result)  # a step's result must be JSON for the state machine
        return dict(result)

    def events(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get(
                "Messages", []
            )
            if not got:
                return out
            for message in got:
                out.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def body(self, bucket: str, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("phantom")
    result = generate_phantom(out, phases=2, slices=4, size=64, workers=1)
    return out, result.ground_truth


@pytest.fixture()
def stack(monkeypatch: pytest.MonkeyPatch, phantom: tuple[Path, dict[str, Any]]) -> Iterator[Stack]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "dicomflow")
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in (INGEST, DEID, RESULTS):
            s3.create_bucket(Bucket=bucket)
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_table(dynamodb, "wf-scans")
        create_idempotency_table(dynamodb, "wf-idempotency")
        kms = boto3.client("kms", region_name=REGION)
        key_id = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
        events, sqs = boto3.client("events", region_name=REGION), boto3.client("sqs", region_name=REGION)
        events.create_event_bus(Name=BUS)
        queue_url = sqs.create_queue(QueueName="wf-status")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events.put_rule(Name="status", EventBusName=BUS, EventPattern=json.dumps({"source": ["dicomflow"]}))
        events.put_targets(Rule="status", EventBusName=BUS, Targets=[{"Id": "q", "Arn": arn}])
        for setting, value in {
            "REGION": REGION,
            "INGEST_BUCKET": INGEST,
            "DEIDENTIFIED_BUCKET": DEID,
            "RESULTS_BUCKET": RESULTS,
            "SCANS_TABLE": "wf-scans",
            "IDEMPOTENCY_TABLE": "wf-idempotency",
            "PSEUDONYM_KEY_ID": key_id,
            "EVENT_BUS_NAME": BUS,
        }.items():
            monkeypatch.setenv(f"DICOMFLOW_{setting}", value)
        get_settings.cache_clear()
        reset_context()
        table = ScansTable(boto3.resource("dynamodb", region_name=REGION).Table("wf-scans"))
        yield Stack(s3, table, sqs, queue_url, phantom[0], phantom[1])
    get_settings.cache_clear()
    reset_context()


def patient_name(stack: Stack) -> str:
    return str(stack.truth["identifying_values"]["PatientName.family"])


def upload(
    stack: Stack, scan_id: str, *, replace: dict[int, bytes] | None = None, sha: dict[int, str] | None = None
) -> list[str]:
    """Put the phantom in the ingest bucket as the upload API leaves a completed scan: objects at
    nameless keys, the manifest (with names, one of them the patient's) with each file's key, the
    scan UPLOADED. ``replace`` swaps a file's bytes; ``sha`` overrides a declared SHA-256."""
    import hashlib

    manifest = json.loads((stack.phantom / "manifest.json").read_text())
    keys = []
    for index, entry in enumerate(manifest["files"]):
        data = (replace or {}).get(index, (stack.phantom / entry["name"]).read_bytes())
        key = f"scans/{scan_id}/files/{index:05d}"
        stack.s3.put_object(Bucket=INGEST, Key=key, Body=data)
        entry.update(key=key, size=len(data), sha256=(sha or {}).get(index, hashlib.sha256(data).hexdigest()))
        keys.append(key)
    # A device's file name can carry the patient's name: it must never leave the manifest.
    manifest["files"][1]["name"] = f"phase_00/{patient_name(stack)}_0001.dcm"
    manifest["scan_id"] = scan_id
    stack.s3.put_object(
        Bucket=INGEST, Key=f"scans/{scan_id}/manifest.json", Body=json.dumps(manifest).encode()
    )
    stack.table.create_scan(
        {"scan_id": scan_id, "status": "UPLOADING", "device_id": manifest["device_id"]}, []
    )
    assert stack.table.transition(scan_id, ScanStatus.UPLOADING, ScanStatus.UPLOADED)
    return keys


@dataclass
class Run:
    results: dict[str, Any] = field(default_factory=dict)
    batches: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def drive(stack: Stack, scan_id: str) -> Run:
    """The state machine's path for one scan, step by step, with the contract's events."""
    run = Run()
    start = {"scan_id": scan_id, "bucket": INGEST, "manifest_key": f"scans/{scan_id}/manifest.json"}
    prepared = run.results["prepare_scan"] = stack.invoke("prepare_scan", start)
    items = json.loads(stack.body(INGEST, prepared["items_key"]))
    batches = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
    run.batches["validate_batch"] = [
        stack.invoke("validate_batch", {"Items": b, "BatchInput": {"scan_id": scan_id, "bucket": INGEST}})
        for b in batches
    ]
    checked = run.results["validate_scan"] = stack.invoke(
        "validate_scan", {**start, "file_count": prepared["file_count"]}
    )
    if not checked["accepted"]:
        return quarantine(stack, run, start, checked)
    batch_input = {"scan_id": scan_id, "bucket": INGEST, "output_bucket": DEID}
    run.batches["deidentify_batch"] = [
        stack.invoke("deidentify_batch", {"Items": b, "BatchInput": batch_input}) for b in batches
    ]
    deidentified = run.results["deidentify_scan"] = stack.invoke(
        "deidentify_scan", {**batch_input, "file_count": prepared["file_count"]}
    )
    if not deidentified["passed"]:
        return quarantine(stack, run, start, deidentified)
    from dicomflow.analysis.pipeline import analyze_scan

    analyze_scan(
        S3ObjectStore(DEID, client=stack.s3),
        deidentified["output_prefix"],
        S3ObjectStore(RESULTS, client=stack.s3),
        f"scans/{scan_id}/",
        scan_id=scan_id,
        manifest_key=deidentified["manifest_key"],
        threads=1,
    )
    run.results["publish"] = stack.invoke(
        "publish", {"scan_id": scan_id, "results_bucket": RESULTS, "results_prefix": f"scans/{scan_id}/"}
    )
    return run


def quarantine(stack: Stack, run: Run, start: dict[str, Any], result: dict[str, Any]) -> Run:
    event = {**start, "outcome": "REJECTED", "codes": result["codes"], "report_key": result["report_key"]}
    run.results["quarantine"] = stack.invoke("quarantine", event)
    return run


def everything_written(stack: Stack, scan_id: str) -> bytes:
    """Every object the workflow wrote (work items, reports, de-identified files, results)."""
    blobs = [stack.body(INGEST, k) for k in stack.keys(INGEST, f"scans/{scan_id}/work/")]
    blobs += [stack.body(DEID, k) for k in stack.keys(DEID)]
    blobs += [stack.body(RESULTS, k) for k in stack.keys(RESULTS)]
    return b"\n".join(blobs)


def test_a_scan_goes_through_every_step_to_completed(stack: Stack) -> None:
    # Given an uploaded phantom scan, one file named after the patient
    keys = upload(stack, "scan-ok")
    before = {k: (stack.s3.head_object(Bucket=INGEST, Key=k)["ETag"], stack.body(INGEST, k)) for k in keys}
    # When every step runs in order
    run = drive(stack, "scan-ok")
    # Then the scan is COMPLETED with its history, one event per status change, and its results
    scan = stack.table.get_scan("scan-ok")
    assert scan is not None and scan["status"] == "COMPLETED"
    statuses = ["UPLOADED", "VALIDATING", "DEIDENTIFYING", "ANALYZING", "COMPLETED"]
    assert [h["status"] for h in scan["history"]] == statuses
    events = [e["detail"] for e in stack.events() if e["detail-type"] == "Scan Status Changed"]
    assert [(e["status"], e["previous"]) for e in events] == list(
        zip(statuses[1:], statuses[:-1], strict=True)
    )
    assert all(e["scan_id"] == "scan-ok" and e["at"] for e in events)
    assert run.results["publish"] == {"status": "COMPLETED", "results_key": "scans/scan-ok/results.json"}
    assert scan["results"]["bucket"] == RESULTS
    assert set(scan["results"]["outputs"]) == {"results", "seg", "sr", "preview"}
    for output in scan["results"]["outputs"].values():
        assert output in stack.keys(RESULTS)
    # And the work items carry indices and keys, no names
    items = json.loads(stack.body(INGEST, run.results["prepare_scan"]["items_key"]))
    assert [i["index"] for i in items] == list(range(8)) and [i["key"] for i in items] == keys
    assert all(set(i) == {"index", "key", "size", "sha256"} for i in items)
    # And every de-identified file is valid DICOM, free of the planted identity, pixels unchanged
    manifest = json.loads(stack.body(DEID, "scans/scan-ok/manifest.json"))
    assert [f["name"] for f in manifest["files"]] == [f"{i:05d}.dcm" for i in range(8)]
    deid_store = S3ObjectStore(DEID, client=stack.s3)
    identifying = [str(v).upper().encode() for v in stack.truth["identifying_values"].values()]
    for i, entry in enumerate(manifest["files"]):
        key = f"scans/scan-ok/{entry['name']}"
        data = stack.body(DEID, key)
        assert __import__("hashlib").sha256(data).hexdigest() == entry["sha256"]
        assert validate_object(deid_store, key).accepted
        upper = data.upper()
        assert not [v for v in identifying if v in upper]
        original = pydicom.dcmread(io.BytesIO(before[keys[i]][1]))
        assert pydicom.dcmread(io.BytesIO(data)).PixelData == original.PixelData
    # And the originals are untouched, and nothing the workflow wrote names a file
    for key, (etag, body) in before.items():
        assert stack.s3.head_object(Bucket=INGEST, Key=key)["ETag"] == etag
        assert stack.body(INGEST, key) == body
    written = everything_written(stack, "scan-ok")
    assert patient_name(stack).encode() not in written and b"slice_0002" not in written


def test_the_deidentify_step_reads_each_slice_against_the_one_before(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicomflow.deid import rewrite

    # Given an uploaded scan whose slices are held whole after their one GET
    upload(stack, "scan-series")
    read = rewrite.read_raw_header
    taken: list[bool] = []

    def counted(buf: Any, like: Any = None) -> Any:
        header = read(buf, like=like)
        taken.append(
            like is not None and any(a is b for a, b in zip(header.dataset, like.dataset, strict=False))
        )
        return header

    monkeypatch.setattr(rewrite, "read_raw_header", counted)
    # When the steps run
    drive(stack, "scan-series")
    # Then the de-identifier read slices against the slice before them (not all: these phantom
    # slices are of two sizes, their UIDs of two lengths, and a batch de-identifies files in
    # parallel, so the one before may be of the other size; 3 of the 8 here), and the scan
    # completed (its outputs are checked in the test above)
    scan = stack.table.get_scan("scan-series")
    assert scan is not None and scan["status"] == "COMPLETED"
    assert len(taken) == 8 and sum(taken) >= 2, taken


def test_a_sha256_mismatch_rejects_the_scan_naming_the_file(stack: Stack) -> None:
    # Given a scan whose file 3 does not hash to the manifest's SHA-256
    keys = upload(stack, "scan-sha", sha={3: "0" * 64})
    # When the workflow runs
    run = drive(stack, "scan-sha")
    # Then validation rejects it, naming file 3 by index and key, and quarantine records REJECTED
    assert run.results["validate_scan"]["accepted"] is False
    assert run.results["validate_scan"]["rejected_files"] == [3]
    assert "SHA256_MISMATCH" in run.results["validate_scan"]["codes"]
    assert run.results["quarantine"]["status"] == "REJECTED"
    assert {"index": 3, "key": keys[3], "codes": ["SHA256_MISMATCH"]} in run.results["quarantine"]["reasons"]
    scan = stack.table.get_scan("scan-sha")
    assert scan is not None and scan["status"] == "REJECTED" and "files[3] SHA256_MISMATCH" in scan["reason"]
    assert [h["status"] for h in scan["history"]] == ["UPLOADED", "VALIDATING", "REJECTED"]
    assert scan["history"][-1]["reasons"][0]["index"] == 3
    # And the originals are kept, each tagged, nothing de-identified
    for key in keys:
        tags = stack.s3.get_object_tagging(Bucket=INGEST, Key=key)["TagSet"]
        assert {"Key": TAG, "Value": "REJECTED"} in tags
    assert stack.keys(DEID) == []
    events = [e["detail"] for e in stack.events()]
    assert events[-1]["status"] == "REJECTED" and "SHA256_MISMATCH" in events[-1]["codes"]
    # And quarantining again changes nothing and answers with the recorded status
    again = stack.invoke(
        "quarantine", {"scan_id": "scan-sha", "bucket": INGEST, "manifest_key": "x", "outcome": "FAILED"}
    )
    assert again["status"] == "REJECTED" and stack.events() == []


def test_a_non_dicom_file_rejects_the_scan(stack: Stack) -> None:
    upload(stack, "scan-txt", replace={5: b"this is a text file, not DICOM\n" * 40})
    run = drive(stack, "scan-txt")
    assert run.results["validate_scan"]["rejected_files"] == [5]
    assert run.results["quarantine"]["status"] == "REJECTED"
    reasons = {r["index"]: r["codes"] for r in run.results["quarantine"]["reasons"]}
    assert reasons == {5: ["NOT_DICOM"]}


def test_a_burned_in_file_is_held_not_published(stack: Stack) -> None:
    # Given a scan whose file 2 declares burned-in annotation
    manifest = json.loads((stack.phantom / "manifest.json").read_text())
    ds = pydicom.dcmread(stack.phantom / manifest["files"][2]["name"])
    ds.BurnedInAnnotation = "YES"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    keys = upload(stack, "scan-burn", replace={2: buffer.getvalue()})
    # When the workflow runs
    run = drive(stack, "scan-burn")
    # Then file 2 is held beside the originals, never in the de-identified bucket, and the scan
    # is rejected with that reason
    assert sum(b["held"] for b in run.batches["deidentify_batch"]) == 1
    assert stack.keys(INGEST, "scans/scan-burn/held/") == ["scans/scan-burn/held/00002.dcm"]
    assert "scans/scan-burn/00002.dcm" not in stack.keys(DEID)
    assert "scans/scan-burn/manifest.json" not in stack.keys(DEID)
    assert run.results["deidentify_scan"]["passed"] is False
    assert run.results["deidentify_scan"]["codes"] == ["BURNED_IN_HELD"]
    assert run.results["quarantine"]["status"] == "REJECTED"
    assert run.results["quarantine"]["reasons"] == [{"index": 2, "key": keys[2], "codes": ["BURNED_IN_HELD"]}]
    held = stack.body(INGEST, "scans/scan-burn/held/00002.dcm")
    assert patient_name(stack).upper().encode() not in held.upper()


def test_quarantine_after_a_failure_records_the_class_not_the_message(stack: Stack) -> None:
    # Given a scan in ANALYZING and an analysis step that failed with an exception quoting data
    upload(stack, "scan-fail")
    for old, new in (
        ("UPLOADED", "VALIDATING"),
        ("VALIDATING", "DEIDENTIFYING"),
        ("DEIDENTIFYING", "ANALYZING"),
    ):
        assert stack.table.transition("scan-fail", ScanStatus(old), ScanStatus(new))
    cause = json.dumps(
        {"errorType": "KeyError", "errorMessage": f"'{patient_name(stack)}'", "stackTrace": []}
    )
    event = {
        "scan_id": "scan-fail",
        "bucket": INGEST,
        "manifest_key": "scans/scan-fail/manifest.json",
        "outcome": "REJECTED",  # asked for, but ANALYZING cannot be rejected: FAILED
        "error": {"Error": "KeyError", "Cause": cause},
    }
    # When quarantine runs
    result = stack.invoke("quarantine", event)
    # Then the scan FAILED with the class name only; the originals are tagged FAILED
    assert result == {"status": "FAILED", "reasons": [{"error": "KeyError", "reason": "unexpected KeyError"}]}
    scan = stack.table.get_scan("scan-fail")
    assert scan is not None and scan["status"] == "FAILED"
    assert patient_name(stack) not in json.dumps(scan)
    tags = stack.s3.get_object_tagging(Bucket=INGEST, Key="scans/scan-fail/files/00000")["TagSet"]
    assert {"Key": TAG, "Value": "FAILED"} in tags


def test_steps_retried_after_their_change_succeed(stack: Stack) -> None:
    # Given a scan moved to VALIDATING by prepare_scan
    upload(stack, "scan-retry")
    start = {"scan_id": "scan-retry", "bucket": INGEST, "manifest_key": "scans/scan-retry/manifest.json"}
    first = stack.invoke("prepare_scan", start)
    # When the step is delivered again, and a batch twice
    again = stack.invoke("prepare_scan", start)
    items = json.loads(stack.body(INGEST, first["items_key"]))[:2]
    batch = {"Items": items, "BatchInput": {"scan_id": "scan-retry", "bucket": INGEST}}
    one, two = stack.invoke("validate_batch", batch), stack.invoke("validate_batch", batch)
    # Then both succeed with the same answer, the history holds one VALIDATING
    assert first == again and one == two
    scan = stack.table.get_scan("scan-retry")
    assert scan is not None and [h["status"] for h in scan["history"]] == ["UPLOADED", "VALIDATING"]
    # And the second delivery was answered from the idempotency record
    records = boto3.client("dynamodb", region_name=REGION).scan(TableName="wf-idempotency")["Items"]
    assert len(records) == 1 and records[0]["status"]["S"] == "COMPLETED"


def test_a_large_multiframe_file_reads_little_of_the_source(tmp_path: Path) -> None:
    from dicomflow.workflow.measure import deidentify_multiframe_in_moto

    # Given a 64 MiB enhanced multi-frame phantom (128 frames of 512 x 512)
    figures = deidentify_multiframe_in_moto(tmp_path, frames=128, size=512)
    # Then it passed, read the header, the first 5 MiB and the proof's windows only, and the
    # output's pixel data is byte-identical
    assert figures["verdict"] == "passed" and figures["pixels_identical"] is True
    assert figures["file_bytes"] > 64 * 1024 * 1024
    assert figures["source_bytes_read"] <= 8 * 1024 * 1024
    assert figures["bytes_copied_server_side"] >= figures["pixel_bytes"] - 6 * 1024 * 1024


def test_no_step_result_event_log_or_record_carries_a_name(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given every step's log lines caught (the handlers' loggers keep the stream they were made
    # with, so they are pointed at a buffer here, whichever test imported them first)
    logs = io.StringIO()
    for step in (
        "prepare_scan",
        "validate_batch",
        "validate_scan",
        "deidentify_batch",
        "deidentify_scan",
        "publish",
        "quarantine",
    ):
        module = importlib.import_module(f"functions.{step}.handler")
        handler = module.logger.registered_handler
        monkeypatch.setattr(handler, "stream", logs)
    # And scans whose manifests name a file after the patient (one good, one with a bad file)
    upload(stack, "scan-a")
    upload(stack, "scan-b", replace={4: b"plain text, not DICOM" * 10})
    # When every step runs for both, and quarantine after a failure that quotes the name
    runs = [drive(stack, "scan-a"), drive(stack, "scan-b")]
    upload(stack, "scan-c")
    assert stack.table.transition("scan-c", ScanStatus.UPLOADED, ScanStatus.VALIDATING)
    cause = json.dumps(
        {"errorType": "ValueError", "errorMessage": f"bad file {patient_name(stack)}_0001.dcm"}
    )
    failed = stack.invoke(
        "quarantine",
        {
            "scan_id": "scan-c",
            "bucket": INGEST,
            "manifest_key": "scans/scan-c/manifest.json",
            "outcome": "FAILED",
            "error": {"Error": "ValueError", "Cause": cause},
        },
    )
    logged = logs.getvalue()
    # Then the name (and the patient's other planted values) appears nowhere
    results = json.dumps([r.results for r in runs] + [r.batches for r in runs] + [failed])
    events = json.dumps(stack.events())
    records = json.dumps([stack.table.get_scan(s) for s in ("scan-a", "scan-b", "scan-c")])
    planted = [patient_name(stack), "slice_0001", "phase_00/"]
    planted += [str(v) for v in stack.truth["identifying_values"].values() if len(str(v)) >= 6]
    for text, what in (
        (results, "results"),
        (events, "events"),
        (records, "records"),
        (logged, "logs"),
    ):
        found = [value for value in planted if value in text]
        assert not found, f"{what} carry {found}"
    # And the logs did say something, with the scan id as correlation id on every line
    lines = [json.loads(line) for line in logged.splitlines() if line.startswith("{") and '"level"' in line]
    assert failed["status"] == "FAILED"
    assert lines and all(line.get("correlation_id") in ("scan-a", "scan-b", "scan-c") for line in lines)


def test_source_object_answers_as_s3_does_with_one_get_for_a_slice() -> None:
    import hashlib

    from dicomflow.workflow.reads import SourceObject, WrittenObjects

    with mock_aws():
        # Given a slice-sized object, one longer than the window, and an empty one
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=INGEST)
        plain = S3ObjectStore(INGEST, client=s3)
        bodies = {"small": bytes(range(256)) * 40, "large": bytes(range(251)) * 120, "empty": b""}
        for key, body in bodies.items():
            plain.put(key, body)
        calls: list[str] = []
        s3.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
        for key, body in bodies.items():
            calls.clear()
            # When the engines ask a SourceObject with a 16 KiB window
            source = SourceObject(plain, key, window=16 * 1024)
            answers = (
                source.size(key),
                source.get_range(key, 0, 132),
                source.get_range(key, 10_000, 20_000),
                source.get_range(key, len(body) + 5, len(body) + 9),
                b"".join(source.iter_chunks(key, 4096)),
                source.open_read(key).read(),
            )
            # Then it answers as S3 does, and a slice (or an empty object) costs one GET
            assert answers == (
                len(body), body[:132], body[10_000:20_000], b"", body, body
            ), key  # fmt: skip
            if key == "large":
                assert calls[0] == "GetObject" and len(calls) > 1
                assert source.held is None
            else:
                assert calls == ["GetObject"], key
                assert source.held == body  # handed to the engines whole
        # And an object PUT in one piece is recorded with the SHA-256 of what landed
        written = WrittenObjects(plain)
        written.put("out", bodies["small"])
        stored = plain.get_range("out", 0, 1 << 20)
        assert written.written["out"] == (len(stored), hashlib.sha256(stored).hexdigest())
