"""Functions: one factory for every Lambda's defaults, fed by ``dicomflow.topology.FUNCTIONS``.

Each function: Python 3.12 on arm64, the domain package as a layer, JSON logs to its own encrypted
log group with the configured retention, X-Ray tracing, environment encrypted with the data key, a
role of its own with no managed policy. What a function may touch is its topology entry's ``uses``:
each resource becomes one ``grant_*`` (least privilege) and one ``DICOMFLOW_*`` variable, the
resource's settings field (``topology.SETTING_OF``), so the handler's ``Settings`` finds it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Aws, CfnElement, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct, IConstruct

from cdk.bundling import EXCLUDE, ROOT, layer_code
from cdk.config import StackConfig
from cdk.nag import acknowledge, checkov_skip
from dicomflow import topology
from dicomflow.settings import PREFIX

RUNTIME = lambda_.Runtime.PYTHON_3_12
#: The Lambda handler inside a function's code asset (its folder functions/<name>/ is the root).
HANDLER = "handler.lambda_handler"
#: The workflow's batch functions run inside the Maps: reserving the Maps' concurrency for them keeps
#: one busy scan from starving the account's other functions, and the Maps never need more.
MAP_FUNCTIONS = ("validate_batch", "deidentify_batch")


@dataclass(frozen=True)
class Binding:
    """A resource a function may use: the value its settings field carries and how to grant access.

    ``grant_calls`` (buckets only) grants exactly the S3 actions given, on the scans' objects, in
    place of ``grant``'s CDK action families: functions use it with :data:`S3_CALLS`.
    """

    value: str
    grant: Callable[[iam.IGrantable, topology.Access], object]
    grant_calls: Callable[[iam.IGrantable, tuple[str, ...]], object] | None = None


# S3 actions, named for the requests that need them (IAM authorises several requests per action).
#: GetObject, HeadObject and ranged GETs; the source of UploadPartCopy and CopyObject.
GET = "s3:GetObject"
#: PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload; the destination of
#: UploadPartCopy and CopyObject. A presigned URL acts with its signer's permissions, so the upload
#: API's role needs it for the device's PUTs too.
PUT = "s3:PutObject"
ABORT = "s3:AbortMultipartUpload"
LIST_PARTS = "s3:ListMultipartUploadParts"
DELETE = "s3:DeleteObject"
GET_TAGS = "s3:GetObjectTagging"
#: PutObjectTagging, and a PutObject that carries ``x-amz-tagging``.
PUT_TAGS = "s3:PutObjectTagging"
#: ListObjectsV2 (on the bucket); also what makes S3 answer 404, not 403, for a missing key, which
#: the steps read as ObjectNotFoundError: every function that reads gets it.
LIST = "s3:ListBucket"
#: Where every function's objects are, in every bucket (upload service ``UploadConfig.prefix``,
#: ``dicomflow.workflow.work.PREFIX``, the ASL's ``results_prefix``).
OBJECTS = "scans/*"

#: Exactly the S3 actions each function's code calls, per bucket it uses (the calls, read from its
#: step, are beside each). CDK's bucket grants give action families instead (``s3:DeleteObject*``
#: takes in DeleteObjectVersion, which would let a function erase PHI's history; ``s3:PutObject*``
#: takes in ACLs, legal holds, retention). A function whose code makes a new call needs it here:
#: tests/infrastructure asserts each role holds these and nothing more.
S3_CALLS: dict[str, dict[str, tuple[str, ...]]] = {
    # upload/service.py, upload/presign.py: create/complete/abort multipart uploads, ListParts,
    # presigned UploadPart and PutObject (signed by this role), HeadObject with checksums, GET to
    # verify, PUT of the stored manifest, DELETE of a file that failed its check and of an aborted
    # scan's objects (listed), tombstones: PutObject with x-amz-tagging.
    "upload_api": {"bucket:ingest": (GET, PUT, PUT_TAGS, LIST_PARTS, ABORT, DELETE, LIST)},
    # workflow/prepare.py: reads the stored manifest, writes work/items.json.
    "prepare_scan": {"bucket:ingest": (GET, PUT, LIST)},
    # workflow/validate_batch.py: HeadObject, ranged GETs and a streamed GET per file; the report.
    "validate_batch": {"bucket:ingest": (GET, PUT, LIST)},
    # workflow/validate_scan.py: the manifest, the batches' reports (listed), the scan's report.
    "validate_scan": {"bucket:ingest": (GET, PUT, LIST)},
    # workflow/deidentify_batch.py, deid/stream.py: ranged GETs of the originals (and the source of
    # UploadPartCopy across buckets); held files into ingest's held/ (multipart, UploadPartCopy
    # within the bucket, deleted if their pixels differ); the batch report. In the de-identified
    # bucket: PutObject or multipart with UploadPartCopy, aborted on failure, ranged GETs for the
    # pixel proof, HeadObject, CopyObject onto itself for S3's SHA-256, DELETE if pixels differ.
    "deidentify_batch": {
        "bucket:ingest": (GET, PUT, ABORT, DELETE, LIST),
        "bucket:deidentified": (GET, PUT, ABORT, DELETE, LIST),
    },
    # workflow/deidentify_scan.py: the manifest and batch reports (listed) from ingest, its report
    # into ingest; the de-identified manifest into the de-identified bucket (a PUT, nothing read).
    "deidentify_scan": {"bucket:ingest": (GET, PUT, LIST), "bucket:deidentified": (PUT,)},
    # workflow/publish.py: reads results.json.
    "publish": {"bucket:results": (GET, LIST)},
    # workflow/quarantine.py: the report and the manifest; tags the originals (GetObjectTagging,
    # then PutObjectTagging with the merged set).
    "quarantine": {"bucket:ingest": (GET, GET_TAGS, PUT_TAGS, LIST)},
}


def environment_for(spec: topology.FunctionSpec, bindings: Mapping[str, Binding]) -> dict[str, str]:
    """The function's ``DICOMFLOW_*`` variables: its resources' settings fields, and the region."""
    env = {f"{PREFIX}REGION": Aws.REGION}
    for resource in spec.uses:
        env[PREFIX + topology.SETTING_OF[resource].upper()] = bindings[resource].value
    return env


class Functions(Construct):
    """The layer and the factory; :meth:`add` builds one function from its topology entry."""

    def __init__(self, scope: Construct, id: str, *, config: StackConfig, key: kms.IKey) -> None:
        super().__init__(scope, id)
        self._config = config
        self._key = key
        self.layer = lambda_.LayerVersion(
            self,
            "DomainLayer",
            code=layer_code(),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[lambda_.Architecture.ARM_64],
            description="dicomflow domain package and its pinned dependencies (linux arm64, cp312)",
            removal_policy=RemovalPolicy.RETAIN,  # a rollback needs the previous version to exist
        )
        self.functions: dict[str, lambda_.Function] = {}
        self.log_groups: dict[str, logs.LogGroup] = {}
        self.dead_letter_queues: dict[str, sqs.Queue] = {}

    def add(
        self,
        name: str,
        *,
        bindings: Mapping[str, Binding],
        asynchronous: bool = False,
    ) -> lambda_.Function:
        """Build ``topology.FUNCTIONS[name]``; ``asynchronous`` functions get a dead-letter queue."""
        spec = topology.FUNCTIONS[name]
        code_dir = ROOT / spec.code_dir
        if not (code_dir / "handler.py").is_file():
            raise FileNotFoundError(
                f"{Path(spec.code_dir) / 'handler.py'} is missing: topology.FUNCTIONS names {name!r}"
            )
        construct_id = _construct_id(name)
        role = iam.Role(
            self,
            f"{construct_id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"dicomflow {name}: only what topology.FUNCTIONS[{name!r}].uses grants",
        )
        log_group = logs.LogGroup(
            self,
            f"{construct_id}Logs",
            encryption_key=self._key,
            retention=self._config.log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )
        log_group.grant_write(role)
        dlq = None
        if asynchronous:
            dlq = sqs.Queue(
                self,
                f"{construct_id}DeadLetters",
                encryption=sqs.QueueEncryption.KMS,
                encryption_master_key=self._key,
                enforce_ssl=True,
                retention_period=Duration.days(14),
            )
            self.dead_letter_queues[name] = dlq
        reserved = spec.reserved_concurrency
        if reserved is None and name in MAP_FUNCTIONS:
            reserved = topology.MAX_CONCURRENCY
        function = lambda_.Function(
            self,
            construct_id,
            description=spec.description,
            code=lambda_.Code.from_asset(str(code_dir), exclude=EXCLUDE),
            handler=HANDLER,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            memory_size=spec.memory_mb,
            timeout=Duration.seconds(spec.timeout_s),
            layers=[self.layer],
            role=role,
            environment={**environment_for(spec, bindings), "POWERTOOLS_SERVICE_NAME": name},
            environment_encryption=self._key,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel[_LAMBDA_LEVEL[self._config.log_level]],
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            log_group=log_group,
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=reserved,
            dead_letter_queue=dlq,
            recursive_loop=lambda_.RecursiveLoop.TERMINATE,
        )
        calls = S3_CALLS.get(name, {})
        buckets = {r for r in spec.uses if r.startswith("bucket:")}
        if set(calls) != buckets:
            raise ValueError(
                f"S3_CALLS[{name!r}] names {sorted(calls)} but topology.FUNCTIONS[{name!r}] uses "
                f"{sorted(buckets)}: list the S3 actions its code calls on each bucket it uses"
            )
        if buckets and "key:data" not in spec.uses:
            # The buckets are SSE-KMS: a function that reads or writes them needs the data key.
            raise ValueError(f"{name} uses {sorted(buckets)} but not key:data (their SSE-KMS key)")
        for resource, access in spec.uses.items():
            binding = bindings[resource]
            if resource in calls and binding.grant_calls is not None:
                binding.grant_calls(role, calls[resource])
            else:
                binding.grant(role, access)
        self._acknowledge(function, name, reserved=reserved is not None, asynchronous=asynchronous)
        self.functions[name] = function
        self.log_groups[name] = log_group
        return function

    def _acknowledge(
        self, function: lambda_.Function, name: str, *, reserved: bool, asynchronous: bool
    ) -> None:
        reasons = {
            "AwsSolutions-L1": "Python 3.12 on purpose: the layer's wheels are bundled for cp312 "
            "(cdk/bundling.py) and the runtime moves with them, not alone.",
            "HIPAA.Security-LambdaInsideVPC": "The function reaches only AWS APIs (S3, DynamoDB, KMS, "
            "Step Functions, EventBridge) over TLS with IAM-signed requests and hosts nothing: a VPC "
            "would add ENIs and interface endpoints, not a boundary.",
        }
        skips = {
            "CKV_AWS_117": "Reaches only AWS APIs over TLS with SigV4; no VPC resource to reach or protect.",
        }
        if not asynchronous:
            reasons["HIPAA.Security-LambdaDLQ"] = (
                f"{name} is invoked synchronously (API Gateway or a Step Functions task); a Lambda "
                "dead-letter queue only receives asynchronous invocations. Failures return to the caller."
            )
            skips["CKV_AWS_116"] = (
                "Invoked synchronously (API Gateway / Step Functions); a DLQ would never fill."
            )
        if not reserved:
            reasons["HIPAA.Security-LambdaConcurrency"] = (
                f"{name} runs once or a few times per scan; its concurrency is bounded by the API's "
                "throttling or by one execution per scan, and reserving it would shrink the account pool."
            )
            skips["CKV_AWS_115"] = (
                "Bounded by API throttling or one execution per scan (see README Security)."
            )
        acknowledge(function, reasons)
        checkov_skip(function, skips)
        # X-Ray's PutTraceSegments and PutTelemetryRecords have no resource-level permissions.
        acknowledge(function.role, {"AwsSolutions-IAM5[Resource::*]": _XRAY_WILDCARD})  # type: ignore[arg-type]


_XRAY_WILDCARD = (
    "X-Ray tracing (Tracing.ACTIVE): xray:PutTraceSegments/PutTelemetryRecords support only Resource *."
)
_LAMBDA_LEVEL = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARN", "ERROR": "ERROR"}


def _construct_id(name: str) -> str:
    """``validate_batch`` -> ``ValidateBatch``: the construct id, part of stable logical ids."""
    return "".join(part.capitalize() for part in name.split("_"))


def logical_ref(construct: IConstruct) -> str:
    """How cdk-nag names a resource's ARN in a finding: ``<LogicalId.Arn>``."""
    stack = Stack.of(construct)
    cfn = construct.node.default_child
    assert isinstance(cfn, CfnElement)
    return f"<{stack.resolve(stack.get_logical_id(cfn))}.Arn>"


