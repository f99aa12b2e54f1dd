"""Workflow step publish: the results record, COMPLETED, the status event.

A thin handler: parse the event (:mod:`dicomflow.workflow.models`), call
:mod:`dicomflow.workflow.publish`, return its result. The scan id is the correlation id of every log
line; neither the event nor the result is logged or traced whole (only counts and codes).
Naturally idempotent (see the step's module).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from dicomflow.workflow import publish
from dicomflow.workflow.context import step_context
from dicomflow.workflow.models import PublishEvent, log_fields

SERVICE = "publish"
logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace="dicomflow", service=SERVICE)


@logger.inject_lambda_context(log_event=False, correlation_id_path="scan_id")
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = publish.run(step_context(), PublishEvent.parse(event))
    metrics.add_metric(name="ScansCompleted", unit=MetricUnit.Count, value=1)
    logger.info("step done", extra=log_fields(result))
    return result
