"""Each function's role allows exactly the S3 calls its code makes, on the scans' objects only.

Given ``S3_CALLS`` (cdk/constructs/functions.py: the actions each step's code needs, per bucket)
and the session synth, when we fold each role's statements into resource -> actions, then every
function holds those actions and no more (no CDK action family, no DeleteObjectVersion or ACLs, no
bucket-wide object grant), and the calls the steps make (UploadPartCopy, tagging, tombstones,
pseudonyms) are among them. For the upload API the calls are read from the code itself: every boto3
operation its modules make maps to an action the role holds.
"""

from __future__ import annotations

import ast
import inspect
import json
from collections import defaultdict
from typing import Any

from cdk.constructs.functions import OBJECTS, S3_CALLS
from dicomflow import topology
from dicomflow.storage import s3 as storage_s3
from dicomflow.upload import presign, service

BUCKETS = {
    "bucket:ingest": "StorageIngestBucket1DD274D5",
    "bucket:deidentified": "StorageDeidentifiedBucket1E07F965",
    "bucket:results": "StorageResultsBucketF87BB70E",
}
PSEUDONYM_KEY = "StoragePseudonymKeyC76FDFA6"


def _construct(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("_"))


def _policy(synth, name: str) -> dict[str, Any]:
    found = [
        p
        for k, p in synth.resources("AWS::IAM::Policy").items()
        if k.startswith(f"Functions{_construct(name)}RoleDefaultPolicy")
    ]
    assert len(found) == 1, name
    return found[0]["Properties"]["PolicyDocument"]


def _resource_name(resource: Any) -> tuple[str, str]:
    """A bucket ARN -> (logical id, ""); ``bucket ARN + "/scans/*"`` -> (logical id, "/scans/*")."""
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        return resource["Fn::GetAtt"][0], ""
    if isinstance(resource, dict) and "Fn::Join" in resource:
        arn, suffix = resource["Fn::Join"][1]
        return arn["Fn::GetAtt"][0], suffix
    return "", json.dumps(resource)


