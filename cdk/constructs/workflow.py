"""The workflow: the scan state machine from the shared ASL, and the status-event bus.

The state machine's definition is ``dicomflow.topology.asl_text()`` verbatim, the same text the local
stack runs; its ``${substitutions}`` are filled by CloudFormation (``DefinitionSubstitutions``) with
the deployed resources, each name mapped by convention (:func:`substitution_value`), so a name the ASL
adds is picked up without touching this file, and one nobody can map fails synth naming it. The
state machine's permissions are read off the ASL too: it may invoke the functions it names, read the
buckets its Maps read, write where its Maps write, run the analysis task if it has an ECS task, put
events if it has an EventBridge task, and start its own child executions if it has a Distributed Map.

Logging is ALL (with execution data: by contract only keys, counts and reason codes travel through
it) to a KMS-encrypted log group; X-Ray tracing is on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jsii
from aws_cdk import ArnFormat, Aws, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.interfaces.aws_events import IRuleRef
from constructs import Construct

from cdk.config import StackConfig
from cdk.constructs.functions import bucket_binding, logical_ref
from cdk.constructs.inference import Inference
from cdk.nag import acknowledge
from dicomflow import topology

_WORD = re.compile(r"[^a-z0-9]")


class StatusEvents(Construct):
    """The bus for scan status events, an archive for replay, and a rule that keeps every event in
    an encrypted log group (the dashboard's feed), with a dead-letter queue for failed deliveries."""

    def __init__(self, scope: Construct, id: str, *, config: StackConfig, key: kms.IKey) -> None:
        super().__init__(scope, id)
        # The bus carries dicomflow's status events only: every event on it is kept, whatever its
        # source or detail type.
        every_event = events.EventPattern(account=[Stack.of(self).account])
        self.bus = events.EventBus(self, "Bus", description="dicomflow scan status events", kms_key=key)
        self.bus.archive(
            "Archive",
            description="Status events, for replay",
            event_pattern=every_event,
            retention=Duration.days(config.log_retention_days),
        )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            encryption_key=key,
            retention=config.log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        rule = events.Rule(
            self,
            "ToLogs",
            event_bus=self.bus,
            description="Every scan status event into the status log group",
            event_pattern=every_event,
            targets=[_LogGroupTarget(self.log_group, self.dead_letters)],
        )
        # What CDK's CloudWatchLogGroup target would do with a custom-resource Lambda, done with plain
        # resources: EventBridge may write this rule's events to this log group, and dead-letter them.
        logs.ResourcePolicy(
            self,
            "LogsPolicy",
            policy_statements=[
                iam.PolicyStatement(
                    principals=[
                        iam.ServicePrincipal("events.amazonaws.com"),
                        iam.ServicePrincipal("delivery.logs.amazonaws.com"),
                    ],
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[self.log_group.log_group_arn],
                )
            ],
        )
        self.dead_letters.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[self.dead_letters.queue_arn],
                conditions={"ArnEquals": {"aws:SourceArn": rule.rule_arn}},
            )
        )
        # Dead letters are encrypted with the data key: EventBridge needs it to send them.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                # Not the rule's ARN: the rule depends on the bus, which depends on this key.
                conditions={
                    "StringEquals": {
                        "aws:SourceAccount": Stack.of(self).account,
                        "kms:ViaService": f"sqs.{Stack.of(self).region}.amazonaws.com",
                    }
                },
            )
        )
        acknowledge(
            self.dead_letters,
            {
                "AwsSolutions-SQS3": "This queue is the dead-letter queue (of the status-event rule).",
            },
        )


@jsii.implements(events.IRuleTarget)
class _LogGroupTarget:
    """A log group as a rule target, with a dead-letter queue and no custom resource."""

    def __init__(self, log_group: logs.ILogGroup, dead_letters: sqs.IQueue) -> None:
        self._log_group = log_group
        self._dead_letters = dead_letters

    def bind(self, rule: IRuleRef, id: str | None = None) -> events.RuleTargetConfig:
        stack = Stack.of(self._log_group)
        arn = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=self._log_group.log_group_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        return events.RuleTargetConfig(
            arn=arn,
            dead_letter_config=events.CfnRule.DeadLetterConfigProperty(arn=self._dead_letters.queue_arn),
            retry_policy=events.CfnRule.RetryPolicyProperty(
                maximum_retry_attempts=8, maximum_event_age_in_seconds=24 * 3600
            ),
        )


