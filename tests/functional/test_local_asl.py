"""The ASL (dicomflow/statemachine/scan.asl.json) and the code agree: every function it names exists
in the topology and has a handler, every error name its Retry/Catch match is a dicomflow error class
or AWS's own, every substitution is declared, and the fan-out is the topology's."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dicomflow import topology
from dicomflow.errors import ERROR_CLASSES
from dicomflow.local import sfn_emulation

ROOT = Path(__file__).resolve().parents[2]


def _states(definition: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in definition.get("States", {}).items():
        yield name, state
        for nested in (state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])):
            if nested:
                yield from _states(nested)


@pytest.fixture(scope="module")
def asl() -> dict[str, Any]:
    values = {name: f"placeholder-{name}" for name in topology.asl_substitution_names()}
    return dict(json.loads(topology.render_asl(values)))


def test_every_function_the_asl_names_exists_with_its_handler() -> None:
    named = {
        n.removeprefix("FunctionArn_")
        for n in topology.asl_substitution_names()
        if n.startswith("FunctionArn_")
    }
    assert named == set(topology.WORKFLOW_FUNCTIONS)
    for name in named:
        spec = topology.FUNCTIONS[name]
        assert (ROOT / spec.code_dir / "handler.py").is_file(), name
        module, _, attribute = spec.handler.rpartition(".")
        assert callable(getattr(importlib.import_module(module), attribute)), name


def test_every_substitution_is_declared() -> None:
    functions = {topology.function_substitution(n) for n in topology.WORKFLOW_FUNCTIONS}
    assert topology.asl_substitution_names() == functions | set(topology.ASL_RESOURCES)


def test_every_error_name_in_retry_and_catch_exists(asl: dict[str, Any]) -> None:
    names = set()
    for _, state in _states(asl):
        for clause in (*state.get("Retry", []), *state.get("Catch", [])):
            names.update(clause["ErrorEquals"])
    assert "TransientStorageError" in names and "States.ALL" in names
    aws_own = ("States.", "Lambda.", "ECS.")  # Step Functions' and its integrations' error names
    unknown = {n for n in names if n not in ERROR_CLASSES and not n.startswith(aws_own)}
    assert not unknown


def test_every_lambda_task_retries_with_jitter_and_keeps_a_summary(asl: dict[str, Any]) -> None:
    tasks = [(n, s) for n, s in _states(asl) if s.get("Resource") == "arn:aws:states:::lambda:invoke"]
    assert {
        s["Parameters"]["FunctionName"].removeprefix("placeholder-FunctionArn_") for _, s in tasks
    } == set(topology.WORKFLOW_FUNCTIONS)
    for name, state in tasks:
        (retry,) = state["Retry"]
        assert "TransientStorageError" in retry["ErrorEquals"], name
        assert "Lambda.TooManyRequestsException" in retry["ErrorEquals"], name
        assert retry["JitterStrategy"] == "FULL" and retry["BackoffRate"] > 1 and retry["MaxAttempts"] > 1
        # Only the fields the next states need: never the whole Lambda response
        assert all(v.startswith("$.Payload.") for v in state["ResultSelector"].values()), name


def test_the_maps_read_the_work_items_in_batches_as_the_topology_says(asl: dict[str, Any]) -> None:
    maps = {n: s for n, s in _states(asl) if s.get("Type") == "Map"}
    assert set(maps) == {"Validate", "Deidentify"}
    for state in maps.values():
        assert state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
        assert state["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
        assert state["ItemReader"]["ReaderConfig"] == {"InputType": "JSON"}
        assert state["ItemBatcher"]["MaxItemsPerBatch"] == topology.BATCH_SIZE
        assert state["MaxConcurrency"] == topology.MAX_CONCURRENCY
        assert state["ResultPath"] is None  # the batches' reports are in S3
        assert state["Catch"][0]["ErrorEquals"] == ["States.ALL"]


def test_the_moto_form_only_takes_the_batchers_out(asl: dict[str, Any]) -> None:
    text, batchers = sfn_emulation.for_moto(json.dumps(asl))
    moto_form = json.loads(text)
    assert set(batchers) == {"Validate", "Deidentify"}
    assert batchers["Deidentify"].batch_input == asl["States"]["Deidentify"]["ItemBatcher"]["BatchInput"]
    for name in batchers:
        asl["States"][name].pop("ItemBatcher")
    assert moto_form == asl


def test_the_analysis_exit_code_is_checked_and_task_failure_caught(asl: dict[str, Any]) -> None:
    analyze = asl["States"]["Analyze"]
    assert analyze["Resource"] == "arn:aws:states:::ecs:runTask.sync"
    assert analyze["Catch"][0]["ErrorEquals"] == ["States.ALL"]  # covers States.TaskFailed (AWS)
    names = {e["Name"] for e in analyze["Parameters"]["Overrides"]["ContainerOverrides"][0]["Environment"]}
    assert names == {
        "DICOMFLOW_SCAN_ID",
        "DICOMFLOW_INPUT_URI",
        "DICOMFLOW_MANIFEST_URI",
        "DICOMFLOW_OUTPUT_URI",
    }
    choice = asl["States"][asl["States"][analyze["Next"]]["Next"]]
    assert choice["Choices"][0] == {"Variable": "$.analysis.exit_code", "NumericEquals": 0, "Next": "Publish"}


def test_the_analysis_is_retried_only_when_runtask_is_refused(asl: dict[str, Any]) -> None:
    # RunTask refused (Fargate capacity: ECS.AmazonECSException; throttling) starts no task: safe to
    # ask again, with backoff and jitter. A task that ran and failed (States.TaskFailed, a non-zero
    # exit) is not run again: it goes to the quarantine with its reason.
    (retry,) = asl["States"]["Analyze"]["Retry"]
    assert set(retry["ErrorEquals"]) == {"ECS.AmazonECSException", "ECS.ThrottlingException"}
    assert retry["JitterStrategy"] == "FULL" and retry["BackoffRate"] > 1 and retry["MaxAttempts"] >= 3
