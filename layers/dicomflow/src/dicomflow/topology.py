"""The one description of dicomflow's serverless topology, read by the CDK app and the local stack.

Functions (handler, memory, timeout, the settings each needs, what each may touch), buckets, tables,
the event bus and the state machine's ASL with its ``${substitutions}`` are declared here once, so
the stack that runs in AWS and the one that runs on a laptop cannot drift apart. Nothing here
imports boto3 or aws-cdk-lib: this is data.

The ASL's substitutions (stable names; the CDK app fills them with CloudFormation's
``DefinitionSubstitutions``, the local stack with what it created in moto, both through
:func:`render_asl`):

``FunctionArn_<function>``  each workflow function's ARN (:func:`function_substitution`)
``IngestBucketName``, ``DeidentifiedBucketName``, ``ResultsBucketName``  the buckets' names
``AnalysisClusterArn``, ``AnalysisTaskDefinitionArn``  the ECS cluster and the analysis task
``AnalysisSubnet0``, ``AnalysisSubnet1``  the two (isolated) subnets the task runs in
``AnalysisSecurityGroupId``  the task's security group
``AnalysisContainerName``  the container that the ASL's overrides address
(:data:`ASL_RESOURCES` maps every name but the functions' to its resource.)

Examples
--------
>>> sorted(FUNCTIONS)[:3]
['deidentify_batch', 'deidentify_scan', 'prepare_scan']
>>> FUNCTIONS["validate_batch"].handler
'functions.validate_batch.handler.lambda_handler'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

Access = Literal["read", "write", "read_write"]

#: Buckets by role. ``ingest`` holds raw PHI as uploaded; ``deidentified`` only files that passed
#: the leak check; ``results`` the analysis outputs.
BUCKETS: tuple[str, ...] = ("ingest", "deidentified", "results")
#: DynamoDB tables by role: scan status (``dicomflow.upload.scans_table``) and the handlers'
#: idempotency records (powertools).
TABLES: tuple[str, ...] = ("scans", "idempotency")
#: Settings field (``dicomflow.settings.Settings``) that carries each resource's name or id.
SETTING_OF: dict[str, str] = {
    "bucket:ingest": "ingest_bucket",
    "bucket:deidentified": "deidentified_bucket",
    "bucket:results": "results_bucket",
    "table:scans": "scans_table",
    "table:idempotency": "idempotency_table",
    "key:data": "kms_key_id",
    "key:pseudonym": "pseudonym_key_id",
    "bus:events": "event_bus_name",
    "state_machine:scan": "state_machine_arn",
}


@dataclass(frozen=True)
class FunctionSpec:
    """One Lambda function: where its handler is and what it may touch.

    ``uses`` maps a resource (``"bucket:ingest"``, ``"table:scans"``, ``"key:pseudonym"``...) to the
    access it needs; the CDK app turns each into a ``grant_*`` and an environment variable (the
    resource's settings field, upper-cased with ``DICOMFLOW_``), the local stack into the same
    variable pointing at moto.
    """

    name: str
    description: str
    memory_mb: int = 512
    timeout_s: int = 60
    uses: Mapping[str, Access] = field(default_factory=dict)
    reserved_concurrency: int | None = None

    @property
    def code_dir(self) -> str:
        """The handler's folder, relative to the repository root."""
        return f"functions/{self.name}"

    @property
    def handler(self) -> str:
        """The handler as a dotted path from the repository root (the local stack imports it)."""
        return f"functions.{self.name}.handler.lambda_handler"

    @property
    def environment_settings(self) -> tuple[str, ...]:
        """The settings fields this function reads (besides region and log level)."""
        return tuple(sorted(SETTING_OF[r] for r in self.uses))


def _fn(name: str, description: str, **kwargs: Any) -> FunctionSpec:
    return FunctionSpec(name=name, description=description, **kwargs)


_STATUS: dict[str, Access] = {"table:scans": "read_write", "bus:events": "write"}

FUNCTIONS: dict[str, FunctionSpec] = {
    f.name: f
    for f in (
        _fn(
            "upload_api",
            "Upload API: scans, presigned multipart plans, completion; starts the workflow",
            memory_mb=512,
            timeout_s=29,  # API Gateway's integration limit
            uses={
                "bucket:ingest": "read_write",
                "key:data": "read_write",
                "state_machine:scan": "write",
                **_STATUS,
            },
        ),
        _fn(
            "prepare_scan",
            "Workflow: VALIDATING; writes the scan's work items (keys only) for the Maps",
            uses={"bucket:ingest": "read_write", "key:data": "read_write", **_STATUS},
        ),
        _fn(
            "validate_batch",
            "Workflow: header-only validation and SHA-256 of a batch of files",
            memory_mb=1024,
            timeout_s=300,
            uses={"bucket:ingest": "read_write", "key:data": "read_write", "table:idempotency": "read_write"},
        ),
        _fn(
            "validate_scan",
            "Workflow: scan-level checks over the batches' reports; DEIDENTIFYING or rejection",
            timeout_s=120,
            uses={"bucket:ingest": "read_write", "key:data": "read_write", **_STATUS},
        ),
        _fn(
            "deidentify_batch",
            "Workflow: PS3.15 de-identification S3 to S3 (UploadPartCopy), leak check, pixel proof",
            memory_mb=1024,
            timeout_s=900,
            uses={
                "bucket:ingest": "read_write",
                "bucket:deidentified": "read_write",
                "key:data": "read_write",
                "key:pseudonym": "read",
                "table:idempotency": "read_write",
            },
        ),
        _fn(
            "deidentify_scan",
            "Workflow: the de-identified manifest; ANALYZING or rejection (leak, held, failed)",
            timeout_s=120,
            uses={
                "bucket:ingest": "read_write",
                "bucket:deidentified": "read_write",
                "key:data": "read_write",
                **_STATUS,
            },
        ),
        _fn(
            "publish",
            "Workflow: results record, COMPLETED, the status event",
            uses={"bucket:results": "read", "key:data": "read", **_STATUS},
        ),
        _fn(
            "quarantine",
            "Workflow: REJECTED or FAILED with reasons; originals kept and tagged; the status event",
            uses={"bucket:ingest": "read_write", "key:data": "read_write", **_STATUS},
        ),
    )
}

#: The workflow's functions (everything but the API), in the order a scan meets them.
WORKFLOW_FUNCTIONS: tuple[str, ...] = (
    "prepare_scan",
    "validate_batch",
    "validate_scan",
    "deidentify_batch",
    "deidentify_scan",
    "publish",
    "quarantine",
)

#: The analysis task (ECS Fargate, arm64; locally a process of ml_container/entrypoint.py).
ANALYSIS_TASK: dict[str, Any] = {
    "container_name": "analysis",
    "cpu": 4096,
    "memory_mb": 8192,
    "uses": {"bucket:deidentified": "read", "bucket:results": "read_write", "key:data": "read_write"},
}

#: Files per Lambda invocation in the Maps (Distributed Map ItemBatcher).
BATCH_SIZE = 25
#: Batches in flight at once.
MAX_CONCURRENCY = 40

_SUBSTITUTION = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def asl_text() -> str:
    """The state machine's ASL, with its ``${substitutions}`` unresolved."""
    return resources.files("dicomflow").joinpath("statemachine/scan.asl.json").read_text("utf-8")


def asl_substitution_names() -> set[str]:
    """Every ``${name}`` the ASL expects."""
    return set(_SUBSTITUTION.findall(asl_text()))


def function_substitution(name: str) -> str:
    """The substitution that carries function ``name``'s ARN (``FunctionArn_validate_batch``)."""
    return f"FunctionArn_{name}"


def render_asl(substitutions: Mapping[str, str]) -> str:
    """The ASL with every substitution filled in; a missing one is an error naming it."""
    text = asl_text()
    missing = asl_substitution_names() - set(substitutions)
    if missing:
        raise KeyError(f"ASL substitutions missing: {', '.join(sorted(missing))}")
    rendered = _SUBSTITUTION.sub(lambda m: substitutions[m.group(1)], text)
    json.loads(rendered)  # a substitution must not break the JSON
    return rendered


#: The ASL's substitutions other than the functions' ARNs, by the resource (or attribute) each carries.
ASL_RESOURCES: dict[str, str] = {
    "IngestBucketName": "bucket:ingest",
    "DeidentifiedBucketName": "bucket:deidentified",
    "ResultsBucketName": "bucket:results",
    "AnalysisClusterArn": "ecs:cluster",
    "AnalysisTaskDefinitionArn": "ecs:task_definition",
    "AnalysisSubnet0": "ecs:subnet0",
    "AnalysisSubnet1": "ecs:subnet1",
    "AnalysisSecurityGroupId": "ecs:security_group",
    "AnalysisContainerName": "ecs:container_name",
}

#: The analysis container's entry point, relative to the repository root (locally run as a process).
ANALYSIS_ENTRYPOINT = "ml_container/entrypoint.py"

#: The names the local stack (embedded moto) gives each resource; in AWS, CloudFormation names them.
LOCAL_NAMES: dict[str, str] = {
    "bucket:ingest": "dicomflow-ingest",
    "bucket:deidentified": "dicomflow-deidentified",
    "bucket:results": "dicomflow-results",
    "table:scans": "dicomflow-scans",
    "table:idempotency": "dicomflow-idempotency",
    "bus:events": "dicomflow-status",
    "state_machine:scan": "dicomflow-scan",
    "ecs:cluster": "dicomflow-analysis",
    "ecs:task_family": "dicomflow-analysis",
}
