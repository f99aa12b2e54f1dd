"""Inference: the analysis task's network, cluster and Fargate task definition (arm64).

The VPC has private isolated subnets only: no internet gateway, no NAT, so the task has no route
out of AWS. It reaches S3 through a gateway endpoint, and ECR (to pull its image) and CloudWatch
Logs through interface endpoints. The image is built from ml_container/ by ``cdk deploy`` (synth
only stages the files the Dockerfile's allow-list names).
"""

from __future__ import annotations

from aws_cdk import Aws, IgnoreMode, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.bundling import ROOT
from cdk.config import StackConfig
from cdk.constructs.functions import Binding
from cdk.nag import acknowledge
from dicomflow import topology
from dicomflow.settings import PREFIX

DOCKERFILE = "ml_container/Dockerfile"


def image_excludes() -> list[str]:
    """The Dockerfile's allow-list (``Dockerfile.dockerignore``) as CDK asset excludes: synth stages
    exactly what the image build may read, not the repository (and never .venv or cdk.out)."""
    lines = (ROOT / "ml_container" / "Dockerfile.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    # cdk-assets runs `docker build -f <staged>/ml_container/Dockerfile`: the Dockerfile itself must be
    # staged (CDK re-includes only a Dockerfile at the root of the context).
    return [*patterns, f"!{DOCKERFILE}"]


class Inference(Construct):
    """``vpc``, ``cluster``, ``task_definition``, ``container_name``, ``security_group``."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: StackConfig,
        key: kms.IKey,
        bindings: dict[str, Binding],
    ) -> None:
        super().__init__(scope, id)
        self.flow_logs = logs.LogGroup(
            self,
            "FlowLogs",
            encryption_key=key,
            retention=config.log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                )
            ],
            restrict_default_security_group=False,
            flow_logs={
                "all": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_logs),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
            },
        )
        acknowledge(
            self.vpc,
            {
                "HIPAA.Security-VPCDefaultSecurityGroupClosed": "Nothing is attached to the default "
                "security group; closing it takes a custom-resource Lambda (and its own findings), "
                "and the subnets have no route out of the VPC anyway.",
            },
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "TaskSecurityGroup",
            vpc=self.vpc,
            description="dicomflow analysis task: no inbound; outbound only within the isolated VPC",
            allow_all_outbound=True,
        )
        # The interface endpoints accept HTTPS from the task's security group only.
        self.endpoint_security_group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="dicomflow interface endpoints: HTTPS from the analysis task only",
            allow_all_outbound=False,
        )
        self.endpoint_security_group.add_ingress_rule(
            self.security_group, ec2.Port.tcp(443), "HTTPS from the analysis task"
        )
        for name, service in (
            ("EcrApi", ec2.InterfaceVpcEndpointAwsService.ECR),
            ("EcrDocker", ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER),
            ("Logs", ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS),
        ):
            self.vpc.add_interface_endpoint(
                name,
                service=service,
                private_dns_enabled=True,
                open=False,
                security_groups=[self.endpoint_security_group],
            )

        self.cluster = ecs.Cluster(
            self, "Cluster", vpc=self.vpc, container_insights_v2=ecs.ContainerInsights.ENHANCED
        )

        task = topology.ANALYSIS_TASK
        self.container_name: str = task["container_name"]
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "AnalysisTask",
            cpu=task["cpu"],
            memory_limit_mib=task["memory_mb"],
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.ARM64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        self.task_logs = logs.LogGroup(
            self,
            "TaskLogs",
            encryption_key=key,
            retention=config.log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )
        environment = {f"{PREFIX}REGION": Aws.REGION}
        for resource in task["uses"]:
            if resource.startswith("key:"):
                environment[PREFIX + topology.SETTING_OF[resource].upper()] = bindings[resource].value
        if config.model_uri and config.model_sha256:
            environment[f"{PREFIX}MODEL_URI"] = config.model_uri
            environment[f"{PREFIX}MODEL_SHA256"] = config.model_sha256
        self.container = self.task_definition.add_container(
            self.container_name,
            container_name=self.container_name,
            image=ecs.ContainerImage.from_asset(
                str(ROOT),
                file=DOCKERFILE,
                platform=ecr_assets.Platform.LINUX_ARM64,
                exclude=image_excludes(),
                ignore_mode=IgnoreMode.DOCKER,
            ),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="analysis", log_group=self.task_logs),
            environment=environment,
            memory_limit_mib=task["memory_mb"],  # moto's run_task needs container-level memory too
            readonly_root_filesystem=False,
        )
        for resource, access in task["uses"].items():
            bindings[resource].grant(self.task_definition.task_role, access)
        if config.model_uri:
            model_bucket, _, model_key = config.model_uri.removeprefix("s3://").partition("/")
            s3.Bucket.from_bucket_name(self, "ModelBucket", model_bucket).grant_read(
                self.task_definition.task_role, model_key
            )

        acknowledge(
            self.task_definition.obtain_execution_role(),
            {
                "AwsSolutions-IAM5[Resource::*]": "ecr:GetAuthorizationToken has no resource-level "
                "permission; the image pull itself is limited to the asset repository.",
            },
        )
        acknowledge(
            self.task_definition,
            {
                "AwsSolutions-ECS2": "The variables are the region, the data key's ARN and the optional "
                "model's URI and SHA-256: configuration, not secrets (there are none: the task role "
                "signs every call).",
            },
        )
