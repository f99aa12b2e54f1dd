"""The CDK app (``cdk synth`` / ``cdk deploy``): reads cdk.json context, here and nowhere else.

Context keys (``cdk deploy -c key=value`` overrides cdk.json) are documented in the README's Deploy
section; each maps to one :class:`cdk.config.StackConfig` field.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import aws_cdk as cdk

from cdk.config import StackConfig
from cdk.nag import add_checks
from cdk.stack import DicomflowStack

#: context key -> (StackConfig field, how to read the value: the CLI passes every -c value as text).
CONTEXT_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "environment": ("environment", str),
    "rawRetentionDays": ("raw_retention_days", int),
    "logRetentionDays": ("log_retention_days", int),
    "alarmEmail": ("alarm_email", str),
    "apiDomainName": ("api_domain_name", str),
    "apiCertificateArn": ("api_certificate_arn", str),
    "mtlsTruststoreUri": ("mtls_truststore_uri", str),
    "modelUri": ("model_uri", str),
    "modelSha256": ("model_sha256", str),
    "logLevel": ("log_level", lambda v: str(v).upper()),
    "objectLock": ("object_lock", lambda v: v is True or str(v).lower() in ("true", "1", "yes")),
    "abortIncompleteUploadDays": ("abort_incomplete_upload_days", int),
    "tombstoneRetentionDays": ("tombstone_retention_days", int),
    "noncurrentVersionDays": ("noncurrent_version_days", int),
}


def config_from_context(get: Callable[[str], Any]) -> StackConfig:
    """The stack's configuration from context values (``get`` is ``app.node.try_get_context``)."""
    values = {}
    for key, (field, parse) in CONTEXT_KEYS.items():
        raw = get(key)
        if raw is not None and raw != "":
            values[field] = parse(raw)
    return StackConfig(**values)


def build(app: cdk.App) -> DicomflowStack:
    """The stack, configured from ``app``'s context, with cdk-nag's packs checking every synth."""
    config = config_from_context(app.node.try_get_context)
    stack = DicomflowStack(
        app,
        f"Dicomflow-{config.environment}",
        config=config,
        description=f"dicomflow {config.environment}: DICOM upload, validation, de-identification, analysis",
        env=cdk.Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")
        ),
    )
    cdk.Tags.of(stack).add("project", "dicomflow")
    cdk.Tags.of(stack).add("environment", config.environment)
    add_checks(app)
    return stack


if __name__ == "__main__":
    app = cdk.App()
    build(app)
    app.synth()
