"""No PHI in telemetry: a whole run through the local stack (the real device uploader over HTTP,
the real ASL executed by moto, the handlers in-process, the analysis entry point as a process).

Given a phantom with its planted identity (name, MRN, birth date, accession number, institution...)
and one file named after the patient, when it is uploaded and processed to COMPLETED, another is
REJECTED (a non-DICOM file under the patient's name) and a third FAILED (a permanent S3 error),
then none of the planted values, nor the file's name, appears in: any log line (root logger, every
powertools logger's stream, stdout/stderr at the file-descriptor level, the analysis task's log),
any metric (EMF on stdout), any EventBridge event (a rule on the status bus -> SQS), any Step
Functions history event, the scans' records in DynamoDB, any API answer, or any exception message.

The scans table's per-file upload records keep each file's name by design (the upload API answers
the device with its own names): only the scan records (``item == "scan"``) are checked.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from dicomflow.local.workflow_stack import WorkflowStack, start_workflow_stack
from dicomflow.phantom import generate_phantom
from dicomflow.upload.device import Uploader
from dicomflow.workflow.context import step_context
from dicomflow.workflow.events import SOURCE

TOKEN = "telemetry-token"
STEPS = (
    "prepare_scan",
    "validate_batch",
    "validate_scan",
    "deidentify_batch",
    "deidentify_scan",
    "publish",
    "quarantine",
)


class Everything(logging.Handler):
    """Every record, formatted with its extras and its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = logging.Formatter().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _PLAIN}
        self.lines.append(f"{record.name} {text} {extras!r}")


_PLAIN = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


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


def planted(truth: dict[str, Any]) -> dict[str, str]:
    values = dict(truth["identifying_values"])
    family, given = values["PatientName"].split("^")[:2]
    values["file name"] = file_name(truth)
    values["name as a device writes it"] = f"{family}_{given}"
    # Values of six characters or more: shorter ones (a sex, "F") match by chance
    return {label: str(v) for label, v in values.items() if len(str(v)) >= 6}


def file_name(truth: dict[str, Any]) -> str:
    ids = truth["identifying_values"]
    family, given = ids["PatientName"].split("^")[:2]
    return f"{family}_{given}_{ids['PatientID']}.dcm"


def scan_copy(
    phantom: tuple[Path, dict[str, Any]], where: Path, *, text_file: bool = False
) -> tuple[Path, list[str]]:
    """A copy of the phantom whose file 1 is named after the patient (and, if asked, is text)."""
    folder = where / "scan"
    shutil.copytree(phantom[0], folder)
    names = [f["name"] for f in json.loads((folder / "manifest.json").read_text())["files"]]
    renamed = str(Path(names[1]).parent / file_name(phantom[1]))
    (folder / names[1]).rename(folder / renamed)
    names[1] = renamed
    if text_file:
        (folder / renamed).write_bytes(b"plain text under the patient's name\n" * 20)
    return folder, names


def upload(stack: WorkflowStack, folder: Path, names: list[str]) -> str:
    result = Uploader(stack.api_url, token=TOKEN, progress=False).upload(
        folder, device_id="ct-01", scan_type="4d-ct", names=names
    )
    return result.scan_id


def api(stack: WorkflowStack, path: str) -> str:
    request = urllib.request.Request(stack.api_url + path, headers={"X-Dicomflow-Token": TOKEN})
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.read().decode())


