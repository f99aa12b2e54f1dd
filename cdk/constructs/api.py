"""The upload API: API Gateway (REST, regional) in front of the upload Lambda.

IAM (SigV4) authorisation on every method; the stage throttles, validates requests, writes JSON
access logs (never bodies: data tracing is off, manifests carry file names) to an encrypted log
group and traces with X-Ray. When the context names a domain, a certificate and a truststore, the
API is served only on that mutual-TLS custom domain (the execute-api endpoint is disabled).

Whatever refuses a request, the device reads one shape, the handler's ``{"error": code, "message":
reason}`` (functions/upload_api/handler.py): API Gateway's own answers (a missing or bad signature,
IAM's denial, throttling, a body over 10 MB, a validation failure, a timeout) are gateway responses
with that body (:data:`GATEWAY_ERRORS`), never its bare ``{"message": "Missing Authentication
Token"}``.
"""

from __future__ import annotations

import json

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.config import StackConfig
from cdk.nag import acknowledge, checkov_skip

#: Requests per second (steady) and burst for the whole stage: a device uploads parts to S3
#: directly, so the API sees a few calls per file at most.
RATE_LIMIT = 50
BURST_LIMIT = 100

#: (method, path) of every route the upload handler serves (functions/upload_api/handler.py).
ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/scans"),
    ("GET", "/scans/{scan_id}"),
    ("DELETE", "/scans/{scan_id}"),
    ("POST", "/scans/{scan_id}/complete"),
    ("POST", "/scans/{scan_id}/files/complete"),
    ("GET", "/scans/{scan_id}/files/{index}"),
    ("POST", "/scans/{scan_id}/files/{index}/parts"),
    ("POST", "/scans/{scan_id}/files/{index}/complete"),
)


_SIGV4 = (
    "sign every request with SigV4 (service execute-api): set AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) of an identity allowed execute-api:Invoke on this API"
)
#: API Gateway's own refusals -> (error code, message). The codes are the handler's and the local
#: gateway's where they mean the same (``missing_token``, ``too_large``, ``invalid_request``,
#: ``not_found``, ``unavailable``, ``internal``), so a device reacts to one vocabulary; ``None`` as
#: the message passes API Gateway's own (``$context.error.messageString``, already a JSON string).
#: An unknown route also answers MISSING_AUTHENTICATION_TOKEN under IAM authorisation: its code is
#: not ``not_found``, which the device reads as "no such scan".
GATEWAY_ERRORS: dict[apigw.ResponseType, tuple[str, str | None]] = {
    apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN: (
        "missing_token",
        f"Missing Authentication Token (or no such route): {_SIGV4}",
    ),
    apigw.ResponseType.INVALID_SIGNATURE: (
        "invalid_signature",
        f"the request's SigV4 signature does not match: {_SIGV4}, and check the clock and region",
    ),
    apigw.ResponseType.EXPIRED_TOKEN: (
        "expired_token",
        "the credentials that signed the request have expired: refresh AWS_SESSION_TOKEN and retry",
    ),
    apigw.ResponseType.ACCESS_DENIED: (
        "forbidden",
        "the signing identity is not allowed execute-api:Invoke on this route: grant it in IAM",
    ),
    apigw.ResponseType.UNAUTHORIZED: ("unauthorized", f"the request is not authenticated: {_SIGV4}"),
    apigw.ResponseType.WAF_FILTERED: ("forbidden", "the request was refused by the API's web ACL"),
    apigw.ResponseType.REQUEST_TOO_LARGE: (
        "too_large",
        "Request Too Long: the body is over API Gateway's 10 MB limit; send fewer files per request",
    ),
    apigw.ResponseType.BAD_REQUEST_BODY: (
        "invalid_request",
        "the body must be a JSON object (Content-Type: application/json)",
    ),
    apigw.ResponseType.BAD_REQUEST_PARAMETERS: ("invalid_request", None),
    apigw.ResponseType.UNSUPPORTED_MEDIA_TYPE: (
        "invalid_request",
        "send JSON bodies with Content-Type: application/json",
    ),
    apigw.ResponseType.RESOURCE_NOT_FOUND: ("not_found", None),
    apigw.ResponseType.THROTTLED: ("throttled", "too many requests: retry with backoff"),
    apigw.ResponseType.QUOTA_EXCEEDED: ("throttled", "the API's quota is used up: retry later"),
    apigw.ResponseType.INTEGRATION_TIMEOUT: (
        "unavailable",
        "the upload API did not answer in time: retry with backoff (resume continues where it was)",
    ),
    apigw.ResponseType.INTEGRATION_FAILURE: ("internal", "the upload API's function failed; retry"),
    apigw.ResponseType.DEFAULT_4_XX: ("invalid_request", None),
    apigw.ResponseType.DEFAULT_5_XX: ("internal", None),
}


