"""The whole local stack: an uploaded scan goes to COMPLETED on one machine, no account, no Docker.

:func:`start_workflow_stack` starts the embedded moto server, provisions the topology into it
(:mod:`dicomflow.local.provision`), makes moto execute the real ASL with our handlers in-process
(:mod:`dicomflow.local.lambda_dispatch`) and the analysis task as a local process
(:mod:`dicomflow.local.ecs_runner`), and serves the upload API on localhost with a
:class:`~dicomflow.upload.processing.StepFunctionsProcessor`: completing an upload starts the scan's
execution (named after the scan id), exactly as the deployed API does.

Examples
--------
>>> stack = start_workflow_stack(token="t")  # doctest: +SKIP
>>> stack.api_url, stack.local.endpoint_url  # doctest: +SKIP
('http://127.0.0.1:...', 'http://127.0.0.1:...')
>>> stack.wait("scan-id")["status"]  # doctest: +SKIP
'SUCCEEDED'
>>> stack.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomflow import topology
from dicomflow.local import ecs_runner, lambda_dispatch, sfn_emulation
from dicomflow.local.lambda_dispatch import LambdaDispatcher
from dicomflow.local.lambda_runtime import REPO_ROOT, Handler
from dicomflow.local.moto_server import LocalAws, start_local_aws
from dicomflow.local.provision import Topology, provision
from dicomflow.local.stack import UploadStack, start_upload_stack
from dicomflow.upload.processing import StepFunctionsProcessor

#: Powertools in-process: no X-Ray daemon here, metrics and logs to stdout as in Lambda.
POWERTOOLS_ENV = {
    "POWERTOOLS_TRACE_DISABLED": "1",
    "POWERTOOLS_METRICS_NAMESPACE": "dicomflow",
}


@dataclass
class WorkflowStack:
    """A running local stack; :meth:`stop` ends it and restores the process's environment."""

    local: LocalAws
    topology: Topology
    upload: UploadStack
    dispatcher: LambdaDispatcher
    tasks: ecs_runner.LocalTasks
    _saved_env: dict[str, str | None] = field(default_factory=dict, repr=False)

    @property
    def api_url(self) -> str:
        return self.upload.api_url

    @property
    def token(self) -> str | None:
        return self.upload.gateway.token

    def client(self, service: str) -> Any:
        return self.local.client(service)

    def execution_arn(self, scan_id: str) -> str:
        arn = self.topology.state_machine_arn
        return f"{arn.replace(':stateMachine:', ':execution:', 1)}:{scan_id}"

    def executions(self) -> list[dict[str, Any]]:
        sfn = self.client("stepfunctions")
        return list(sfn.list_executions(stateMachineArn=self.topology.state_machine_arn)["executions"])

    def wait(self, scan_id: str, timeout_s: float = 120.0, poll_s: float = 0.1) -> dict[str, Any]:
        """The scan's execution once it ended (``describe_execution``); TimeoutError if it did not."""
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                described = sfn.describe_execution(executionArn=self.execution_arn(scan_id))
            except sfn.exceptions.ExecutionDoesNotExist:
                described = {"status": "NOT_STARTED"}
            if described["status"] not in ("RUNNING", "NOT_STARTED"):
                return dict(described)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the execution of scan {scan_id} is still {described['status']}")
            time.sleep(poll_s)

    def history(self, scan_id: str) -> list[dict[str, Any]]:
        """The execution's events (``get_execution_history``), oldest first."""
        sfn = self.client("stepfunctions")
        events: list[dict[str, Any]] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"executionArn": self.execution_arn(scan_id), "maxResults": 1000}
            if token:
                kwargs["nextToken"] = token
            page = sfn.get_execution_history(**kwargs)
            events += page["events"]
            token = page.get("nextToken")
            if not token:
                return events

    def stop(self) -> None:
        self.upload.stop()  # the gateway, the proxy and moto
        lambda_dispatch.uninstall(self.dispatcher)
        self.dispatcher.close()
        ecs_runner.install(None)
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _reset_settings()

    def __enter__(self) -> WorkflowStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _reset_settings() -> None:
    from dicomflow.settings import get_settings
    from dicomflow.workflow.context import reset_context

    get_settings.cache_clear()
    reset_context()


def start_workflow_stack(
    *,
    token: str | None = None,
    port: int = 0,
    with_proxy: bool = True,
    data_dir: Path | None = None,
    handlers: dict[str, Handler] | None = None,
    lambda_workers: int | None = None,
    **settings: Any,
) -> WorkflowStack:
    """Start moto, provision the topology, and serve the upload API on ``port`` (0: a free one).

    ``handlers`` replaces functions' handlers by function name (``dicomflow-validate_batch``...;
    tests); ``lambda_workers`` > 0 runs the handlers in that many processes, each one Lambda
    execution environment (:mod:`dicomflow.local.lambda_pool`; default
    ``DICOMFLOW_LOCAL_LAMBDA_WORKERS``, else 0: in this process, where tests can reach their
    clients); ``data_dir`` receives the analysis tasks' output; ``settings`` override upload
    :class:`~dicomflow.settings.Settings` fields (``part_size``...).
    """
    names = topology.LOCAL_NAMES
    local = start_local_aws(ingest_bucket=names["bucket:ingest"], scans_table=names["table:scans"])
    dispatcher: LambdaDispatcher | None = None
    try:
        created = provision(local)
        saved: dict[str, str | None] = {}
        handler_env = {**POWERTOOLS_ENV, **created.settings}
        for name, value in handler_env.items():
            saved[name] = os.environ.get(name)
            os.environ[name] = value
        _reset_settings()
        if lambda_workers is None:
            lambda_workers = int(os.environ.get("DICOMFLOW_LOCAL_LAMBDA_WORKERS") or 0)
        environments = None
        if lambda_workers > 0:
            from dicomflow.local.lambda_pool import ProcessEnvironments

            environments = ProcessEnvironments(lambda_workers, dict(os.environ))
            environments.warm()
        dispatcher = LambdaDispatcher(handlers, environments)
        lambda_dispatch.install(dispatcher)
        sfn_emulation.install()
        task_env = dict(created.settings)
        for credential in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            task_env[credential] = os.environ.get(credential, "testing")
        tasks = ecs_runner.LocalTasks(
            families={names["ecs:task_family"]: REPO_ROOT / topology.ANALYSIS_ENTRYPOINT},
            environment=task_env,
            log_dir=data_dir / "tasks" if data_dir is not None else None,
        )
        ecs_runner.install(tasks)
        processor = StepFunctionsProcessor(
            local.client("stepfunctions"), created.state_machine_arn, local.ingest_bucket
        )
        if with_proxy:
            # The proxy refuses a body that does not hash to its signed SHA-256, as S3 does, so the
            # upload API need not read small files back (dicomflow.upload.service, "storage").
            settings.setdefault("upload_verify", "storage")
        upload = start_upload_stack(
            local=local, with_proxy=with_proxy, token=token, port=port, processor=processor, **settings
        )
    except BaseException:
        if dispatcher is not None:
            dispatcher.close()
        local.stop()
        raise
    return WorkflowStack(
        local=local,
        topology=created,
        upload=upload,
        dispatcher=dispatcher,
        tasks=tasks,
        _saved_env=saved,
    )
