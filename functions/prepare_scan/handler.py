"""Workflow step prepare_scan: UPLOADED -> VALIDATING and the scan's work items (keys only).

A thin handler: parse the event (:mod:`dicomflow.workflow.models`), call
:mod:`dicomflow.workflow.prepare`, return its result. The scan id is the correlation id of every log
line; neither the event nor the result is logged or traced whole (only counts and codes).
Naturally idempotent (see the step's module).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from dicomflow.workflow import prepare
from dicomflow.workflow.context import step_context
from dicomflow.workflow.models import PrepareScanEvent, log_fields

SERVICE = "prepare_scan"
logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace="dicomflow", service=SERVICE)


@logger.inject_lambda_context(log_event=False, correlation_id_path="scan_id")
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = prepare.run(step_context(), PrepareScanEvent.parse(event))
    metrics.add_metric(name="ScansPrepared", unit=MetricUnit.Count, value=result["file_count"])
    logger.info("step done", extra=log_fields(result))
    return result
