"""Settings, read once from the environment (``DICOMFLOW_*``) into a frozen object.

Lambda handlers, the container and the CLI call :func:`get_settings` at start-up; nothing else reads
``os.environ``. A missing setting is reported when it is first required, naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache

from dicomflow.errors import ConfigurationError
from dicomflow.manifest import ManifestLimits

PREFIX = "DICOMFLOW_"


@dataclass(frozen=True)
class Settings:
    """Every runtime setting. The environment variable is ``DICOMFLOW_`` + the upper-case name."""

    region: str = "us-east-1"
    aws_endpoint_url: str | None = None  # the embedded moto server locally; unset in AWS
    ingest_bucket: str | None = None
    deidentified_bucket: str | None = None
    results_bucket: str | None = None
    scans_table: str | None = None
    idempotency_table: str | None = None  # powertools idempotency records of the workflow's handlers
    kms_key_id: str | None = None  # SSE-KMS key of the buckets
    pseudonym_key_id: str | None = None  # KMS HMAC key for patient pseudonyms and UID remapping
    state_machine_arn: str | None = None
    event_bus_name: str | None = None
    max_files: int = ManifestLimits.max_files
    max_file_size: int = ManifestLimits.max_file_size
    max_total_size: int = ManifestLimits.max_total_size
    presigned_url_expiry_s: int = 900
    part_size: int = 64 * 1024 * 1024
    upload_verify: str = "parts"  # or "sha256" or "storage": see dicomflow.upload.service

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            if f.type in ("int", int):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise ConfigurationError(
                        f"{PREFIX}{f.name.upper()} must be a whole number, got {raw!r}"
                    ) from None
            else:
                values[f.name] = raw
        return cls(**values)  # type: ignore[arg-type]

    def require(self, name: str) -> str:
        """The value of a setting that this runtime cannot work without."""
        value = getattr(self, name)
        if value in (None, ""):
            raise ConfigurationError(
                f"setting {name} is not configured: set the environment variable {PREFIX}{name.upper()}"
            )
        return str(value)

    @property
    def manifest_limits(self) -> ManifestLimits:
        return ManifestLimits(
            max_files=self.max_files,
            max_file_size=self.max_file_size,
            max_total_size=self.max_total_size,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first call."""
    return Settings.from_env()
