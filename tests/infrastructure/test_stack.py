"""The synthesized template: encryption, TLS, lifecycle, stable ids, least privilege, wiring.

Given the one session synth (conftest.py), when we read its template, then each resource kind has
the posture the README's Security section promises.
"""

from __future__ import annotations

from typing import Any

from dicomflow import topology
from dicomflow.settings import PREFIX, Settings
from dicomflow.upload import scans_table

#: Logical ids of everything that holds data or keys. CloudFormation replaces a resource whose
#: logical id changes: for these that means a new, empty bucket or table and a new key (the old one
#: retained and orphaned). Change this list only with a migration plan.
STATEFUL = {
    "AWS::KMS::Key": {"StorageDataKeyE15BA43B", "StoragePseudonymKeyC76FDFA6"},
    "AWS::S3::Bucket": {
        "StorageAccessLogs96FB524C",
        "StorageIngestBucket1DD274D5",
        "StorageDeidentifiedBucket1E07F965",
        "StorageResultsBucketF87BB70E",
    },
    "AWS::DynamoDB::Table": {"StorageScansTable2F284EF0", "StorageIdempotencyTable5D6E4193"},
}


def _by_suffix(resources: dict[str, Any], stem: str) -> tuple[str, dict[str, Any]]:
    found = [(k, v) for k, v in resources.items() if k.startswith(stem)]
    assert len(found) == 1, f"expected one resource {stem}*, found {[k for k, _ in found]}"
    return found[0]


def test_stateful_logical_ids_are_stable(synth):
    for kind, expected in STATEFUL.items():
        assert set(synth.resources(kind)) == expected, kind


def test_stateful_resources_are_retained(synth):
    for kind in STATEFUL:
        for logical_id, resource in synth.resources(kind).items():
            assert resource["DeletionPolicy"] == "Retain", logical_id
            assert resource["UpdateReplacePolicy"] == "Retain", logical_id


def test_keys_rotation_and_hmac(synth):
    keys = synth.resources("AWS::KMS::Key")
    assert keys["StorageDataKeyE15BA43B"]["Properties"]["EnableKeyRotation"] is True
    pseudonym = keys["StoragePseudonymKeyC76FDFA6"]["Properties"]
    assert (pseudonym["KeySpec"], pseudonym["KeyUsage"]) == ("HMAC_256", "GENERATE_VERIFY_MAC")


def test_data_buckets_sse_kms_with_bucket_keys_and_access_logs(synth):
    buckets = synth.resources("AWS::S3::Bucket")
    for role in topology.BUCKETS:
        _, bucket = _by_suffix(buckets, f"Storage{role.capitalize()}Bucket")
        props = bucket["Properties"]
        (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == {
            "Fn::GetAtt": ["StorageDataKeyE15BA43B", "Arn"]
        }
        assert rule["BucketKeyEnabled"] is True
        assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": "StorageAccessLogs96FB524C"}


def test_every_bucket_versioned_private_and_aborts_incomplete_uploads(synth):
    for logical_id, bucket in synth.resources("AWS::S3::Bucket").items():
        props = bucket["Properties"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}, logical_id
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, logical_id
        aborts = [
            r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
            for r in props["LifecycleConfiguration"]["Rules"]
            if "AbortIncompleteMultipartUpload" in r
        ]
        assert aborts == [int(synth.context["abortIncompleteUploadDays"])], logical_id


def test_raw_phi_expires_after_the_configured_retention(synth):
    rules = synth.json["Resources"]["StorageIngestBucket1DD274D5"]["Properties"]["LifecycleConfiguration"][
        "Rules"
    ]
    expiring = [r for r in rules if "ExpirationInDays" in r and "TagFilters" not in r]  # tombstones: apart
    assert [r["ExpirationInDays"] for r in expiring] == [int(synth.context["rawRetentionDays"])]
    assert expiring[0]["Status"] == "Enabled" and "Prefix" not in expiring[0]
    for role in ("Deidentified", "Results"):
        (logical_id,) = [k for k in synth.resources("AWS::S3::Bucket") if k.startswith(f"Storage{role}")]
        assert not any(
            "ExpirationInDays" in r
            for r in synth.json["Resources"][logical_id]["Properties"]["LifecycleConfiguration"]["Rules"]
        )


def test_every_bucket_denies_requests_without_tls(synth):
    policies = synth.resources("AWS::S3::BucketPolicy")
    guarded = set()
    for policy in policies.values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}:
                assert statement["Effect"] == "Deny" and statement["Action"] == "s3:*"
                guarded.add(policy["Properties"]["Bucket"]["Ref"])
    assert guarded == STATEFUL["AWS::S3::Bucket"]


