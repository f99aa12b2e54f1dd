"""The topology (:mod:`dicomflow.topology`) created in an embedded moto server.

:func:`provision` creates what the CDK app creates in AWS, from the same description: the buckets
(SSE-KMS by default with the data key), the KMS HMAC key for pseudonyms, the scans and idempotency
tables, the status event bus, one Lambda function per workflow step (its handler, memory, timeout and
settings; the code is never run by moto: :mod:`dicomflow.local.lambda_dispatch` runs the handler),
the analysis task's VPC, subnets, security group, cluster and task definition, and the state machine
from the shared ASL with its substitutions filled in (:func:`dicomflow.topology.render_asl`), less
what moto cannot parse (:mod:`dicomflow.local.sfn_emulation`).

moto must be told to execute state machines and to run Lambda without Docker:
:func:`configure_moto` posts that to the server's ``/moto-api/config``.
"""

from __future__ import annotations

import contextlib
import io
import json
import urllib.request
import zipfile
from dataclasses import dataclass, field
from typing import Any

from dicomflow import topology
from dicomflow.local import sfn_emulation
from dicomflow.local.moto_server import LocalAws
from dicomflow.upload.scans_table import create_idempotency_table, create_table

ROLE_NAME = "dicomflow-local"
#: moto's configuration for the local stack: execute real ASL, Lambda without Docker.
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


@dataclass
class Topology:
    """What :func:`provision` created: names and ARNs by topology resource, and the settings."""

    names: dict[str, str]
    functions: dict[str, str]  # function name -> ARN
    state_machine_arn: str
    substitutions: dict[str, str]
    settings: dict[str, str] = field(default_factory=dict)  # DICOMFLOW_* for handlers and the task

    def bucket(self, role: str) -> str:
        return self.names[f"bucket:{role}"]


