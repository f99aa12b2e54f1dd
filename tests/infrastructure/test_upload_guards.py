"""The deployed half of the upload's promises: create-only scan files, tombstones that expire, and
one error shape from API Gateway as from the handler.

Given the session synth (conftest.py), when we read the ingest bucket's policy and lifecycle and the
API's gateway responses, then AWS enforces what the local stack enforces: a completed file cannot be
overwritten (the bucket refuses an unconditional PutObject under ``scans/*/files/*``, while the
multipart steps that cannot carry the header stay allowed), the calls the upload code makes pass that
policy, and a device gets ``{"error", "message"}`` whatever refuses it.
"""

from __future__ import annotations

import fnmatch
import json
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from dicomflow.upload.presign import TOMBSTONE_TAG, S3Uploads
from dicomflow.upload.service import PayloadTooLargeError, UploadConfig, UploadService

from .conftest import cdk_context

INGEST = "StorageIngestBucket1DD274D5"
#: The condition S3 documents for "only create with If-None-Match" (User Guide, "Enforce
#: conditional writes"): a PutObject-authorised request without the header that creates an object.
CREATE_ONLY = {"Null": {"s3:if-none-match": "true"}, "Bool": {"s3:ObjectCreationOperation": "true"}}


def _statements(synth, bucket: str) -> list[dict[str, Any]]:
    (policy,) = [
        p
        for p in synth.resources("AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket}
    ]
    return list(policy["Properties"]["PolicyDocument"]["Statement"])


def _create_only_statement(synth) -> dict[str, Any]:
    found = [s for s in _statements(synth, INGEST) if s.get("Sid") == "DenyOverwritingScanFiles"]
    assert len(found) == 1, "the ingest bucket has no create-only statement for the scans' files"
    return found[0]


def _object_pattern(resource: Any, bucket: str) -> str:
    """``{"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/scans/*/files/*"]]}`` -> the pattern."""
    (arn, suffix) = resource["Fn::Join"][1]
    assert arn == {"Fn::GetAtt": [bucket, "Arn"]}
    return str(suffix).removeprefix("/")


def _upload_key(index: int = 7, sha256: str = "ab" * 32, scan_id: str = "s1") -> str:
    """The key UploadService.object_key gives a file (it reads only the configured prefix)."""
    fake = SimpleNamespace(config=UploadConfig())
    fake._scan_prefix = lambda s: UploadService._scan_prefix(fake, s)  # type: ignore[arg-type]
    return UploadService.object_key(fake, scan_id, index, sha256)  # type: ignore[arg-type]


def test_scan_files_are_create_only_for_every_principal(synth):
    statement = _create_only_statement(synth)
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == {"AWS": "*"}
    assert statement["Action"] == "s3:PutObject"
    assert statement["Condition"] == CREATE_ONLY
    pattern = _object_pattern(statement["Resource"], INGEST)
    # The files' keys are covered; the scan's other objects (rewritten by the workflow) are not.
    assert fnmatch.fnmatchcase(_upload_key(), pattern), (_upload_key(), pattern)
    for other in ("scans/s1/manifest.json", "scans/s1/work/items.json", "scans/s1/held/00007.dcm"):
        assert not fnmatch.fnmatchcase(other, pattern), other


def test_only_the_ingest_bucket_is_create_only(synth):
    """The de-identified bucket's CopyObject onto itself (S3's SHA-256) must stay possible."""
    guarded = {
        p["Properties"]["Bucket"]["Ref"]
        for p in synth.resources("AWS::S3::BucketPolicy").values()
        if "s3:if-none-match" in json.dumps(p)
    }
    assert guarded == {INGEST}


def _denied(statement: dict[str, Any], context: dict[str, str | None]) -> bool:
    """IAM's evaluation of the statement's two operators for one request's context values."""
    for key, want in statement["Condition"]["Null"].items():
        if (context.get(key) is None) != (want == "true"):
            return False
    return all(context.get(key) == want for key, want in statement["Condition"]["Bool"].items())


@pytest.mark.parametrize(
    ("request_", "if_none_match", "creates", "denied"),
    [
        # The device's single-PUT URL and the API's completion and tombstones carry the header.
        ("PutObject with If-None-Match: *", "*", "true", False),
        ("CompleteMultipartUpload with If-None-Match: *", "*", "true", False),
        # The multipart steps cannot carry it: S3 sets ObjectCreationOperation false for them.
        ("CreateMultipartUpload", None, "false", False),
        ("UploadPart (the device's part URLs)", None, "false", False),
        ("UploadPartCopy", None, "false", False),
        # What would overwrite a completed file.
        ("PutObject without the header (a replayed or forged PUT)", None, "true", True),
        ("CompleteMultipartUpload without the header", None, "true", True),
        ("CopyObject onto a file", None, "true", True),
    ],
)
def test_which_requests_the_create_only_statement_refuses(synth, request_, if_none_match, creates, denied):
    statement = _create_only_statement(synth)
    context = {"s3:if-none-match": if_none_match, "s3:ObjectCreationOperation": creates}
    assert _denied(statement, context) is denied, request_


class _Recorder:
    """A boto3 S3 client stand-in that records the calls' parameters (no AWS involved)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, operation: str):
        def call(**params: Any) -> dict[str, Any]:
            self.calls.append((operation, params))
            return {"ETag": '"e"', "UploadId": "u"}

        return call


def test_the_upload_codes_object_creating_writes_carry_if_none_match():
    """What the upload API writes under scans/*/files/* passes the policy: every PutObject and
    CompleteMultipartUpload it makes there carries IfNoneMatch="*" (else AWS would refuse it)."""
    client = _Recorder()
    uploads = S3Uploads(client, "ingest", kms_key_id="key")
    key = _upload_key()
    uploads.tombstone(key)
    uploads.complete(key, "upload", [])
    creating = [(op, p) for op, p in client.calls if op in ("put_object", "complete_multipart_upload")]
    assert [op for op, _ in creating] == ["put_object", "complete_multipart_upload"]
    for op, params in creating:
        assert params["Key"] == key and params.get("IfNoneMatch") == "*", op


def test_single_put_urls_sign_if_none_match():
    """The device's PUT carries the header because the URL signs it (S3 refuses it otherwise)."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        region_name="eu-west-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=Config(signature_version="s3v4"),  # as build_service makes it
    )
    request = S3Uploads(client, "ingest", kms_key_id="key").presign_put(_upload_key(), "ab" * 32, 900)
    signed = parse_qs(urlsplit(request.url).query)["X-Amz-SignedHeaders"][0].split(";")
    assert "if-none-match" in signed and request.headers["if-none-match"] == "*"


def _rules(synth) -> list[dict[str, Any]]:
    return list(synth.json["Resources"][INGEST]["Properties"]["LifecycleConfiguration"]["Rules"])


def test_tombstones_expire_by_the_tag_the_upload_code_writes(synth):
    client = _Recorder()
    S3Uploads(client, "ingest").tombstone(_upload_key())
    ((_, put),) = [c for c in client.calls if c[0] == "put_object"]
    written = dict(pair.split("=", 1) for pair in put["Tagging"].split("&"))
    (rule,) = [r for r in _rules(synth) if "TagFilters" in r]
    assert rule["Status"] == "Enabled"
    assert {f["Key"]: f["Value"] for f in rule["TagFilters"]} == written == dict([TOMBSTONE_TAG])
    assert rule["ExpirationInDays"] == int(synth.context["tombstoneRetentionDays"])
    assert rule["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": int(synth.context["noncurrentVersionDays"])
    }


def test_lifecycle_days_come_from_the_configuration():
    """Storage alone in a bare stack (a second full synth would double the run's time)."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from cdk.config import StackConfig
    from cdk.constructs.storage import Storage

    config = StackConfig(
        abort_incomplete_upload_days=3, tombstone_retention_days=10, noncurrent_version_days=5
    )
    stack = cdk.Stack(cdk.App(context=cdk_context()), "LifecycleDays")  # cdk.json's feature flags
    Storage(stack, "Storage", config=config)
    buckets = Template.from_stack(stack).find_resources("AWS::S3::Bucket")
    assert len(buckets) == 4
    for logical_id, bucket in buckets.items():
        rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
        aborts = [
            r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
            for r in rules
            if "AbortIncompleteMultipartUpload" in r
        ]
        assert aborts == [3], logical_id
        if logical_id.startswith("StorageIngestBucket"):
            (tombstones,) = [r for r in rules if "TagFilters" in r]
            assert tombstones["ExpirationInDays"] == 10
            noncurrent = {
                r["NoncurrentVersionExpiration"]["NoncurrentDays"]
                for r in rules
                if "NoncurrentVersionExpiration" in r
            }
            assert noncurrent == {5}


# -- gateway responses ---------------------------------------------------------------------------

#: What a device must be able to read in the one shape (issue 12, point 11): no signature or token,
#: a bad one, IAM's denial, a body too large, throttling, and the catch-alls.
MUST_SHAPE = {
    "DEFAULT_4XX",
    "DEFAULT_5XX",
    "MISSING_AUTHENTICATION_TOKEN",
    "INVALID_SIGNATURE",
    "EXPIRED_TOKEN",
    "ACCESS_DENIED",
    "UNAUTHORIZED",
    "REQUEST_TOO_LARGE",
    "BAD_REQUEST_BODY",
    "THROTTLED",
    "INTEGRATION_TIMEOUT",
}


def _handler_error_keys() -> set[str]:
    """The keys of the upload handler's own error body (an unknown route, answered in-process)."""
    from dicomflow.local.gateway import LambdaContextStub, proxy_event
    from functions.upload_api import handler

    event = proxy_event("GET", "/nowhere", {}, b"", source_ip="127.0.0.1")
    answer = handler.lambda_handler(event, LambdaContextStub(aws_request_id="r"))
    assert answer["statusCode"] == 404
    return set(json.loads(answer["body"]))


def _gateway_bodies(synth) -> dict[str, dict[str, Any]]:
    bodies = {}
    for resource in synth.resources("AWS::ApiGateway::GatewayResponse").values():
        props = resource["Properties"]
        template = props["ResponseTemplates"]["application/json"]
        # API Gateway fills $context.error.messageString with a JSON string literal.
        body = json.loads(template.replace("$context.error.messageString", '"API Gateway said so"'))
        assert props["ResponseParameters"] == {"gatewayresponse.header.Content-Type": "'application/json'"}, (
            props["ResponseType"]
        )
        bodies[props["ResponseType"]] = body
    return bodies


def test_api_gateway_refusals_have_the_handlers_error_shape(synth):
    bodies = _gateway_bodies(synth)
    assert set(bodies) >= MUST_SHAPE, sorted(MUST_SHAPE - set(bodies))
    keys = _handler_error_keys()
    assert keys == {"error", "message"}
    for response_type, body in bodies.items():
        assert set(body) == keys, response_type
        assert body["error"] and body["message"], response_type


def test_gateway_error_codes_are_the_local_stacks(synth):
    """The codes a device already knows from the handler and the local gateway."""
    bodies = _gateway_bodies(synth)
    assert bodies["MISSING_AUTHENTICATION_TOKEN"]["error"] == "missing_token"  # local/gateway.py
    assert "AWS_ACCESS_KEY_ID" in bodies["MISSING_AUTHENTICATION_TOKEN"]["message"]  # what to set
    assert bodies["REQUEST_TOO_LARGE"]["error"] == PayloadTooLargeError.code
    assert bodies["DEFAULT_5XX"]["error"] == "internal"
    # An unknown route answers MISSING_AUTHENTICATION_TOKEN under IAM: it must not read as "no such
    # scan" to the device (upload/device.py falls back when the code is not not_found).
    assert bodies["MISSING_AUTHENTICATION_TOKEN"]["error"] != "not_found"
