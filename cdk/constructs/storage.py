"""Storage: the data key, the pseudonym HMAC key, the buckets and the tables.

Every bucket: versioned, public access blocked, TLS only, server access logs, incomplete multipart
uploads aborted (``abortIncompleteUploadDays``), retained when the stack is deleted. The three data
buckets use SSE-KMS with the data key and S3 Bucket Keys (one KMS call per bucket key period instead
of one per object, which matters at 1,500 files a scan). The access-log bucket is SSE-S3: S3 server
access logging cannot deliver to a bucket whose default encryption is SSE-KMS.

The ingest bucket also enforces the upload's immutability promise (:func:`deny_overwrites`): an
object under ``scans/*/files/*`` can only be created, never replaced, whoever asks; an aborted
scan's tombstones expire by their tag once no URL signed for their keys can still be used.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.config import StackConfig
from cdk.nag import acknowledge, checkov_skip
from dicomflow import topology
from dicomflow.upload import scans_table
from dicomflow.upload.presign import TOMBSTONE_TAG
from dicomflow.upload.service import UploadConfig

#: DynamoDB's attribute types in CloudFormation's letters.
_ATTRIBUTE_TYPE = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}

#: The powertools idempotency table's fixed shape (its defaults: key ``id``, TTL ``expiration``).
IDEMPOTENCY_KEY = "id"
IDEMPOTENCY_TTL = "expiration"

#: Where the upload API puts the scans' files (``UploadService.object_key``:
#: ``scans/{id}/files/{index:05d}-{sha256[:16]}.dcm``): the keys that are create-only.
FILES_PATTERN = f"{UploadConfig.prefix}*/files/*"

_REPLICATION = (
    "Cross-region replication is a deployment decision (a second region for PHI needs its own "
    "data-residency review); versioning and retention protect against deletion in this region."
)


class Storage(Construct):
    """Keys, buckets by role (``topology.BUCKETS``) and tables by role (``topology.TABLES``)."""

    def __init__(self, scope: Construct, id: str, *, config: StackConfig) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)

        self.data_key = kms.Key(
            self,
            "DataKey",
            description="dicomflow: buckets, tables, queues, topics and logs (raw PHI among them)",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # CloudWatch Logs encrypts log groups with this key; the condition confines the grant to this
        # account's and region's log groups.
        self.data_key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                            service="logs",
                            resource="log-group",
                            resource_name="*",
                            arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        )
                    }
                },
            )
        )
        self.pseudonym_key = kms.Key(
            self,
            "PseudonymKey",
            description="dicomflow: HMAC key of patient pseudonyms, date shifts and UID remapping",
            key_spec=kms.KeySpec.HMAC_256,
            key_usage=kms.KeyUsage.GENERATE_VERIFY_MAC,
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.pseudonym_key,
            {
                "AwsSolutions-KMS5": "HMAC_256 keys do not support automatic rotation, and rotating it "
                "would change every pseudonym: longitudinal studies need the same pseudonym over years.",
                "HIPAA.Security-KMSBackingKeyRotationEnabled": "HMAC_256 keys cannot rotate; a new key "
                "would break pseudonym continuity across a patient's scans.",
            },
        )
        checkov_skip(
            self.pseudonym_key,
            {"CKV_AWS_7": "HMAC_256 keys cannot rotate (KMS supports rotation for symmetric keys only)."},
        )

        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="abort-incomplete-multipart",
                    abort_incomplete_multipart_upload_after=Duration.days(
                        config.abort_incomplete_upload_days
                    ),
                ),
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=Duration.days(config.log_retention_days),
                    noncurrent_version_expiration=Duration.days(1),
                ),
            ],
        )
        acknowledge(
            self.access_logs,
            {
                "AwsSolutions-S1": "This is the server access log bucket; logging it into itself "
                "would loop (S3 advises against it).",
                "HIPAA.Security-S3BucketLoggingEnabled": "This is the server access log bucket; its "
                "own access is recorded by CloudTrail data events where the account enables them.",
                "HIPAA.Security-S3DefaultEncryptionKMS": "S3 server access logging delivers only to "
                "buckets whose default encryption is SSE-S3; the logs carry keys' names, not PHI.",
                "HIPAA.Security-S3BucketReplicationEnabled": _REPLICATION,
            },
        )
        checkov_skip(
            self.access_logs,
            {
                "CKV_AWS_18": "The access-log bucket itself: logging it into itself would loop.",
            },
        )

        self.buckets: dict[str, s3.Bucket] = {}
        for role in topology.BUCKETS:
            raw = role == "ingest"
            lifecycle = [
                s3.LifecycleRule(
                    id="abort-incomplete-multipart",
                    abort_incomplete_multipart_upload_after=Duration.days(
                        config.abort_incomplete_upload_days
                    ),
                ),
            ]
            if raw:
                # Raw PHI is kept only as long as the deployment's policy says; old versions go
                # noncurrentVersionDays after they are replaced or deleted.
                lifecycle.append(
                    s3.LifecycleRule(
                        id="expire-raw-phi",
                        expiration=Duration.days(config.raw_retention_days),
                        noncurrent_version_expiration=Duration.days(config.noncurrent_version_days),
                        expired_object_delete_marker=False,
                    )
                )
                # An aborted scan's tombstones (upload/presign.py: S3Uploads.tombstone) only have to
                # outlive the URLs signed for their keys; they need not wait for the raw retention.
                # (S3 refuses ExpiredObjectDeleteMarker beside a tag filter: the delete markers
                # this leaves are free and carry no data.)
                lifecycle.append(
                    s3.LifecycleRule(
                        id="expire-tombstones",
                        tag_filters={TOMBSTONE_TAG[0]: TOMBSTONE_TAG[1]},
                        expiration=Duration.days(config.tombstone_retention_days),
                        noncurrent_version_expiration=Duration.days(config.noncurrent_version_days),
                    )
                )
            bucket = s3.Bucket(
                self,
                _bucket_id(role),
                encryption=s3.BucketEncryption.KMS,
                encryption_key=self.data_key,
                bucket_key_enabled=True,
                enforce_ssl=True,
                versioned=True,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
                server_access_logs_bucket=self.access_logs,
                server_access_logs_prefix=f"{role}/",
                lifecycle_rules=lifecycle,
                object_lock_enabled=True if raw and config.object_lock else None,
                object_lock_default_retention=(
                    s3.ObjectLockRetention.governance(Duration.days(config.raw_retention_days))
                    if raw and config.object_lock
                    else None
                ),
                removal_policy=RemovalPolicy.RETAIN,
            )
            acknowledge(bucket, {"HIPAA.Security-S3BucketReplicationEnabled": _REPLICATION})
            if raw:
                deny_overwrites(bucket)
            self.buckets[role] = bucket

        self.tables: dict[str, dynamodb.Table] = {}
        keys = {k["KeyType"]: k["AttributeName"] for k in scans_table.KEY_SCHEMA}
        types = {a["AttributeName"]: a["AttributeType"] for a in scans_table.ATTRIBUTE_DEFINITIONS}
        self.tables["scans"] = self._table(
            "ScansTable",
            partition_key=dynamodb.Attribute(name=keys["HASH"], type=_ATTRIBUTE_TYPE[types[keys["HASH"]]]),
            sort_key=(
                dynamodb.Attribute(name=keys["RANGE"], type=_ATTRIBUTE_TYPE[types[keys["RANGE"]]])
                if "RANGE" in keys
                else None
            ),
        )
        self.tables["idempotency"] = self._table(
            "IdempotencyTable",
            partition_key=dynamodb.Attribute(name=IDEMPOTENCY_KEY, type=dynamodb.AttributeType.STRING),
            time_to_live_attribute=IDEMPOTENCY_TTL,
        )
        missing = set(topology.TABLES) - set(self.tables)
        assert not missing, f"topology.TABLES has tables this construct does not build: {missing}"

    def _table(self, id: str, **kwargs: object) -> dynamodb.Table:
        table = dynamodb.Table(
            self,
            id,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.data_key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
            **kwargs,  # type: ignore[arg-type]
        )
        acknowledge(
            table,
            {
                "HIPAA.Security-DynamoDBInBackupPlan": "Point-in-time recovery (35 days, continuous) "
                "is on; an AWS Backup plan is the organisation's choice and is attached outside this app.",
            },
        )
        return table


def _bucket_id(role: str) -> str:
    """The construct id of a data bucket (``IngestBucket``): part of its stable logical id."""
    return f"{role.capitalize()}Bucket"


def deny_overwrites(bucket: s3.Bucket) -> None:
    """Make the scans' files create-only: S3 refuses any PutObject under :data:`FILES_PATTERN` that
    does not carry ``If-None-Match`` (S3's condition key ``s3:if-none-match``), from any principal.

    What carries it and what must be exempt (S3 User Guide, "Enforce conditional writes"):

    - The device's single-PUT URLs sign ``If-None-Match: *`` and the upload API completes multipart
      uploads and writes tombstones with ``IfNoneMatch="*"`` (upload/presign.py): all three are
      object-creating requests with the header, so they pass, and a replay onto a completed file
      gets 412 from S3 instead of overwriting it.
    - CreateMultipartUpload, UploadPart and UploadPartCopy are authorised as ``s3:PutObject`` too but
      cannot carry conditional headers; ``s3:ObjectCreationOperation`` is false for them, so the
      ``Bool`` condition exempts them (a part lands in an upload, never on the key; only the
      conditional CompleteMultipartUpload makes the object).
    - CopyObject onto these keys is refused (403 without the header; S3 answers 501 with it): no
      code copies onto an original (``S3ObjectStore.sha256`` copies onto itself only in the
      de-identified bucket), and restoring an old version by copy is an operator's job to do with
      this statement lifted, on purpose.

    Deleting is not covered (the upload API deletes a file whose checksum failed, and the tombstone
    replaces what landed by delete-then-create); versioning keeps what a delete removes for
    ``noncurrentVersionDays``.
    """
    bucket.add_to_resource_policy(
        iam.PolicyStatement(
            sid="DenyOverwritingScanFiles",
            effect=iam.Effect.DENY,
            principals=[iam.AnyPrincipal()],
            actions=["s3:PutObject"],
            resources=[bucket.arn_for_objects(FILES_PATTERN)],
            conditions={
                "Null": {"s3:if-none-match": "true"},
                "Bool": {"s3:ObjectCreationOperation": "true"},
            },
        )
    )