def gateway_error_template(code: str, message: str | None) -> str:
    """The body of a gateway response (a mapping template): ``{"error": code, "message": ...}``.

    Examples
    --------
    >>> gateway_error_template("throttled", "retry")
    '{"error": "throttled", "message": "retry"}'
    >>> gateway_error_template("internal", None)
    '{"error": "internal", "message": $context.error.messageString}'
    """
    if message is None:
        return '{"error": ' + json.dumps(code) + ', "message": $context.error.messageString}'
    assert "$" not in message, "a literal message must not read as a template variable"
    return json.dumps({"error": code, "message": message})


class UploadApi(Construct):
    """The REST API and its stage; ``api.url`` is what the device's ``--api`` takes."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: StackConfig,
        handler: lambda_.IFunction,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, id)
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            encryption_key=key,
            retention=config.log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            description=f"dicomflow upload API ({config.environment})",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            disable_execute_api_endpoint=config.mtls,
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name="v1",
                throttling_rate_limit=RATE_LIMIT,
                throttling_burst_limit=BURST_LIMIT,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # would log request and response bodies: file names are PHI
                metrics_enabled=True,
                tracing_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
            ),
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
        )
        body_model = self.api.add_model(
            "JsonObject",
            content_type="application/json",
            schema=apigw.JsonSchema(
                schema=apigw.JsonSchemaVersion.DRAFT4,
                title="JsonObject",
                type=apigw.JsonSchemaType.OBJECT,
            ),
            description="Every POST body is a JSON object; the handler validates its fields.",
        )
        validator = self.api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        integration = apigw.LambdaIntegration(handler, allow_test_invoke=False)
        for method, path in ROUTES:
            resource = self.api.root.resource_for_path(path)
            resource.add_method(
                method,
                integration,
                authorization_type=apigw.AuthorizationType.IAM,
                request_validator=validator,
                request_models={"application/json": body_model} if method == "POST" else None,
            )

        for response_type, (code, message) in GATEWAY_ERRORS.items():
            self.api.add_gateway_response(
                f"Error{_construct_suffix(response_type)}",
                type=response_type,
                templates={"application/json": gateway_error_template(code, message)},
                response_headers={"Content-Type": "'application/json'"},
            )

        self.domain: apigw.DomainName | None = None
        if config.mtls:
            assert config.api_domain_name and config.api_certificate_arn and config.mtls_truststore_uri
            bucket_name, _, truststore_key = config.mtls_truststore_uri.removeprefix("s3://").partition("/")
            self.domain = apigw.DomainName(
                self,
                "MutualTlsDomain",
                domain_name=config.api_domain_name,
                certificate=acm.Certificate.from_certificate_arn(
                    self, "Certificate", config.api_certificate_arn
                ),
                endpoint_type=apigw.EndpointType.REGIONAL,
                security_policy=apigw.SecurityPolicy.TLS_1_2,
                mtls=apigw.MTLSConfig(
                    bucket=s3.Bucket.from_bucket_name(self, "Truststore", bucket_name), key=truststore_key
                ),
            )
            self.domain.add_base_path_mapping(self.api, stage=self.api.deployment_stage)

        acknowledge(
            self.api,
            {
                "AwsSolutions-APIG3": "No WAF web ACL by default: every method requires SigV4 (IAM) and "
                "the stage throttles; attach the organisation's web ACL to the stage where one exists.",
                "AwsSolutions-COG4": "Devices authenticate with IAM (SigV4), optionally plus mutual TLS; "
                "there are no human users, so no Cognito user pool.",
                "HIPAA.Security-APIGWCacheEnabledAndEncrypted": "No cache: every response is a scan's "
                "current state or fresh presigned URLs; caching would serve stale or reused URLs.",
                "HIPAA.Security-APIGWSSLEnabled": "The integration is a Lambda proxy (AWS-internal, "
                "IAM-invoked): a client certificate authenticates an HTTP backend, and there is none.",
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]": "API Gateway's account-level logging role: the "
                "managed policy is the one AWS documents for it and grants logs only.",
            },
        )
        checkov_skip(
            self.api.deployment_stage,
            {
                "CKV_AWS_120": "No cache: responses are a scan's current state or fresh presigned URLs.",
            },
        )

    @property
    def url(self) -> str:
        if self.domain is not None:
            return f"https://{self.domain.domain_name}/"
        return self.api.url


def _construct_suffix(response_type: apigw.ResponseType) -> str:
    """``MISSING_AUTHENTICATION_TOKEN`` -> ``MissingAuthenticationToken`` (a stable construct id)."""
    return "".join(p.capitalize() for p in response_type.response_type.split("_"))
