"""An embedded moto server on 127.0.0.1 with the resources dicomflow needs.

``start_local_aws()`` starts :class:`moto.server.ThreadedMotoServer` on a free port, sets
``MOTO_PORT`` (moto calls back into itself in server mode) and placeholder AWS credentials when
none are set, and creates the KMS key, the ingest bucket (SSE-KMS default encryption with that key)
and the scans table. :meth:`LocalAws.settings_env` gives the ``DICOMFLOW_*`` variables that point
the code at it. ``python -m dicomflow.local.moto_server`` runs one in its own process (benchmarks),
printing its settings as one JSON line and stopping when stdin closes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from dicomflow.upload.scans_table import create_table

DEFAULT_REGION = "us-east-1"


@dataclass
class LocalAws:
    """A running embedded moto server and the names of what was created in it."""

    endpoint_url: str
    region: str
    ingest_bucket: str
    scans_table: str
    kms_key_id: str
    server: Any = field(repr=False, default=None)

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=self.region)

    def settings_env(self) -> dict[str, str]:
        """``DICOMFLOW_*`` variables that point dicomflow at this server."""
        return {
            "DICOMFLOW_REGION": self.region,
            "DICOMFLOW_AWS_ENDPOINT_URL": self.endpoint_url,
            "DICOMFLOW_INGEST_BUCKET": self.ingest_bucket,
            "DICOMFLOW_SCANS_TABLE": self.scans_table,
            "DICOMFLOW_KMS_KEY_ID": self.kms_key_id,
        }

    def stop(self) -> None:
        """Stop the server and drop what it held.

        moto's backends belong to the process, not to the server: without the reset, the next
        server in this process (the next test module's stack) would start with this one's objects,
        executions and items, and a check that "every key lies under a scan of the run" would see
        another run's scans."""
        if self.server is not None:
            import urllib.request

            with contextlib.suppress(OSError):
                request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
                urllib.request.urlopen(request, timeout=30).close()
            self.server.stop()
            self.server = None

    def __enter__(self) -> LocalAws:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_dispatch_cached = False


def cache_request_dispatch() -> None:
    """Make moto's server find a request's backend without scanning its own package every time.

    moto 5.2's ``DomainDispatcherApplication.get_application`` runs under one lock for every
    request of the server, and inside it ``get_backend_for_host`` lists moto's package folder
    (``os.listdir`` plus an ``isdir`` per service, ~190 stat calls) and tries its URL patterns one
    by one. Profiled on the default 4D-CT (tens of thousands of S3 requests), requests spent most of
    their time queued on that lock. Both answers depend only on the host name and on moto's
    installed files, so they are remembered per host: the same backend, found once.
    """
    global _dispatch_cached
    if _dispatch_cached:
        return
    _dispatch_cached = True
    import functools

    from moto import backends
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    modules = frozenset(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
    original = DomainDispatcherApplication.get_backend_for_host
    found: dict[str | None, Any] = {}

    @functools.wraps(original)
    def get_backend_for_host(self: Any, host: str | None) -> Any:
        if host not in found:
            backend = original(self, host)
            if backend is None:
                return None  # not remembered: moto prints its hint each time, as it did
            found[host] = backend
        return found[host]

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]


def start_local_aws(
    *,
    ingest_bucket: str = "dicomflow-ingest",
    scans_table: str = "dicomflow-scans",
    region: str = DEFAULT_REGION,
) -> LocalAws:
    """Start moto on 127.0.0.1 (a free port) and create the key, the bucket and the table."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    cache_request_dispatch()

    # Placeholders only if the developer has none: moto accepts any, and nothing must reach AWS.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", region)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ["MOTO_PORT"] = str(port)
    local = LocalAws(
        endpoint_url=f"http://{host}:{port}",
        region=region,
        ingest_bucket=ingest_bucket,
        scans_table=scans_table,
        kms_key_id="",
        server=server,
    )
    kms = local.client("kms")
    local.kms_key_id = kms.create_key(Description="dicomflow local data key")["KeyMetadata"]["KeyId"]
    # moto's backends are per process: a second server in the same process (another test module)
    # sees the first one's resources, so existing ones are reused.
    s3 = local.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        s3.create_bucket(Bucket=ingest_bucket)
    s3.put_bucket_encryption(
        Bucket=ingest_bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": local.kms_key_id,
                    },
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    dynamodb = local.client("dynamodb")
    with contextlib.suppress(dynamodb.exceptions.ResourceInUseException):
        create_table(dynamodb, scans_table)
    return local


def main() -> int:  # pragma: no cover - used by the benchmark as a separate process
    local = start_local_aws()
    print(json.dumps(local.settings_env()), flush=True)
    sys.stdin.read()
    local.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