def s3_grants(synth, name: str) -> dict[tuple[str, str], set[str]]:
    """(bucket logical id, object suffix) -> the S3 actions the function's role allows there."""
    folded: dict[tuple[str, str], set[str]] = defaultdict(set)
    for statement in _policy(synth, name)["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        s3_actions = {a for a in actions if a.startswith("s3:")}
        if not s3_actions:
            continue
        assert statement["Effect"] == "Allow" and "Condition" not in statement
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        for resource in resources:
            folded[_resource_name(resource)] |= s3_actions
    return dict(folded)


def expected(name: str) -> dict[tuple[str, str], set[str]]:
    want: dict[tuple[str, str], set[str]] = {}
    for bucket, actions in S3_CALLS[name].items():
        objects = {a for a in actions if a != "s3:ListBucket"}
        if objects:
            want[(BUCKETS[bucket], "/" + OBJECTS)] = objects
        if "s3:ListBucket" in actions:
            want[(BUCKETS[bucket], "")] = {"s3:ListBucket"}
    return want


def test_every_function_has_exactly_its_s3_calls_on_the_scans_objects(synth):
    assert set(S3_CALLS) == set(topology.FUNCTIONS)
    for name in topology.FUNCTIONS:
        assert s3_grants(synth, name) == expected(name), name


def test_no_function_holds_an_s3_action_family_or_history_erasing_action(synth):
    for name in topology.FUNCTIONS:
        for where, actions in s3_grants(synth, name).items():
            assert not any("*" in a for a in actions), (name, where, actions)
            assert not actions & {"s3:DeleteObjectVersion", "s3:PutObjectAcl", "s3:PutObjectRetention"}, name
            assert where[1] in ("", "/" + OBJECTS), (name, where)  # never bucket/* nor another prefix


def test_upload_api_may_tag_only_its_prefix_of_the_ingest_bucket(synth):
    """Tombstones are PutObject with x-amz-tagging: S3 authorises that as s3:PutObjectTagging."""
    grants = s3_grants(synth, "upload_api")
    tagging = {where for where, actions in grants.items() if "s3:PutObjectTagging" in actions}
    assert tagging == {(BUCKETS["bucket:ingest"], "/scans/*")}


def test_deidentify_batch_can_upload_part_copy_from_ingest_into_deidentified(synth):
    """UploadPartCopy across buckets: s3:GetObject on the source, s3:PutObject on the destination
    (and AbortMultipartUpload there, the engine aborts a failed object)."""
    grants = s3_grants(synth, "deidentify_batch")
    assert "s3:GetObject" in grants[(BUCKETS["bucket:ingest"], "/scans/*")]
    destination = grants[(BUCKETS["bucket:deidentified"], "/scans/*")]
    assert {"s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"} <= destination


def test_quarantine_may_read_and_write_tags_on_the_originals(synth):
    grants = s3_grants(synth, "quarantine")
    assert {"s3:GetObjectTagging", "s3:PutObjectTagging"} <= grants[(BUCKETS["bucket:ingest"], "/scans/*")]
    assert "s3:PutObject" not in grants[(BUCKETS["bucket:ingest"], "/scans/*")]  # tags, never data


def test_only_the_de_identifier_may_compute_pseudonyms_and_only_macs(synth):
    for name in topology.FUNCTIONS:
        statements = [s for s in _policy(synth, name)["Statement"] if PSEUDONYM_KEY in json.dumps(s)]
        if name == "deidentify_batch":
            assert [s["Action"] for s in statements] == ["kms:GenerateMac"], name
        else:
            assert not statements, name


# -- the upload API's calls, read from its code -----------------------------------------------------

#: boto3 S3 operation -> the IAM actions it needs (Service Authorization Reference for S3).
OPERATION_ACTIONS = {
    "head_object": {"s3:GetObject"},
    "get_object": {"s3:GetObject"},
    "put_object": {"s3:PutObject"},
    "upload_fileobj": {"s3:PutObject", "s3:AbortMultipartUpload"},
    "create_multipart_upload": {"s3:PutObject"},
    "upload_part": {"s3:PutObject"},
    "upload_part_copy": {"s3:PutObject", "s3:GetObject"},
    "copy_object": {"s3:PutObject", "s3:GetObject"},
    "complete_multipart_upload": {"s3:PutObject"},
    "abort_multipart_upload": {"s3:AbortMultipartUpload"},
    "list_parts": {"s3:ListMultipartUploadParts"},
    "delete_object": {"s3:DeleteObject"},
    "get_object_tagging": {"s3:GetObjectTagging"},
    "put_object_tagging": {"s3:PutObjectTagging"},
    "list_objects_v2": {"s3:ListBucket"},
}


def _operations(cls: type) -> dict[str, set[str]]:
    """Method -> the boto3 operations it calls (``client.x(...)``, ``get_paginator("x")``,
    ``generate_presigned_url("x", ...)``) and the actions its parameters add (``Tagging``), with the
    class's own methods it calls folded in."""
    tree = ast.parse(inspect.getsource(cls))
    (body,) = tree.body
    assert isinstance(body, ast.ClassDef)
    direct: dict[str, set[str]] = {}
    calls: dict[str, set[str]] = {}
    for method in body.body:
        if not isinstance(method, ast.FunctionDef):
            continue
        ops, own = set(), set()
        for node in ast.walk(method):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            attr, target = node.func.attr, node.func.value
            if attr in ("get_paginator", "generate_presigned_url") and isinstance(node.args[0], ast.Constant):
                ops.add(str(node.args[0].value))
            elif attr in OPERATION_ACTIONS:
                ops.add(attr)
                if attr == "put_object" and any(k.arg == "Tagging" for k in node.keywords):
                    ops.add("put_object_tagging")
            if isinstance(target, ast.Name) and target.id == "self":
                own.add(attr)
        direct[method.name], calls[method.name] = ops, own
    closed = {m: set(ops) for m, ops in direct.items()}
    changed = True
    while changed:
        changed = False
        for method, own in calls.items():
            for other in own & set(closed):
                if not closed[other] <= closed[method]:
                    closed[method] |= closed[other]
                    changed = True
    return closed


def _service_uses() -> dict[str, set[str]]:
    """``self.store.x`` / ``self.uploads.x`` / ``store.x`` calls in upload/service.py, by object."""
    used: dict[str, set[str]] = {"store": set(), "uploads": set()}
    for node in ast.walk(ast.parse(inspect.getsource(service))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            owner = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
            if owner in used:
                used[owner].add(node.func.attr)
    return used


def test_upload_api_role_allows_every_s3_call_its_code_makes(synth):
    uses = _service_uses()
    store_ops, upload_ops = _operations(storage_s3.S3ObjectStore), _operations(presign.S3Uploads)
    assert uses["uploads"] <= set(upload_ops) and uses["store"] <= set(store_ops), uses
    operations = set().union(
        *(upload_ops[m] for m in uses["uploads"]), *(store_ops[m] for m in uses["store"])
    )
    assert {"put_object_tagging", "complete_multipart_upload", "list_parts", "upload_part"} <= operations
    needed = set().union(*(OPERATION_ACTIONS[op] for op in operations))
    granted = set().union(*s3_grants(synth, "upload_api").values())
    assert needed <= granted, sorted(needed - granted)
    assert granted == needed, f"granted but never called: {sorted(granted - needed)}"
