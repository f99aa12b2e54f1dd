"""The stack's configuration: a typed value built by app.py from cdk.json context (and nowhere else).

Constructs receive a :class:`StackConfig`; none of them reads context, so a test builds the stack
from a literal config and gets the same template the CLI would.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_logs as logs

#: CloudWatch Logs accepts only these retentions (days); anything else is refused at deploy time,
#: so it is refused here at synth time instead.
_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class StackConfig:
    """Everything a deployment may choose. Defaults are the secure, cheapest sensible ones."""

    environment: str = "dev"
    #: Days before raw PHI (the ingest bucket's current objects) expires.
    raw_retention_days: int = 30
    #: Days of CloudWatch logs (functions, API access, state machine, task, status events).
    log_retention_days: int = 365
    #: Where alarms are mailed (an SNS email subscription, confirmed by the recipient); None: topic only.
    alarm_email: str | None = None
    #: Mutual TLS custom domain: all three or none.
    api_domain_name: str | None = None
    api_certificate_arn: str | None = None
    mtls_truststore_uri: str | None = None
    #: An optional replacement model for the analysis task (s3:// URI) and the SHA-256 it must have.
    model_uri: str | None = None
    model_sha256: str | None = None
    log_level: str = "INFO"
    #: S3 Object Lock (governance mode, raw_retention_days) on the ingest bucket; only at creation.
    object_lock: bool = False
    #: Days before S3 aborts a multipart upload that was never completed (every bucket): its parts
    #: are billed and, in the ingest bucket, raw PHI that no scan accounts for.
    abort_incomplete_upload_days: int = 1
    #: Days before an aborted scan's tombstones (the empty objects tagged ``dicomflow-tombstone``
    #: left at its single-PUT keys) expire. A tombstone must outlive every URL signed for its key,
    #: and SigV4 URLs live at most 7 days: shorter lets a URL signed for longer land after it.
    tombstone_retention_days: int = 7
    #: Days an object version stays once it is replaced or deleted in the ingest bucket (tombstones'
    #: and raw PHI's old versions alike).
    noncurrent_version_days: int = 1

    def __post_init__(self) -> None:
        if self.raw_retention_days < 1:
            raise ValueError(f"rawRetentionDays must be at least 1, got {self.raw_retention_days}")
        for name, days in (
            ("abortIncompleteUploadDays", self.abort_incomplete_upload_days),
            ("tombstoneRetentionDays", self.tombstone_retention_days),
            ("noncurrentVersionDays", self.noncurrent_version_days),
        ):
            if days < 1:
                raise ValueError(f"{name} must be at least 1, got {days}")
        if self.log_retention_days not in _RETENTION:
            allowed = ", ".join(str(d) for d in _RETENTION)
            raise ValueError(f"logRetentionDays must be one of {allowed}; got {self.log_retention_days}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"logLevel must be one of {', '.join(LOG_LEVELS)}; got {self.log_level!r}")
        mtls = (self.api_domain_name, self.api_certificate_arn, self.mtls_truststore_uri)
        if any(mtls) and not all(mtls):
            raise ValueError(
                "mutual TLS needs apiDomainName, apiCertificateArn and mtlsTruststoreUri together"
            )
        if self.mtls_truststore_uri and not self.mtls_truststore_uri.startswith("s3://"):
            raise ValueError("mtlsTruststoreUri must be an s3:// URI of the PEM bundle")
        if bool(self.model_uri) != bool(self.model_sha256):
            raise ValueError("modelUri and modelSha256 go together (the task refuses an unverified model)")
        if not self.environment.isalnum():
            raise ValueError(
                f"environment must be letters and digits (it names the stack), got {self.environment!r}"
            )

    @property
    def log_retention(self) -> logs.RetentionDays:
        return _RETENTION[self.log_retention_days]

    @property
    def mtls(self) -> bool:
        return self.api_domain_name is not None