def events_queue(stack: WorkflowStack) -> tuple[Any, str]:
    """A rule on the status bus sending every dicomflow event to an SQS queue."""
    events, sqs = stack.client("events"), stack.client("sqs")
    bus = stack.topology.settings["DICOMFLOW_EVENT_BUS_NAME"]
    url = sqs.create_queue(QueueName="telemetry-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="telemetry", EventBusName=bus, EventPattern=json.dumps({"source": [SOURCE]}))
    events.put_targets(Rule="telemetry", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
    return sqs, url


def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return out
        for message in got:
            out.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def powertools_streams(monkeypatch: pytest.MonkeyPatch, buffer: io.StringIO) -> int:
    """Point every handler's stream (powertools loggers keep the stream they were made with, and
    do not propagate) at ``buffer``; returns how many were redirected."""
    from dicomflow.local.lambda_runtime import load_handler

    for step in STEPS:  # imported now, so that their loggers exist
        load_handler(f"functions.{step}.handler.lambda_handler")
    redirected = 0
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                monkeypatch.setattr(handler, "stream", buffer)
                redirected += 1
    return redirected


def test_no_planted_value_reaches_logs_metrics_events_history_records_or_errors(
    stack: WorkflowStack,
    phantom: tuple[Path, dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secrets = planted(phantom[1])
    assert len(secrets) >= 20 and file_name(phantom[1]) in secrets.values()
    # Given every log record (root and dicomflow loggers at DEBUG, so tracebacks are caught too),
    # every handler's stream, and every status event
    everything = Everything()
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.INFO)
    root.addHandler(everything)
    for name in ("dicomflow", *(f"functions.{s}.handler" for s in STEPS)):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.DEBUG)
    streams = io.StringIO()
    assert powertools_streams(monkeypatch, streams) >= len(STEPS)
    sqs, queue = events_queue(stack)
    errors: list[str] = []
    try:
        # When three scans run: one COMPLETED, one REJECTED, one FAILED
        good = upload(stack, *scan_copy(phantom, tmp_path / "a"))
        rejected = upload(stack, *scan_copy(phantom, tmp_path / "b", text_file=True))

        def access_denied(params: dict[str, Any], **kwargs: Any) -> None:
            if str(params.get("Key", "")).endswith("/work/items.json"):
                raise ClientError(
                    {"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                     "ResponseMetadata": {"HTTPStatusCode": 403}},
                    "PutObject",
                )  # fmt: skip

        assert stack.wait(good, timeout_s=90)["status"] == "SUCCEEDED"
        stack.wait(rejected, timeout_s=90)
        s3_events = step_context().s3.meta.events
        s3_events.register("before-parameter-build.s3.PutObject", access_denied)
        try:
            failed = upload(stack, *scan_copy(phantom, tmp_path / "c"))
            assert stack.wait(failed, timeout_s=90)["status"] == "FAILED"
        finally:
            s3_events.unregister("before-parameter-build.s3.PutObject", access_denied)
        # And the device's own errors: asking for the patient-named file's URLs of a finished scan
        try:
            request = urllib.request.Request(
                f"{stack.api_url}/scans/{good}/files/1/parts",
                data=b'{"parts": [{"part_number": 1, "sha256": "' + b"0" * 64 + b'"}]}',
                method="POST",
                headers={"X-Dicomflow-Token": TOKEN, "Content-Type": "application/json"},
            )
            urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as exc:
            errors.append(exc.read().decode())
    finally:
        root.removeHandler(everything)
    scans = {scan_id: json.loads(api(stack, f"/scans/{scan_id}")) for scan_id in (good, rejected, failed)}
    assert [scans[s]["status"] for s in (good, rejected, failed)] == ["COMPLETED", "REJECTED", "FAILED"]
    captured = capfd.readouterr()
    task_logs = [p.read_text(errors="replace") for p in (tmp_path.parent).rglob("task-*.log")]
    history = [stack.history(s) for s in (good, rejected, failed)]
    table = stack.client("dynamodb").scan(TableName=stack.topology.settings["DICOMFLOW_SCANS_TABLE"])["Items"]
    records = [item for item in table if item.get("item", {}).get("S") == "scan"]
    errors += [h["reason"] for h in scans.values() if "reason" in h]
    errors += [
        json.dumps(e, default=str)
        for run in history
        for e in run
        if "Failed" in e["type"] or "failed" in json.dumps(e, default=str)
    ]
    events = drain(sqs, queue)
    telemetry = {
        "log records": "\n".join(everything.lines),
        "powertools streams": streams.getvalue(),
        "stdout (metrics, prints)": captured.out,
        "stderr": captured.err,
        "analysis task logs": "\n".join(task_logs),
        "events": json.dumps(events),
        "step functions history": json.dumps(history, default=str),
        "scan records": json.dumps(records),
        "api answers": json.dumps(scans),
        "error messages": "\n".join(errors),
    }
    # Then each channel said something (so the check below is not vacuous)
    assert events and {e["detail"]["status"] for e in events} >= {"COMPLETED", "REJECTED", "FAILED"}
    assert sum(len(run) for run in history) > 30 and len(records) == 3 and errors
    assert '"level"' in streams.getvalue() and everything.lines
    assert task_logs, "the analysis task left no log"
    assert '"_aws"' in captured.out + streams.getvalue(), "no metric was emitted"
    # And the search finds what is there: the upload's per-file records keep the device's name
    file_records = json.dumps([item for item in table if item.get("item", {}).get("S") != "scan"])
    assert file_name(phantom[1]) in file_records
    # And none of the channels carries a planted value, case-insensitively
    leaks = {
        channel: sorted(label for label, value in secrets.items() if value.upper() in text.upper())
        for channel, text in telemetry.items()
    }
    assert not {c: found for c, found in leaks.items() if found}, leaks
