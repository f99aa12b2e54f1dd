"""The local stack's plumbing, with tiny stand-in handlers: the real ASL executed by moto, Lambda
invocations dispatched in-process with the runtime's error envelope (so Retry and Catch match on
class names), ItemBatcher emulated, the Map failing past its tolerated failures, and the analysis
task run as a local process whose exit code the ASL checks.

Given the stack with stand-ins for every workflow function (each records its events) and a small
script in place of the analysis container, when an execution is started as the upload API starts
it, then the path it takes and what each step receives are those of the ASL.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dicomflow.errors import TransientStorageError
from dicomflow.local.workflow_stack import WorkflowStack, start_workflow_stack

FILES = 30  # 25 per batch (topology.BATCH_SIZE): two batches


class StandIns:
    """Stand-in handlers; behaviour chosen by the scan id's suffix."""

    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.failed_once: set[str] = set()
        self._lock = threading.Lock()
        self.stack: WorkflowStack | None = None

    def _record(self, step: str, event: dict[str, Any]) -> None:
        with self._lock:
            self.events[step].append(event)

    def handlers(self) -> dict[str, Any]:
        return {f"dicomflow-{name}": getattr(self, name) for name in (
            "prepare_scan", "validate_batch", "validate_scan", "deidentify_batch",
            "deidentify_scan", "publish", "quarantine",
        )}  # fmt: skip

    def prepare_scan(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self._record("prepare_scan", event)
        if event["scan_id"].endswith("-bug"):
            raise ValueError("a value read from a file")
        assert self.stack is not None
        key = f"scans/{event['scan_id']}/work/items.json"
        items = [{"index": i, "key": f"k{i}", "size": 1, "sha256": "0" * 64} for i in range(FILES)]
        self.stack.client("s3").put_object(Bucket=event["bucket"], Key=key, Body=json.dumps(items).encode())
        return {**event, "items_key": key, "file_count": FILES}

    def validate_batch(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self._record("validate_batch", event)
        scan_id, first = event["BatchInput"]["scan_id"], event["Items"][0]["index"]
        if scan_id.endswith("-batchdown"):
            raise PermissionError("the batch cannot read its files")
        with self._lock:
            once = (scan_id, first) not in self.failed_once
            self.failed_once.add((scan_id, first))
        if once and first == 0:
            raise TransientStorageError("S3 SlowDown; retry")
        return {"first": first, "count": len(event["Items"]), "rejected": 0, "report_key": "r"}

    def validate_scan(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self._record("validate_scan", event)
        if event["scan_id"].endswith("-invalid"):
            return {
                "accepted": False,
                "report_key": "v.json",
                "rejected_files": [3],
                "codes": ["SHA256_MISMATCH"],
            }
        return {"accepted": True, "report_key": "v.json", "rejected_files": [], "codes": []}

    def deidentify_batch(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self._record("deidentify_batch", event)
        n = len(event["Items"])
        return {"first": event["Items"][0]["index"], "count": n, "passed": n, "held": 0, "failed": 0,
                "report_key": "d"}  # fmt: skip

    def deidentify_scan(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self._record("deidentify_scan", event)
        prefix = f"scans/{event['scan_id']}/"
        return {"passed": True, "report_key": "d.json", "output_prefix": prefix,
                "manifest_key": prefix + "manifest.json", "codes": []}  # fmt: skip

    def publish(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self._record("publish", event)
        return {"status": "COMPLETED", "results_key": event["results_prefix"] + "results.json"}

    def quarantine(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self._record("quarantine", event)
        return {"status": event["outcome"], "reasons": []}


TASK = """\
import json, os, sys
env = {k: v for k, v in os.environ.items() if k.startswith("DICOMFLOW_")}
with open(sys.argv[0] + ".env.json", "a") as fh:
    fh.write(json.dumps(env) + "\\n")
sys.exit(3 if env["DICOMFLOW_SCAN_ID"].endswith("-crash") else 0)
"""


@pytest.fixture(scope="module")
def plumbing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkflowStack, StandIns, Path]]:
    stand_ins = StandIns()
    stack = start_workflow_stack(handlers=stand_ins.handlers(), with_proxy=False)
    stand_ins.stack = stack
    script = tmp_path_factory.mktemp("task") / "task.py"
    script.write_text(TASK)
    family = next(iter(stack.tasks.families))
    stack.tasks.families = {family: script}
    try:
        yield stack, stand_ins, script
    finally:
        stack.stop()


def run(stack: WorkflowStack, scan_id: str) -> dict[str, Any]:
    # As the upload API starts it when the last file completes (StepFunctionsProcessor)
    stack.upload.service.processor.start(scan_id, f"scans/{scan_id}/manifest.json")
    return stack.wait(scan_id, timeout_s=60)


def for_scan(events: list[dict[str, Any]], scan_id: str) -> list[dict[str, Any]]:
    return [e for e in events if (e.get("BatchInput") or e).get("scan_id") == scan_id]


def test_the_asl_runs_in_order_with_batches_a_retry_and_the_task(plumbing) -> None:
    stack, stand_ins, script = plumbing
    # When a scan's execution runs
    done = run(stack, "plumb-ok")
    # Then it succeeded, through every step once and in order
    assert done["status"] == "SUCCEEDED", done
    for step in ("prepare_scan", "validate_scan", "deidentify_scan", "publish"):
        assert len(for_scan(stand_ins.events[step], "plumb-ok")) == 1, step
    assert for_scan(stand_ins.events["quarantine"], "plumb-ok") == []
    # And the Maps gave each batch ItemBatcher's shape: Items (25, then 5) and the BatchInput
    batches = for_scan(stand_ins.events["deidentify_batch"], "plumb-ok")
    assert sorted(len(b["Items"]) for b in batches) == [5, 25]
    assert {json.dumps(b["BatchInput"], sort_keys=True) for b in batches} == {
        json.dumps(
            {"bucket": "dicomflow-ingest", "output_bucket": "dicomflow-deidentified", "scan_id": "plumb-ok"},
            sort_keys=True,
        )
    }
    # And the first validation batch failed once with TransientStorageError and was retried
    firsts = [b["Items"][0]["index"] for b in for_scan(stand_ins.events["validate_batch"], "plumb-ok")]
    assert sorted(firsts) == [0, 0, 25]
    # And the task got the de-identified input, its manifest and the results location
    env = [json.loads(line) for line in Path(str(script) + ".env.json").read_text().splitlines()]
    (mine,) = [e for e in env if e["DICOMFLOW_SCAN_ID"] == "plumb-ok"]
    assert mine["DICOMFLOW_INPUT_URI"] == "s3://dicomflow-deidentified/scans/plumb-ok/"
    assert mine["DICOMFLOW_MANIFEST_URI"] == "s3://dicomflow-deidentified/scans/plumb-ok/manifest.json"
    assert mine["DICOMFLOW_OUTPUT_URI"] == "s3://dicomflow-results/scans/plumb-ok/"
    assert mine["DICOMFLOW_AWS_ENDPOINT_URL"] == stack.local.endpoint_url
    (published,) = for_scan(stand_ins.events["publish"], "plumb-ok")
    assert published == {
        "scan_id": "plumb-ok",
        "results_bucket": "dicomflow-results",
        "results_prefix": "scans/plumb-ok/",
    }
    # And only keys and small summaries travelled: the execution's output is small
    assert len(done["output"]) < 2048


def test_an_unexpected_error_is_caught_and_quarantined_as_failed(plumbing) -> None:
    stack, stand_ins, _ = plumbing
    done = run(stack, "plumb-bug")
    assert done["status"] == "FAILED" and done.get("error") == "ScanFailed"
    (event,) = for_scan(stand_ins.events["quarantine"], "plumb-bug")
    assert event["outcome"] == "FAILED" and event["manifest_key"] == "scans/plumb-bug/manifest.json"
    assert event["error"]["Error"] == "ValueError"
    # The runtime envelope carries our class name; a foreign exception's message is not passed on
    assert json.loads(event["error"]["Cause"])["errorMessage"] == "unexpected ValueError"


def test_a_rejected_scan_is_quarantined_with_its_codes(plumbing) -> None:
    stack, stand_ins, _ = plumbing
    done = run(stack, "plumb-invalid")
    assert done["status"] == "SUCCEEDED"  # bad input is an outcome, not a failure of the workflow
    (event,) = for_scan(stand_ins.events["quarantine"], "plumb-invalid")
    assert event["outcome"] == "REJECTED" and event["codes"] == ["SHA256_MISMATCH"]
    assert event["report_key"] == "v.json"
    assert for_scan(stand_ins.events["deidentify_batch"], "plumb-invalid") == []


def test_a_batch_failing_for_good_fails_the_map_and_the_scan(plumbing) -> None:
    stack, stand_ins, _ = plumbing
    done = run(stack, "plumb-batchdown")
    assert done["status"] == "FAILED"
    (event,) = for_scan(stand_ins.events["quarantine"], "plumb-batchdown")
    assert event["outcome"] == "FAILED"
    assert event["error"]["Error"] == "States.ExceedToleratedFailureThreshold"
    assert for_scan(stand_ins.events["validate_scan"], "plumb-batchdown") == []


def test_the_analysis_exit_code_is_checked(plumbing) -> None:
    stack, stand_ins, _ = plumbing
    done = run(stack, "plumb-crash")
    assert done["status"] == "FAILED"
    (event,) = for_scan(stand_ins.events["quarantine"], "plumb-crash")
    assert event["error"] == {"Error": "AnalysisError", "Cause": "the analysis task exited with code 3"}
    assert for_scan(stand_ins.events["publish"], "plumb-crash") == []
    assert [r.exit_code for r in stack.tasks.runs if r.environment["DICOMFLOW_SCAN_ID"] == "plumb-crash"] == [
        3
    ]


def test_the_same_scan_started_twice_runs_once(plumbing) -> None:
    stack, stand_ins, _ = plumbing
    stack.upload.service.processor.start("plumb-twice", "scans/plumb-twice/manifest.json")
    stack.upload.service.processor.start("plumb-twice", "scans/plumb-twice/manifest.json")
    assert stack.wait("plumb-twice", timeout_s=60)["status"] == "SUCCEEDED"
    assert len(for_scan(stand_ins.events["prepare_scan"], "plumb-twice")) == 1
    assert [e["name"] for e in stack.executions()].count("plumb-twice") == 1
