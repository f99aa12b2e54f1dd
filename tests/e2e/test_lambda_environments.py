"""The local stack with its handlers in Lambda execution environments of their own (spawned
processes, ``lambda_workers``: what ``make bench BENCH=e2e`` and ``DICOMFLOW_LOCAL_LAMBDA_WORKERS``
run), not in the stack's process as the other e2e tests do: a phantom goes to COMPLETED the same
way, and a handler's failure still comes back as the runtime's error envelope."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomflow.local.lambda_pool import ProcessEnvironments
from dicomflow.local.workflow_stack import WorkflowStack, start_workflow_stack
from dicomflow.phantom import generate_phantom
from dicomflow.upload.device import Uploader

TOKEN = "environments-token"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkflowStack]:
    running = start_workflow_stack(token=TOKEN, data_dir=tmp_path_factory.mktemp("local"), lambda_workers=2)
    try:
        yield running
    finally:
        running.stop()


def test_a_phantom_goes_to_completed_with_the_handlers_in_their_own_processes(
    stack: WorkflowStack, tmp_path: Path
) -> None:
    environments = stack.dispatcher.environments
    assert isinstance(environments, ProcessEnvironments) and environments.workers == 2
    scan = tmp_path / "scan"
    generate_phantom(scan, phases=2, slices=4, size=64, workers=1)
    result = Uploader(stack.api_url, token=TOKEN, progress=False).upload(
        scan, device_id="ct-01", scan_type="4d-ct"
    )
    execution = stack.wait(result.scan_id, timeout_s=120)
    assert execution["status"] == "SUCCEEDED", execution
    # And the status record went through every step, with the results published
    item = stack.client("dynamodb").get_item(
        TableName=stack.topology.names["table:scans"],
        Key={"scan_id": {"S": result.scan_id}, "item": {"S": "scan"}},
    )["Item"]
    assert item["status"]["S"] == "COMPLETED"
    results = stack.client("s3").list_objects_v2(
        Bucket=stack.topology.bucket("results"), Prefix=f"scans/{result.scan_id}/"
    )
    names = {o["Key"].rsplit("/", 1)[1] for o in results.get("Contents", [])}
    assert {"results.json", "seg.dcm", "sr.dcm", "preview.png"} <= names


def test_an_exception_in_an_environment_is_the_runtimes_error_envelope() -> None:
    environments = ProcessEnvironments(1, {"AWS_DEFAULT_REGION": "us-east-1"})
    try:
        ok, envelope = environments.invoke(
            "tests.e2e.test_lambda_environments.failing_handler",
            {},
            {
                "function_name": "f",
                "memory_limit_in_mb": 128,
                "invoked_function_arn": "arn:aws:lambda:us-east-1:123456789012:function:f",
                "aws_request_id": "r",
            },
            5.0,
        )
    finally:
        environments.close()
    assert ok is False
    assert envelope["errorType"] == "KeyError" and envelope["errorMessage"] == "unexpected KeyError"


def failing_handler(event: object, context: object) -> None:
    raise KeyError(f"Doe^Jane {os.getpid()}")  # a value from a file: never in the envelope
