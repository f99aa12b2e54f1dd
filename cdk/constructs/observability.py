"""Observability: alarms to an encrypted SNS topic (optionally mailed) and one dashboard.

Alarms: any failed execution, any message in a dead-letter queue, any Lambda error, any 5xx on the
API (each over five minutes; no data is not a breach). The dashboard shows the same signals beside
throughput and latency, and the latest status events (from the status log group; they carry scan
ids and states, never PHI).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk.config import StackConfig

PERIOD = Duration.minutes(5)


class Observability(Construct):
    """``topic`` (alarm notifications), ``alarms`` by name, ``dashboard``."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: StackConfig,
        key: kms.IKey,
        state_machine: sfn.StateMachine,
        functions: Mapping[str, lambda_.Function],
        dead_letter_queues: Mapping[str, sqs.IQueue],
        api: apigw.RestApi,
        status_logs: logs.ILogGroup,
    ) -> None:
        super().__init__(scope, id)
        self.topic = sns.Topic(
            self,
            "Alarms",
            display_name=f"dicomflow {config.environment} alarms",
            master_key=key,
            enforce_ssl=True,
        )
        # CloudWatch publishes alarms into the encrypted topic: it needs the key for that alone.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"kms:ViaService": f"sns.{Stack.of(self).region}.amazonaws.com"}},
            )
        )
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))

        self.alarms: dict[str, cloudwatch.Alarm] = {}
        self._alarm(
            "ExecutionsFailed",
            state_machine.metric_failed(period=PERIOD, statistic="Sum"),
            "A scan's workflow execution failed (not a rejection: those end in quarantine successfully)",
        )
        self._alarm(
            "ExecutionsTimedOut",
            state_machine.metric_timed_out(period=PERIOD, statistic="Sum"),
            "A scan's workflow execution timed out",
        )
        for name, queue in dead_letter_queues.items():
            self._alarm(
                f"DeadLetters{_title(name)}",
                queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum"),
                f"Messages waiting in the dead-letter queue of {name}",
            )
        for name, function in functions.items():
            self._alarm(
                f"Errors{_title(name)}",
                function.metric_errors(period=PERIOD, statistic="Sum"),
                f"Lambda {name} raised (the workflow retries or quarantines; look at its log group)",
            )
        self._alarm(
            "Api5xx",
            api.metric_server_error(period=PERIOD, statistic="Sum"),
            "The upload API answered 5xx (devices retry; a run of them blocks uploads)",
        )

        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", default_interval=Duration.hours(6))
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Scans (executions)",
                left=[
                    state_machine.metric_started(period=PERIOD),
                    state_machine.metric_succeeded(period=PERIOD),
                    state_machine.metric_failed(period=PERIOD),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Upload API",
                left=[
                    api.metric_count(period=PERIOD),
                    api.metric_client_error(period=PERIOD),
                    api.metric_server_error(period=PERIOD),
                ],
                right=[api.metric_latency(period=PERIOD, statistic="p99")],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Lambda errors",
                left=[f.metric_errors(period=PERIOD, label=n) for n, f in functions.items()],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Lambda duration p99",
                left=[
                    f.metric_duration(period=PERIOD, statistic="p99", label=n) for n, f in functions.items()
                ],
                width=12,
            ),
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=12),
            cloudwatch.LogQueryWidget(
                title="Latest status events",
                log_group_names=[status_logs.log_group_name],
                query_lines=[
                    "fields @timestamp, `detail-type`, @message",
                    "sort @timestamp desc",
                    "limit 50",
                ],
                width=12,
            ),
        )

    def _alarm(self, id: str, metric: cloudwatch.Metric, description: str) -> None:
        alarm = metric.create_alarm(
            self,
            id,
            alarm_description=description,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        self.alarms[id] = alarm


def _title(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
