"""The upload part of the local stack: moto, (optionally) the S3 proxy, the upload API's service
and the local gateway serving the real handler, in this process.

Examples
--------
>>> stack = start_upload_stack(part_size=5 * 1024 * 1024)  # doctest: +SKIP
>>> stack.api_url  # give it to `dicomflow upload --api`  # doctest: +SKIP
'http://127.0.0.1:...'
>>> stack.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomflow.local.gateway import LocalGateway
from dicomflow.local.moto_server import LocalAws, start_local_aws
from dicomflow.local.s3_proxy import S3Proxy
from dicomflow.settings import Settings
from dicomflow.upload.processing import RecordingProcessor, ScanProcessor
from dicomflow.upload.service import UploadService, build_service


def load_upload_handler() -> Any:
    """The upload Lambda's handler module (``functions/upload_api/handler.py`` of the checkout)."""
    try:
        return importlib.import_module("functions.upload_api.handler")
    except ImportError:
        path = Path(__file__).resolve().parents[5] / "functions" / "upload_api" / "handler.py"
        spec = importlib.util.spec_from_file_location("dicomflow_upload_api_handler", path)
        if spec is None or spec.loader is None:
            raise
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


@dataclass
class UploadStack:
    local: LocalAws
    gateway: LocalGateway
    service: UploadService
    processor: RecordingProcessor | ScanProcessor
    proxy: S3Proxy | None = None
    handler: Any = field(default=None, repr=False)

    @property
    def api_url(self) -> str:
        return self.gateway.url

    def stop(self) -> None:
        self.gateway.stop()
        if self.proxy is not None:
            self.proxy.stop()
        if self.handler is not None:
            self.handler.use_service(None)
        self.local.stop()

    def __enter__(self) -> UploadStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_upload_stack(
    *,
    with_proxy: bool = False,
    put_delay_s: float = 0.0,
    max_url_age_s: float | None = None,
    token: str | None = None,
    port: int = 0,
    local: LocalAws | None = None,
    processor: ScanProcessor | None = None,
    **settings: Any,
) -> UploadStack:
    """Start moto (unless ``local`` is given), the S3 proxy if asked (presigned URLs then point at
    it), and the gateway. ``settings`` override :class:`~dicomflow.settings.Settings` fields
    (``part_size``, ``presigned_url_expiry_s``, ``max_files``...). ``processor`` is what a completed
    scan is handed to (default: a :class:`RecordingProcessor`; the workflow stack gives Step Functions)."""
    local = local or start_local_aws()
    proxy = (
        S3Proxy(local.endpoint_url, put_delay_s=put_delay_s, max_url_age_s=max_url_age_s).start()
        if with_proxy
        else None
    )
    env = local.settings_env()
    if proxy is not None:
        env["DICOMFLOW_AWS_ENDPOINT_URL"] = proxy.url
    config = dataclasses.replace(Settings.from_env(env), **settings)
    processor = processor if processor is not None else RecordingProcessor()
    service = build_service(config, processor=processor)
    handler = load_upload_handler()
    handler.use_service(service)
    gateway = LocalGateway(handler.lambda_handler, token=token, port=port).start()
    return UploadStack(
        local=local, gateway=gateway, service=service, processor=processor, proxy=proxy, handler=handler
    )
