"""What a step needs (stores, the scans table, the status events, the de-identifier), built from
:class:`~dicomflow.settings.Settings` once per execution environment (a Lambda cold start).

Clients are created on first use, so a step that never de-identifies never creates a KMS client.
Every AWS failure worth retrying surfaces as :class:`~dicomflow.errors.TransientStorageError`
(S3: :mod:`dicomflow.storage.s3`; DynamoDB: :mod:`dicomflow.upload.scans_table`; EventBridge:
:mod:`dicomflow.workflow.events`; KMS and the idempotency records: here), the name the state
machine retries on.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from functools import cached_property
from typing import Any

from dicomflow.errors import ConfigurationError, TransientStorageError
from dicomflow.settings import Settings, get_settings
from dicomflow.storage.s3 import S3ObjectStore
from dicomflow.upload.scans_table import ScansTable
from dicomflow.workflow.events import StatusEvents

#: KMS error codes worth retrying (throttling, KMS or its key store busy).
_KMS_TRANSIENT = {
    "ThrottlingException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "LimitExceededException",
}
#: How long a batch's result is remembered for duplicate deliveries (powertools idempotency).
IDEMPOTENCY_TTL_S = 24 * 3600


class TransientKmsKey:
    """A :class:`~dicomflow.deid.keys.PseudonymKey` over KMS whose failures are dicomflow's:
    throttling and KMS-side errors are :class:`TransientStorageError` (retried by the workflow),
    anything else (the key disabled, access denied) :class:`ConfigurationError`."""

    def __init__(self, key_id: str, client: Any) -> None:
        from dicomflow.deid.keys import KmsHmacKey

        self._key = KmsHmacKey(key_id, client=client)

    @property
    def key_id(self) -> str:
        return self._key.key_id

    def mac(self, message: bytes) -> bytes:
        try:
            return self._key.mac(message)
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in _KMS_TRANSIENT or (not code and isinstance(exc, OSError)):
                raise TransientStorageError(f"KMS GenerateMac failed ({code or 'network'}); retry") from exc
            raise ConfigurationError(
                f"KMS GenerateMac with the pseudonym key failed ({code or type(exc).__name__})"
            ) from exc


class StepContext:
    """The resources of the workflow's steps, each made on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stores: dict[str, S3ObjectStore] = {}
        self._once: dict[str, tuple[Callable[..., dict[str, Any]], Any]] = {}
        self._lock = threading.Lock()

    @cached_property
    def session(self) -> Any:
        import boto3

        return boto3.session.Session(region_name=self.settings.region)

    def client(self, service: str, **config: Any) -> Any:
        from botocore.config import Config

        return self.session.client(
            service,
            endpoint_url=self.settings.aws_endpoint_url,
            config=Config(retries={"mode": "standard", "max_attempts": 5}, **config),
        )

    @cached_property
    def s3(self) -> Any:
        # Above the Maps' concurrency (40 batches at once locally share this client): a smaller
        # pool discards a connection per request when full, and every request opens a new one.
        return self.client("s3", max_pool_connections=64)

    def store(self, bucket: str) -> S3ObjectStore:
        """The store of ``bucket`` (one S3 client for all, so UploadPartCopy can go across)."""
        with self._lock:
            if bucket not in self._stores:
                self._stores[bucket] = S3ObjectStore(
                    bucket, kms_key_id=self.settings.kms_key_id, client=self.s3
                )
            return self._stores[bucket]

    @cached_property
    def table(self) -> ScansTable:
        resource = self.session.resource("dynamodb", endpoint_url=self.settings.aws_endpoint_url)
        return ScansTable(resource.Table(self.settings.require("scans_table")))

    @cached_property
    def events(self) -> StatusEvents:
        return StatusEvents(self.client("events"), self.settings.require("event_bus_name"))

    @cached_property
    def deidentifier(self) -> Any:
        """The :class:`~dicomflow.deid.Deidentifier` with the KMS HMAC pseudonym key (the secret
        stays in KMS; MACs are cached for the life of this environment)."""
        from dicomflow.deid.policy import Deidentifier

        key = TransientKmsKey(self.settings.require("pseudonym_key_id"), self.client("kms"))
        return Deidentifier(key)

    def idempotent(
        self, step: str, function: Callable[..., dict[str, Any]], lambda_context: Any
    ) -> Callable[..., dict[str, Any]]:
        """``function(event=...)`` run at most once per (step, scan id, first index of the batch)
        within :data:`IDEMPOTENCY_TTL_S` (powertools idempotency on the idempotency table): a
        duplicate delivery gets the recorded result. A call already in flight, or the records'
        table failing, is :class:`TransientStorageError` (the workflow retries)."""
        with self._lock:
            if step not in self._once:
                self._once[step] = self._make_idempotent(step, function)
            wrapped, config = self._once[step]
        if lambda_context is not None:
            config.register_lambda_context(lambda_context)
        return wrapped

    def _make_idempotent(
        self, step: str, function: Callable[..., dict[str, Any]]
    ) -> tuple[Callable[..., dict[str, Any]], Any]:
        from aws_lambda_powertools.utilities.idempotency import (
            DynamoDBPersistenceLayer,
            IdempotencyConfig,
            idempotent_function,
        )
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyPersistenceLayerError,
        )

        persistence = DynamoDBPersistenceLayer(
            table_name=self.settings.require("idempotency_table"), boto3_client=self.client("dynamodb")
        )
        config = IdempotencyConfig(
            event_key_jmespath="[BatchInput.scan_id, Items[0].index]",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=IDEMPOTENCY_TTL_S,
        )
        once = idempotent_function(
            function,
            data_keyword_argument="event",
            persistence_store=persistence,
            config=config,
            key_prefix=step,
        )

        @functools.wraps(function)
        def call(**kwargs: Any) -> dict[str, Any]:
            try:
                return dict(once(**kwargs))
            except IdempotencyAlreadyInProgressError as exc:
                raise TransientStorageError(
                    f"{step}: the same batch is in progress elsewhere; retry"
                ) from exc
            except IdempotencyPersistenceLayerError as exc:
                raise TransientStorageError(f"{step}: the idempotency records failed; retry") from exc

        return call, config


_CONTEXT: StepContext | None = None
_CONTEXT_LOCK = threading.Lock()


def step_context() -> StepContext:
    """This environment's context, made from the settings on first call."""
    global _CONTEXT
    with _CONTEXT_LOCK:
        if _CONTEXT is None:
            _CONTEXT = StepContext(get_settings())
        return _CONTEXT


def reset_context() -> None:
    """Forget the context (tests, and the local stack when its settings change)."""
    global _CONTEXT
    with _CONTEXT_LOCK:
        _CONTEXT = None