def acknowledge_grant(who: iam.IGrantable, findings: Mapping[str, str]) -> None:
    """Acknowledge the wildcard findings a ``grant_*`` produces, on the role it was made to."""
    role = who if isinstance(who, iam.Role) else None
    if role is None:
        principal_role = getattr(who, "role", None)
        role = principal_role if isinstance(principal_role, iam.Role) else None
    if role is not None and findings:
        acknowledge(role, {f"AwsSolutions-IAM5[{k}]": v for k, v in findings.items()})


#: The action wildcards of CDK's bucket grants, by access.
_S3_ACTIONS: dict[str, tuple[str, ...]] = {
    "read": ("s3:GetObject*", "s3:GetBucket*", "s3:List*"),
    "write": ("s3:Abort*",),
    "read_write": ("s3:GetObject*", "s3:GetBucket*", "s3:List*", "s3:Abort*", "s3:DeleteObject*"),
}
_KMS_ACTIONS: dict[str, tuple[str, ...]] = {
    "read": (),
    "write": ("kms:ReEncrypt*", "kms:GenerateDataKey*"),
    "read_write": ("kms:ReEncrypt*", "kms:GenerateDataKey*"),
}


def bucket_binding(bucket: s3.Bucket, role_name: str) -> Binding:
    grants = {"read": bucket.grant_read, "write": bucket.grant_put, "read_write": bucket.grant_read_write}

    def grant(who: iam.IGrantable, access: topology.Access) -> None:
        grants[access](who)
        findings = {
            f"Action::{a}": f"CDK's bucket grant ({access}) on the {role_name} bucket alone: object "
            "versions, tags and multipart parts of scans' objects need the action family."
            for a in _S3_ACTIONS[access]
        }
        findings[f"Resource::{logical_ref(bucket)}/*"] = (
            f"Objects of the {role_name} bucket: keys are per scan (scans/<id>/...), generated at run time."
        )
        if bucket.encryption_key is not None:
            findings.update(_key_findings(access, f"the {role_name} bucket's SSE-KMS"))
        acknowledge_grant(who, findings)

    def grant_calls(who: iam.IGrantable, actions: tuple[str, ...]) -> None:
        object_actions = sorted(a for a in actions if a != LIST)
        if object_actions:
            who.grant_principal.add_to_principal_policy(
                iam.PolicyStatement(actions=object_actions, resources=[bucket.arn_for_objects(OBJECTS)])
            )
        if LIST in actions:
            who.grant_principal.add_to_principal_policy(
                iam.PolicyStatement(actions=[LIST], resources=[bucket.bucket_arn])
            )
        acknowledge_grant(
            who,
            {
                f"Resource::{logical_ref(bucket)}/{OBJECTS}": f"Objects of the {role_name} bucket under "
                f"{OBJECTS}: keys are per scan, generated at run time; the actions are exactly those "
                "its code calls (S3_CALLS).",
            },
        )

    return Binding(bucket.bucket_name, grant, grant_calls)


