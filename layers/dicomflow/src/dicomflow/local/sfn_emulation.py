"""What moto's Step Functions interpreter (5.2.x) lacks of the ASL we deploy, emulated so the same
ASL file runs in both.

- **ItemBatcher** is not in moto's grammar (a definition with it is refused). :func:`for_moto`
  takes it out of each Map before the definition reaches moto and records it;
  the Map's items are then grouped here as AWS groups them: each child gets
  ``{"Items": [up to MaxItemsPerBatch items], "BatchInput": <BatchInput evaluated on the Map's input>}``.
- **Tolerated failures**: moto lets a Distributed Map succeed when child executions fail; AWS fails
  it with ``States.ExceedToleratedFailureThreshold`` once more than ``ToleratedFailureCount`` /
  ``ToleratedFailurePercentage`` (default 0) failed. Emulated, so Catch sends the scan to quarantine
  as in AWS instead of going on with batches missing.

:func:`install` patches moto's distributed Map run once per process; :func:`register` tells it the
batchers of a created state machine (by ARN).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_lock = threading.Lock()
_batchers: dict[tuple[str, str], Batcher] = {}
_installed = False


@dataclass(frozen=True)
class Batcher:
    """One Map's ItemBatcher: at most ``max_items`` per batch, ``batch_input`` a payload template."""

    max_items: int
    batch_input: Mapping[str, Any] | None = None


def _maps(states: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        if state.get("Type") == "Map":
            yield name, state
        for nested in (state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])):
            if nested:
                yield from _maps(nested.get("States", {}))


def for_moto(definition: str) -> tuple[str, dict[str, Batcher]]:
    """The definition without ItemBatcher, and the batchers taken out (by Map state name).

    Examples
    --------
    >>> text = json.dumps({"StartAt": "M", "States": {"M": {"Type": "Map", "ItemBatcher":
    ...     {"MaxItemsPerBatch": 2}, "ItemProcessor": {"StartAt": "P", "States": {}}, "End": True}}})
    >>> moto_text, batchers = for_moto(text)
    >>> "ItemBatcher" in moto_text, batchers["M"].max_items
    (False, 2)
    """
    asl = json.loads(definition)
    batchers: dict[str, Batcher] = {}
    for name, state in _maps(asl.get("States", {})):
        batcher = state.pop("ItemBatcher", None)
        if batcher is None:
            continue
        unsupported = set(batcher) - {"MaxItemsPerBatch", "BatchInput"}
        if unsupported:
            raise ValueError(f"Map {name}: ItemBatcher fields not emulated locally: {sorted(unsupported)}")
        batchers[name] = Batcher(int(batcher.get("MaxItemsPerBatch", 1)), batcher.get("BatchInput"))
    return json.dumps(asl), batchers


def register(state_machine_arn: str, batchers: Mapping[str, Batcher]) -> None:
    """Batch the Maps named in ``batchers`` of the state machine ``state_machine_arn``."""
    with _lock:
        for name, batcher in batchers.items():
            _batchers[(state_machine_arn, name)] = batcher


def evaluate_template(template: Any, data: Any) -> Any:
    """A payload template (``"key.$": "$.path"``) evaluated on ``data`` (JSONPath only: the ASL's
    BatchInputs use no intrinsic functions)."""
    from moto.stepfunctions.parser.asl.utils.json_path import extract_json

    if isinstance(template, Mapping):
        out: dict[str, Any] = {}
        for key, value in template.items():
            if key.endswith(".$") and isinstance(value, str):
                out[key[:-2]] = copy.deepcopy(extract_json(value, data))
            else:
                out[key] = evaluate_template(value, data)
        return out
    if isinstance(template, list):
        return [evaluate_template(v, data) for v in template]
    return template


def batch(items: list[Any], batcher: Batcher, state_input: Any) -> list[dict[str, Any]]:
    """Items grouped as ItemBatcher groups them.

    Examples
    --------
    >>> batch([1, 2, 3], Batcher(2, {"id.$": "$.id"}), {"id": "s"})
    [{'Items': [1, 2], 'BatchInput': {'id': 's'}}, {'Items': [3], 'BatchInput': {'id': 's'}}]
    """
    size = max(1, batcher.max_items)
    batch_input = evaluate_template(batcher.batch_input, state_input) if batcher.batch_input else None
    out = []
    for start in range(0, len(items), size):
        job: dict[str, Any] = {"Items": items[start : start + size]}
        if batch_input is not None:
            job["BatchInput"] = copy.deepcopy(batch_input)
        out.append(job)
    return out


def _exceeds_tolerance(record: Any, total: int) -> bool:
    failed = int(record.item_counter.failed.get()) + int(record.item_counter.timed_out.get())
    if failed == 0:
        return False
    count = int(record.tolerated_failure_count or 0)
    percentage = float(record.tolerated_failure_percentage or 0)
    if count and failed <= count:
        return False
    return not (percentage and total and failed * 100.0 / total <= percentage)


def install() -> None:
    """Patch moto's distributed Map run (once per process)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
        distributed_iteration_component as distributed,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    component = distributed.DistributedIterationComponent
    original = component._map_run

    def map_run(self: Any, env: Any, eval_input: Any) -> None:
        machine = env.states.context_object.context_object_data["StateMachine"]["Id"]
        with _lock:
            batcher = _batchers.get((machine, eval_input.state_name))
        items = env.stack.pop()
        if batcher is not None and isinstance(items, list):
            items = batch(items, batcher, env.states.get_input())
        env.stack.append(items)
        original(self, env, eval_input)
        total = len(items) if isinstance(items, list) else 0
        if _exceeds_tolerance(eval_input.map_run_record, total):
            env.stack.pop()
            error = StatesErrorName(typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold)
            raise FailureEventException(
                failure_event=FailureEvent(
                    env=env,
                    error_name=error,
                    event_type=HistoryEventType.MapRunFailed,
                    event_details=EventDetails(  # type: ignore[typeddict-item]
                        mapRunFailedEventDetails=MapRunFailedEventDetails(
                            error=error.error_name,
                            cause="The specified tolerated failure threshold was exceeded",
                        )
                    ),
                )
            )

    component._map_run = map_run  # type: ignore[method-assign]
