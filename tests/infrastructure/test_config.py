"""Configuration: cdk.json context -> StackConfig (app.py), and what each choice changes.

The mutual-TLS API is synthesized on its own (the API construct in a bare stack): a second full
synth would double this module's time for one construct's difference.
"""

from __future__ import annotations

import pytest

from cdk.config import StackConfig

from .conftest import cdk_context, load_app


def test_cdk_json_context_is_a_valid_config_with_secure_defaults():
    config = load_app().config_from_context(cdk_context().get)
    assert config == StackConfig()  # cdk.json states the defaults, nothing more
    assert not config.mtls and not config.object_lock


def test_context_values_from_the_cli_are_text_and_parsed():
    given = {"environment": "prod", "rawRetentionDays": "7", "logLevel": "debug", "objectLock": "true"}
    config = load_app().config_from_context(given.get)
    assert (config.environment, config.raw_retention_days, config.log_level, config.object_lock) == (
        "prod",
        7,
        "DEBUG",
        True,
    )


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"logRetentionDays": "10"}, "logRetentionDays must be one of"),
        ({"rawRetentionDays": "0"}, "rawRetentionDays must be at least 1"),
        ({"apiDomainName": "api.example.org"}, "mutual TLS needs"),
        ({"modelUri": "s3://models/m.onnx"}, "modelUri and modelSha256 go together"),
        ({"environment": "prod-eu"}, "environment must be letters and digits"),
        ({"logLevel": "verbose"}, "logLevel must be one of"),
    ],
)
def test_a_bad_context_fails_synth_naming_the_key(context, message):
    with pytest.raises(ValueError, match=message):
        load_app().config_from_context(context.get)


def test_mutual_tls_domain_serves_the_api_and_disables_execute_api():
    import aws_cdk as cdk
    from aws_cdk import aws_kms as kms
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk.assertions import Template

    from cdk.constructs.api import UploadApi

    config = StackConfig(
        api_domain_name="api.example.org",
        api_certificate_arn="arn:aws:acm:eu-west-1:123456789012:certificate/abc",
        mtls_truststore_uri="s3://truststores/devices.pem",
    )
    stack = cdk.Stack(cdk.App(), "MtlsApi")
    code = lambda_.Code.from_inline("x")
    handler = lambda_.Function(
        stack, "Handler", code=code, handler="i.h", runtime=lambda_.Runtime.PYTHON_3_12
    )
    UploadApi(stack, "UploadApi", config=config, handler=handler, key=kms.Key(stack, "Key"))
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::ApiGateway::DomainName",
        {
            "DomainName": "api.example.org",
            "SecurityPolicy": "TLS_1_2",
            "MutualTlsAuthentication": {"TruststoreUri": "s3://truststores/devices.pem"},
            "RegionalCertificateArn": config.api_certificate_arn,
        },
    )
    template.has_resource_properties("AWS::ApiGateway::RestApi", {"DisableExecuteApiEndpoint": True})
    template.resource_count_is("AWS::ApiGateway::BasePathMapping", 1)
