"""Workflow step validate_batch: header-only validation and SHA-256 of a batch of files.

A thin handler: parse the event (:mod:`dicomflow.workflow.models`), call
:mod:`dicomflow.workflow.validate_batch`, return its result. The scan id is the correlation id of every log
line; neither the event nor the result is logged or traced whole (only counts and codes).
Runs under powertools idempotency (scan id + first index): a duplicate delivery gets the recorded result.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from dicomflow.workflow import failures, validate_batch
from dicomflow.workflow.context import step_context
from dicomflow.workflow.models import BatchEvent, log_fields

SERVICE = "validate_batch"
logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace="dicomflow", service=SERVICE)


def _run(event: dict[str, Any]) -> dict[str, Any]:
    return validate_batch.run(step_context(), BatchEvent.parse(event))


@logger.inject_lambda_context(log_event=False, correlation_id_path="BatchInput.scan_id")
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with failures.recorded(SERVICE, event):  # a failed Map says only that a batch failed
        result = step_context().idempotent(SERVICE, _run, context)(event=event)
    metrics.add_metric(name="FilesValidated", unit=MetricUnit.Count, value=result["count"])
    logger.info("step done", extra=log_fields(result))
    return result
