"""The dicomflow stack: composes the constructs, one per concern, in the order they depend on.

Storage -> status events -> workflow functions -> inference -> state machine -> upload API ->
observability. What each function may touch comes from ``dicomflow.topology``; this file only wires.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from cdk.config import StackConfig
from cdk.constructs.api import UploadApi
from cdk.constructs.functions import (
    Binding,
    Functions,
    bucket_binding,
    bus_binding,
    data_key_binding,
    mac_key_binding,
    state_machine_binding,
    table_binding,
)
from cdk.constructs.inference import Inference
from cdk.constructs.observability import Observability
from cdk.constructs.storage import Storage
from cdk.constructs.workflow import ScanWorkflow, StatusEvents
from cdk.nag import acknowledge
from dicomflow import topology


class DicomflowStack(Stack):
    """Everything a deployment of dicomflow needs, for one environment."""

    def __init__(self, scope: Construct, id: str, *, config: StackConfig, **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        self.config = config
        self.storage = Storage(self, "Storage", config=config)
        key = self.storage.data_key
        self.status_events = StatusEvents(self, "StatusEvents", config=config, key=key)

        bindings: dict[str, Binding] = {
            **{f"bucket:{r}": bucket_binding(b, r) for r, b in self.storage.buckets.items()},
            **{f"table:{r}": table_binding(t) for r, t in self.storage.tables.items()},
            "key:data": data_key_binding(key),
            "key:pseudonym": mac_key_binding(self.storage.pseudonym_key),
            "bus:events": bus_binding(self.status_events.bus),
        }
        self.functions = Functions(self, "Functions", config=config, key=key)
        for name in topology.WORKFLOW_FUNCTIONS:
            self.functions.add(name, bindings=bindings)

        self.inference = Inference(self, "Inference", config=config, key=key, bindings=bindings)
        self.workflow = ScanWorkflow(
            self,
            "Workflow",
            config=config,
            key=key,
            functions=self.functions.functions,
            buckets=self.storage.buckets,
            events_bus=self.status_events.bus,
            inference=self.inference,
        )
        bindings["state_machine:scan"] = state_machine_binding(self.workflow.state_machine)
        upload = self.functions.add("upload_api", bindings=bindings)
        self.api = UploadApi(self, "UploadApi", config=config, handler=upload, key=key)

        self.observability = Observability(
            self,
            "Observability",
            config=config,
            key=key,
            state_machine=self.workflow.state_machine,
            functions=self.functions.functions,
            dead_letter_queues={
                **self.functions.dead_letter_queues,
                "status_events": self.status_events.dead_letters,
            },
            api=self.api.api,
            status_logs=self.status_events.log_group,
        )

        acknowledge(
            self,
            {
                "HIPAA.Security-IAMNoInlinePolicy": "Every role gets its permissions from CDK grants as an "
                "AWS::IAM::Policy attached to that one role, scoped to the resources it uses: a managed "
                "policy would be the same document, reusable by roles it was not written for.",
            },
        )
        CfnOutput(self, "ApiUrl", value=self.api.url, description="dicomflow upload --api <this>")
        CfnOutput(self, "StateMachineArn", value=self.workflow.state_machine.state_machine_arn)
        CfnOutput(self, "AlarmTopicArn", value=self.observability.topic.topic_arn)
        for role, bucket in self.storage.buckets.items():
            CfnOutput(self, f"{role.capitalize()}BucketName", value=bucket.bucket_name)