def _key_findings(access: topology.Access, use: str) -> dict[str, str]:
    return {
        f"Action::{a}": f"{use}: S3 and KMS need GenerateDataKey*/ReEncrypt* on the data key alone "
        "(CDK's key grant) to write encrypted objects."
        for a in _KMS_ACTIONS[access]
    }


def table_binding(table: dynamodb.ITable) -> Binding:
    grants = {
        "read": table.grant_read_data,
        "write": table.grant_write_data,
        "read_write": table.grant_read_write_data,
    }
    return Binding(table.table_name, lambda who, access: grants[access](who))


def data_key_binding(key: kms.IKey) -> Binding:
    grants = {"read": key.grant_decrypt, "write": key.grant_encrypt, "read_write": key.grant_encrypt_decrypt}

    def grant(who: iam.IGrantable, access: topology.Access) -> None:
        grants[access](who)
        acknowledge_grant(who, _key_findings(access, "The data key"))

    return Binding(key.key_arn, grant)


def mac_key_binding(key: kms.IKey) -> Binding:
    """The HMAC key: computing MACs (pseudonyms) is all any function needs, whatever ``uses`` says."""
    return Binding(key.key_arn, lambda who, access: key.grant_generate_mac(who))


def bus_binding(bus: events.IEventBus) -> Binding:
    def grant(who: iam.IGrantable, access: topology.Access) -> None:
        bus.grant_put_events_to(who)
        # The bus is encrypted with the data key: putting events encrypts with it.
        acknowledge_grant(who, _key_findings("write", "The status bus's encryption"))

    return Binding(bus.event_bus_name, grant)


def state_machine_binding(machine: sfn.IStateMachine) -> Binding:
    grants = {"read": machine.grant_read, "write": machine.grant_start_execution}

    def grant(who: iam.IGrantable, access: topology.Access) -> None:
        for part in ("read", "write"):
            if part in access:
                grants[part](who)

    return Binding(machine.state_machine_arn, grant)
