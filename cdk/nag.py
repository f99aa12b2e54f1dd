"""Compliance checks shared by app.py and the tests: cdk-nag packs and justified exceptions.

Every acknowledgment (cdk-nag) and skip (checkov) sits beside the resource it is about and carries a
reason specific to it; :func:`acknowledge` and :func:`checkov_skip` are the only ways this app
records one, so the tests can list them all.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, App, CfnResource, Validations
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks
from constructs import IConstruct


def add_checks(app: App) -> None:
    """Run the AwsSolutions and HIPAA Security packs on every synth; an unacknowledged error fails it."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app), HIPAASecurityChecks(app))


def acknowledge(scope: IConstruct, reasons: dict[str, str]) -> None:
    """Acknowledge cdk-nag findings on ``scope`` (and below): rule id (with ``[finding]``) -> reason."""
    Validations.of(scope).acknowledge(*(Acknowledgment(id=i, reason=r) for i, r in reasons.items()))


def checkov_skip(resource: IConstruct, reasons: dict[str, str]) -> None:
    """Record justified checkov skips in a resource's template metadata (checkov reads them)."""
    cfn = resource if isinstance(resource, CfnResource) else resource.node.default_child
    assert isinstance(cfn, CfnResource), f"{resource.node.path} has no CloudFormation resource"
    existing = cfn.get_metadata("checkov") or {"skip": []}
    existing["skip"].extend({"id": i, "comment": r} for i, r in reasons.items())
    cfn.add_metadata("checkov", existing)