class ScanWorkflow(Construct):
    """The state machine (``state_machine``) and its log group."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: StackConfig,
        key: kms.IKey,
        functions: Mapping[str, lambda_.IFunction],
        buckets: Mapping[str, s3.IBucket],
        events_bus: events.IEventBus,
        inference: Inference,
        values: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            encryption_key=key,
            retention=config.log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )
        text = topology.asl_text()
        names = sorted(topology.asl_substitution_names())
        resolver = _Resolver(functions, buckets, events_bus, inference, values or {})
        substitutions = {name: resolver.value(name) for name in names}
        definition = json.loads(_placeholders(text, names))
        distributed = any(
            s.get("ProcessorConfig", {}).get("Mode") == "DISTRIBUTED" for s in _map_states(definition)
        )
        stack = Stack.of(self)
        name = f"{stack.stack_name}-scan" if distributed else None

        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(text),
            definition_substitutions=substitutions,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            tracing_enabled=True,
        )
        role = self.state_machine.role
        invoke: dict[str, str] = {}
        for function_name in resolver.functions_used:
            functions[function_name].grant_invoke(role)
            ref = logical_ref(functions[function_name])
            invoke[f"AwsSolutions-IAM5[Resource::{ref}:*]"] = (
                f"CDK's grant_invoke adds {function_name}'s versions and aliases (ARN:*); only that function."
            )
        acknowledge(role, invoke)
        for state in _map_states(definition):
            for role_name in _buckets_in(state.get("ItemReader"), resolver.bucket_of):
                bucket_binding(buckets[role_name], role_name).grant(role, "read")  # type: ignore[arg-type]
            for role_name in _buckets_in(state.get("ResultWriter"), resolver.bucket_of):
                bucket_binding(buckets[role_name], role_name).grant(role, "write")  # type: ignore[arg-type]
        resources = {s.get("Resource", "") for s in _all_states(definition)}
        if any(r.startswith("arn:aws:states:::events:putEvents") for r in resources):
            events_bus.grant_put_events_to(role)
        if any(r.startswith("arn:aws:states:::ecs:runTask") for r in resources):
            inference.task_definition.grant_run(role)
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["ecs:StopTask", "ecs:DescribeTasks"],
                    resources=["*"],
                    conditions={"ArnEquals": {"ecs:cluster": inference.cluster.cluster_arn}},
                )
            )
            # .sync waits on the task through a rule that Step Functions manages in this account.
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                    resources=[
                        stack.format_arn(
                            service="events",
                            resource="rule",
                            resource_name="StepFunctionsGetEventsForECSTaskRule",
                        )
                    ],
                )
            )
        if distributed:
            own = stack.format_arn(
                service="states",
                resource="stateMachine",
                resource_name=name,
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            executions = stack.format_arn(
                service="states",
                resource="execution",
                resource_name=f"{name}/*",
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            role.add_to_principal_policy(
                iam.PolicyStatement(actions=["states:StartExecution"], resources=[own])
            )
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["states:DescribeExecution", "states:StopExecution"], resources=[executions]
                )
            )
        acknowledge(
            role,
            {
                "AwsSolutions-IAM5[Resource::*]": "Resource * only where the service has no resource-level "
                "permissions: X-Ray segments, CloudWatch Logs delivery for the state machine's own "
                "logging, and ECS StopTask/DescribeTasks (held to the analysis cluster by a condition).",
            },
        )
        self.substitutions = substitutions
        self.definition = definition


def substitution_value(
    name: str,
    *,
    functions: Mapping[str, Any],
    buckets: Mapping[str, Any],
    bus: Any,
    inference: Any,
) -> str:
    """What fills ``${name}``, by convention (case and separators ignored):

    ``FunctionArn_<function>`` the function's ARN; ``...<role>...Bucket...`` a bucket's name (roles
    from ``topology.BUCKETS``); ``...Cluster...`` the cluster's ARN; ``...TaskDefinition...`` the task
    definition's ARN; ``...Subnet<N>`` / ``...Subnets`` the Nth isolated subnet id / all of them
    comma-separated; ``...SecurityGroup...`` the task's security group id; ``...Container...`` the
    container's name; ``...Bus...`` the status bus's name.
    """
    resolver = _Resolver(functions, buckets, bus, inference, {})
    return resolver.value(name)


class _Resolver:
    def __init__(
        self,
        functions: Mapping[str, Any],
        buckets: Mapping[str, Any],
        bus: Any,
        inference: Any,
        values: Mapping[str, str],
    ) -> None:
        self._functions = functions
        self._buckets = buckets
        self._bus = bus
        self._inference = inference
        self._values = values
        self.functions_used: list[str] = []
        self.bucket_of: dict[str, str] = {}

    def value(self, name: str) -> str:
        if name in self._values:
            return self._values[name]
        for function_name in self._functions:
            if name == topology.function_substitution(function_name):
                self.functions_used.append(function_name)
                return str(self._functions[function_name].function_arn)
        word = _WORD.sub("", name.lower())
        if "bucket" in word:
            roles = [r for r in self._buckets if r in word]
            if len(roles) == 1:
                self.bucket_of[name] = roles[0]
                return str(self._buckets[roles[0]].bucket_name)
        inference = self._inference
        if "taskdefinition" in word or "taskdef" in word:
            return str(inference.task_definition.task_definition_arn)
        if "cluster" in word:
            return str(inference.cluster.cluster_arn)
        if "subnet" in word:
            subnets = inference.vpc.isolated_subnets
            index = re.search(r"(\d+)$", word)
            if index:
                return str(subnets[int(index.group(1))].subnet_id)
            return Fn.join(",", [s.subnet_id for s in subnets])
        if "securitygroup" in word:
            return str(inference.security_group.security_group_id)
        if "container" in word:
            return str(inference.container_name)
        if "bus" in word:
            return str(self._bus.event_bus_name)
        if word in ("region", "awsregion"):
            return Aws.REGION
        raise KeyError(
            f"the ASL's substitution ${{{name}}} maps to nothing: name it by the conventions of "
            "cdk.constructs.workflow.substitution_value (or pass its value explicitly)"
        )


def _placeholders(text: str, names: list[str]) -> str:
    """The ASL with each substitution replaced by a string that keeps the JSON valid for reading."""
    for name in names:
        text = text.replace("${" + name + "}", f"__{name}__")
    return text


def _all_states(definition: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for state in definition.get("States", {}).values():
        yield state
        for nested in (state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])):
            if nested:
                yield from _all_states(nested)


def _map_states(definition: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    return (s for s in _all_states(definition) if s.get("Type") == "Map")


def _buckets_in(block: Any, bucket_of: Mapping[str, str]) -> Iterator[str]:
    """The bucket roles whose substitutions appear in ``block`` (an ItemReader or ResultWriter)."""
    text = json.dumps(block or {})
    return iter(sorted({role for name, role in bucket_of.items() if f"__{name}__" in text}))