def test_tables_key_schema_pitr_and_encryption(synth):
    tables = synth.resources("AWS::DynamoDB::Table")
    scans = tables["StorageScansTable2F284EF0"]["Properties"]
    assert scans["KeySchema"] == scans_table.KEY_SCHEMA
    assert sorted(scans["AttributeDefinitions"], key=str) == sorted(
        scans_table.ATTRIBUTE_DEFINITIONS, key=str
    )
    idempotency = tables["StorageIdempotencyTable5D6E4193"]["Properties"]
    assert idempotency["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert idempotency["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    for props in (scans, idempotency):
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["SSESpecification"]["KMSMasterKeyId"] == {
            "Fn::GetAtt": ["StorageDataKeyE15BA43B", "Arn"]
        }


def test_every_log_group_is_encrypted_and_expires(synth):
    groups = synth.resources("AWS::Logs::LogGroup")
    assert len(groups) >= len(topology.FUNCTIONS) + 4  # functions, API, state machine, task, flow, events
    for logical_id, group in groups.items():
        props = group["Properties"]
        assert props["KmsKeyId"] == {"Fn::GetAtt": ["StorageDataKeyE15BA43B", "Arn"]}, logical_id
        assert props["RetentionInDays"] == int(synth.context["logRetentionDays"]), logical_id


def test_queues_and_topic_are_encrypted_and_tls_only(synth):
    for kind, key in (("AWS::SQS::Queue", "KmsMasterKeyId"), ("AWS::SNS::Topic", "KmsMasterKeyId")):
        resources = synth.resources(kind)
        assert resources, kind
        for logical_id, resource in resources.items():
            assert resource["Properties"][key] == {"Fn::GetAtt": ["StorageDataKeyE15BA43B", "Arn"]}, (
                logical_id
            )
    for kind in ("AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy"):
        for resource in synth.resources(kind).values():
            statements = resource["Properties"]["PolicyDocument"]["Statement"]
            assert any(
                s["Effect"] == "Deny" and "aws:SecureTransport" in str(s.get("Condition")) for s in statements
            )


def test_functions_defaults_from_the_one_factory(synth):
    functions = synth.resources("AWS::Lambda::Function")
    assert len(functions) == len(topology.FUNCTIONS)
    for name, spec in topology.FUNCTIONS.items():
        _, function = _by_suffix(functions, "Functions" + "".join(p.capitalize() for p in name.split("_")))
        props = function["Properties"]
        assert props["Runtime"] == "python3.12" and props["Architectures"] == ["arm64"], name
        assert props["Handler"] == "handler.lambda_handler", name
        assert props["MemorySize"] == spec.memory_mb and props["Timeout"] == spec.timeout_s, name
        assert props["TracingConfig"] == {"Mode": "Active"}, name
        assert props["LoggingConfig"]["LogFormat"] == "JSON", name
        assert props["LoggingConfig"]["ApplicationLogLevel"] == {"WARNING": "WARN"}.get(
            synth.context["logLevel"], synth.context["logLevel"]
        )
        assert props["KmsKeyArn"] == {"Fn::GetAtt": ["StorageDataKeyE15BA43B", "Arn"]}, name
        assert len(props["Layers"]) == 1, name


def test_each_function_environment_is_its_settings(synth):
    """Given topology's ``uses``, each function gets exactly its settings fields, named as
    ``Settings.from_env`` reads them, pointing at the resource the setting names."""
    settings_fields = set(Settings.__dataclass_fields__)
    functions = synth.resources("AWS::Lambda::Function")
    expected_ref = {
        "bucket:ingest": {"Ref": "StorageIngestBucket1DD274D5"},
        "bucket:deidentified": {"Ref": "StorageDeidentifiedBucket1E07F965"},
        "bucket:results": {"Ref": "StorageResultsBucketF87BB70E"},
        "table:scans": {"Ref": "StorageScansTable2F284EF0"},
        "table:idempotency": {"Ref": "StorageIdempotencyTable5D6E4193"},
        "key:data": {"Fn::GetAtt": ["StorageDataKeyE15BA43B", "Arn"]},
        "key:pseudonym": {"Fn::GetAtt": ["StoragePseudonymKeyC76FDFA6", "Arn"]},
    }
    for name, spec in topology.FUNCTIONS.items():
        _, function = _by_suffix(functions, "Functions" + "".join(p.capitalize() for p in name.split("_")))
        env = function["Properties"]["Environment"]["Variables"]
        dicomflow_vars = {k for k in env if k.startswith(PREFIX)}
        assert dicomflow_vars == {PREFIX + f.upper() for f in (*spec.environment_settings, "region")}, name
        assert {k.removeprefix(PREFIX).lower() for k in dicomflow_vars} <= settings_fields, name
        assert env["POWERTOOLS_SERVICE_NAME"] == name
        for resource in spec.uses:
            value = env[PREFIX + topology.SETTING_OF[resource].upper()]
            if resource in expected_ref:
                assert value == expected_ref[resource], (name, resource)
            elif resource == "bus:events":
                assert value["Ref"].startswith("StatusEventsBus"), (name, resource)
            elif resource == "state_machine:scan":
                assert value == {"Ref": "WorkflowStateMachine8F1B1C15"}, (name, resource)


def test_functions_may_touch_only_what_topology_grants(synth):
    """A function that does not use the results bucket has no statement naming it, and so on."""
    policies = synth.resources("AWS::IAM::Policy")
    refs = {
        "bucket:ingest": "StorageIngestBucket1DD274D5",
        "bucket:deidentified": "StorageDeidentifiedBucket1E07F965",
        "bucket:results": "StorageResultsBucketF87BB70E",
        "table:scans": "StorageScansTable2F284EF0",
        "table:idempotency": "StorageIdempotencyTable5D6E4193",
        "key:pseudonym": "StoragePseudonymKeyC76FDFA6",
    }
    for name, spec in topology.FUNCTIONS.items():
        construct = "".join(p.capitalize() for p in name.split("_"))
        _, policy = _by_suffix(policies, f"Functions{construct}RoleDefaultPolicy")
        text = str(policy["Properties"]["PolicyDocument"])
        for resource, logical_id in refs.items():
            assert (logical_id in text) == (resource in spec.uses), (name, resource)


def test_map_functions_reserve_the_maps_concurrency(synth):
    functions = synth.resources("AWS::Lambda::Function")
    for name in ("validate_batch", "deidentify_batch"):
        _, function = _by_suffix(functions, "Functions" + "".join(p.capitalize() for p in name.split("_")))
        assert function["Properties"]["ReservedConcurrentExecutions"] == (
            topology.FUNCTIONS[name].reserved_concurrency or topology.MAX_CONCURRENCY
        )


def test_api_iam_on_every_method_validated_throttled_logged(synth):
    methods = synth.resources("AWS::ApiGateway::Method")
    assert len(methods) == 8
    for logical_id, method in methods.items():
        props = method["Properties"]
        assert props["AuthorizationType"] == "AWS_IAM", logical_id
        assert "RequestValidatorId" in props, logical_id
        assert props["Integration"]["Type"] == "AWS_PROXY", logical_id
    (stage,) = synth.resources("AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    assert props["TracingEnabled"] is True
    assert "DestinationArn" in props["AccessLogSetting"]
    (settings,) = props["MethodSettings"]
    assert settings["DataTraceEnabled"] is False  # bodies carry file names
    assert settings["ThrottlingRateLimit"] > 0 and settings["ThrottlingBurstLimit"] > 0
    (validator,) = synth.resources("AWS::ApiGateway::RequestValidator").values()
    assert validator["Properties"]["ValidateRequestBody"] is True
    assert validator["Properties"]["ValidateRequestParameters"] is True


def test_network_has_no_route_out_and_the_endpoints_the_task_needs(synth):
    for kind in ("AWS::EC2::InternetGateway", "AWS::EC2::NatGateway", "AWS::EC2::EIP"):
        assert not synth.resources(kind), kind
    text = str([e["Properties"]["ServiceName"] for e in synth.resources("AWS::EC2::VPCEndpoint").values()])
    for service in (".s3", "ecr.api", "ecr.dkr", ".logs"):
        assert service in text, service
    assert synth.resources("AWS::EC2::FlowLog")


def test_analysis_task_is_arm64_fargate_from_ml_container(synth):
    (task,) = synth.resources("AWS::ECS::TaskDefinition").values()
    props = task["Properties"]
    assert props["RuntimePlatform"] == {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"}
    assert props["RequiresCompatibilities"] == ["FARGATE"]
    (container,) = props["ContainerDefinitions"]
    assert container["Name"] == topology.ANALYSIS_TASK["container_name"]
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    (cluster,) = synth.resources("AWS::ECS::Cluster").values()
    assert {"Name": "containerInsights", "Value": "enhanced"} in cluster["Properties"]["ClusterSettings"]


def test_alarms_notify_the_encrypted_topic(synth):
    alarms = synth.resources("AWS::CloudWatch::Alarm")
    metrics = {a["Properties"]["MetricName"] for a in alarms.values()}
    assert {"ExecutionsFailed", "ApproximateNumberOfMessagesVisible", "Errors", "5XXError"} <= metrics
    assert sum(a["Properties"]["MetricName"] == "Errors" for a in alarms.values()) == len(topology.FUNCTIONS)
    (topic_id,) = synth.resources("AWS::SNS::Topic")
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic_id}]
    assert synth.resources("AWS::CloudWatch::Dashboard")