def configure_moto(endpoint_url: str) -> None:
    """Tell the moto server at ``endpoint_url`` to execute state machines, Lambda without Docker."""
    request = urllib.request.Request(
        f"{endpoint_url}/moto-api/config",
        data=json.dumps(MOTO_CONFIG).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # localhost only
        response.read()


def _code_zip() -> bytes:
    """A placeholder deployment package: moto stores it, our dispatcher runs the real handler."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "dicomflow local stack: handlers run in-process\n")
    return buffer.getvalue()


def _kms_encrypted_bucket(s3: Any, name: str, key_id: str) -> None:
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        s3.create_bucket(Bucket=name)
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": key_id,
                    },
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )


def _analysis_network(local: LocalAws) -> dict[str, str]:
    ec2 = local.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    # FARGATE + awsvpc run_task in moto wants DNS hostnames on the VPC (NOTES).
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=f"{local.region}{az}")[
            "Subnet"
        ]["SubnetId"]
        for i, az in enumerate("ab")
    ]
    group = ec2.create_security_group(
        GroupName="dicomflow-analysis", Description="dicomflow analysis task", VpcId=vpc
    )["GroupId"]
    return {"ecs:subnet0": subnets[0], "ecs:subnet1": subnets[1], "ecs:security_group": group}


def provision(local: LocalAws, names: dict[str, str] | None = None) -> Topology:
    """Create the topology in ``local`` (a running moto server); existing resources are reused
    where moto allows (a second stack in one process shares moto's backends)."""
    names = {**topology.LOCAL_NAMES, **(names or {})}
    names["bucket:ingest"] = local.ingest_bucket
    names["table:scans"] = local.scans_table
    configure_moto(local.endpoint_url)

    kms = local.client("kms")
    pseudonym_key = kms.create_key(
        KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC", Description="dicomflow local pseudonym key"
    )["KeyMetadata"]["KeyId"]
    names["key:data"] = local.kms_key_id
    names["key:pseudonym"] = pseudonym_key

    s3 = local.client("s3")
    for role in topology.BUCKETS:
        _kms_encrypted_bucket(s3, names[f"bucket:{role}"], local.kms_key_id)
    dynamodb = local.client("dynamodb")
    with contextlib.suppress(dynamodb.exceptions.ResourceInUseException):
        create_table(dynamodb, names["table:scans"])
    with contextlib.suppress(dynamodb.exceptions.ResourceInUseException):
        create_idempotency_table(dynamodb, names["table:idempotency"])
    events = local.client("events")
    with contextlib.suppress(events.exceptions.ResourceAlreadyExistsException):
        events.create_event_bus(Name=names["bus:events"])

    iam = local.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {
                    "Service": ["lambda.amazonaws.com", "states.amazonaws.com", "ecs-tasks.amazonaws.com"]
                },
                "Action": "sts:AssumeRole",
            }
        ],
    }
    try:
        role_arn = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))["Role"][
            "Arn"
        ]
    except iam.exceptions.EntityAlreadyExistsException:
        role_arn = iam.get_role(RoleName=ROLE_NAME)["Role"]["Arn"]

    settings = {
        "DICOMFLOW_REGION": local.region,
        "DICOMFLOW_AWS_ENDPOINT_URL": local.endpoint_url,
        "DICOMFLOW_INGEST_BUCKET": names["bucket:ingest"],
        "DICOMFLOW_DEIDENTIFIED_BUCKET": names["bucket:deidentified"],
        "DICOMFLOW_RESULTS_BUCKET": names["bucket:results"],
        "DICOMFLOW_SCANS_TABLE": names["table:scans"],
        "DICOMFLOW_IDEMPOTENCY_TABLE": names["table:idempotency"],
        "DICOMFLOW_KMS_KEY_ID": names["key:data"],
        "DICOMFLOW_PSEUDONYM_KEY_ID": names["key:pseudonym"],
        "DICOMFLOW_EVENT_BUS_NAME": names["bus:events"],
    }

    lam = local.client("lambda")
    code = _code_zip()
    functions: dict[str, str] = {}
    for name in topology.WORKFLOW_FUNCTIONS:
        spec = topology.FUNCTIONS[name]
        own = {
            f"DICOMFLOW_{setting.upper()}": settings[f"DICOMFLOW_{setting.upper()}"]
            for setting in spec.environment_settings
            if f"DICOMFLOW_{setting.upper()}" in settings
        }
        function_name = f"dicomflow-{name}"
        try:
            arn = lam.create_function(
                FunctionName=function_name,
                Runtime="python3.12",
                Role=role_arn,
                Handler=spec.handler,
                Code={"ZipFile": code},
                Description=spec.description,
                Timeout=spec.timeout_s,
                MemorySize=spec.memory_mb,
                Environment={"Variables": {"DICOMFLOW_REGION": local.region, **own}},
                Architectures=["arm64"],
            )["FunctionArn"]
        except lam.exceptions.ResourceConflictException:
            arn = lam.get_function(FunctionName=function_name)["Configuration"]["FunctionArn"]
        functions[name] = arn

    ecs = local.client("ecs")
    cluster_arn = ecs.create_cluster(clusterName=names["ecs:cluster"])["cluster"]["clusterArn"]
    task = topology.ANALYSIS_TASK
    task_definition_arn = ecs.register_task_definition(
        family=names["ecs:task_family"],
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu=str(task["cpu"]),
        memory=str(task["memory_mb"]),
        runtimePlatform={"cpuArchitecture": "ARM64", "operatingSystemFamily": "LINUX"},
        containerDefinitions=[
            {
                "name": task["container_name"],
                "image": "dicomflow-analysis:local",
                "essential": True,
                # moto's run_task wants a container-level memory (NOTES).
                "memory": int(task["memory_mb"]),
                "environment": [{"name": "DICOMFLOW_REGION", "value": local.region}],
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    resources = {
        "ecs:cluster": cluster_arn,
        "ecs:task_definition": task_definition_arn,
        "ecs:container_name": str(task["container_name"]),
        **_analysis_network(local),
        **{k: v for k, v in names.items() if k.startswith("bucket:")},
    }
    substitutions = {topology.function_substitution(n): arn for n, arn in functions.items()}
    substitutions.update({sub: resources[resource] for sub, resource in topology.ASL_RESOURCES.items()})
    definition, batchers = sfn_emulation.for_moto(topology.render_asl(substitutions))
    sfn = local.client("stepfunctions")
    machine_name = names["state_machine:scan"]
    existing = [m for m in sfn.list_state_machines()["stateMachines"] if m["name"] == machine_name]
    if existing:
        machine_arn = existing[0]["stateMachineArn"]
        sfn.update_state_machine(stateMachineArn=machine_arn, definition=definition)
    else:
        machine_arn = sfn.create_state_machine(
            name=machine_name, definition=definition, roleArn=role_arn, type="STANDARD"
        )["stateMachineArn"]
    sfn_emulation.register(machine_arn, batchers)
    settings["DICOMFLOW_STATE_MACHINE_ARN"] = machine_arn
    names["state_machine:scan"] = machine_arn
    return Topology(
        names=names,
        functions=functions,
        state_machine_arn=machine_arn,
        substitutions=substitutions,
        settings=settings,
    )
