"""``ecs:runTask.sync`` in moto, running the analysis container's entry point as a local process.

Two things stand between moto and the ASL's Analyze state (measured on moto 5.2.x):

- moto's interpreter stubs the parameter and response normalisers of its ECS integration, so the
  ASL's ``Cluster`` reaches boto3 as ``Cluster`` (it wants ``cluster``) and the task comes back in
  ECS's camelCase where the ASL reads ``Containers[*].ExitCode``. :func:`install` re-wires them to
  botocore's shapes of ECS, as Step Functions does.
- moto's ``run_task`` records a task and reports it STOPPED with exit code 0. :class:`LocalTasks`
  wraps it: a task of a registered task definition family runs ``python entrypoint.py`` with the
  container's environment (task definition, then the ASL's overrides, then the local AWS settings)
  and stays RUNNING until the process ends; then it is STOPPED with the process's exit code, as
  ECS reports an essential container that exited.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("dicomflow.local.ecs")

_lock = threading.Lock()
_runner: LocalTasks | None = None
_installed = False


@dataclass
class TaskRun:
    """One task's process: what it was given and how it ended."""

    task_arn: str
    environment: dict[str, str]
    exit_code: int | None = None
    last_line: str = ""
    seconds: float = 0.0


@dataclass
class LocalTasks:
    """Runs the tasks of ``families`` (task definition family -> entry point script) locally.

    ``environment``: the variables every task gets (the local AWS endpoint and settings); the
    ASL's container overrides come on top. Output of each run goes to ``log_dir`` if given.
    """

    families: Mapping[str, Path]
    environment: Mapping[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    runs: list[TaskRun] = field(default_factory=list)

    def start(self, task: Any, overrides: Mapping[str, Any] | None) -> bool:
        family = str(task.task_definition_arn).rsplit("/", 1)[-1].split(":")[0]
        script = self.families.get(family)
        if script is None:
            return False
        env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
        env.update(self.environment)
        container = task.containers[0]
        for item in container.environment or []:
            env[str(item["name"])] = str(item["value"])
        for override in (overrides or {}).get("containerOverrides", []) or []:
            if override.get("name") in (None, container.name):
                for item in override.get("environment", []) or []:
                    env[str(item["name"])] = str(item["value"])
        run = TaskRun(str(task.task_arn), env)
        with _lock:
            self.runs.append(run)
        # Held RUNNING (moto's managed state would move it on at the next describe) until the
        # process has ended.
        task._transitions = [("RUNNING", "RUNNING")]
        task.status = "RUNNING"
        container.last_status = "RUNNING"
        threading.Thread(
            target=self._run, args=(task, script, run), name="local-ecs-task", daemon=True
        ).start()
        return True

    def _run(self, task: Any, script: Path, run: TaskRun) -> None:
        started = time.perf_counter()
        task_id = run.task_arn.rsplit("/", 1)[-1]
        out: Any = subprocess.PIPE
        log_file = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_file = (self.log_dir / f"task-{task_id}.log").open("wb")
            out = log_file
        try:
            done = subprocess.run(
                [sys.executable, str(script)],
                env=run.environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(script.parent),
                check=False,
            )
            run.exit_code = done.returncode
            if isinstance(done.stdout, bytes):
                lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
                run.last_line = lines[-1] if lines else ""
        except OSError as exc:
            log.warning("analysis task could not start (%s)", type(exc).__name__)
            run.exit_code = 127
        finally:
            if log_file is not None:
                log_file.close()
        run.seconds = time.perf_counter() - started
        log.info("analysis task %s exited %s after %.1f s", task_id, run.exit_code, run.seconds)
        container = task.containers[0]
        container.exitCode = run.exit_code
        container.exit_code = run.exit_code
        container.last_status = "STOPPED"
        task.stopped_reason = "Essential container in task exited"
        task.stop_code = "EssentialContainerExited"
        task.desired_status = "STOPPED"
        task.status = "STOPPED"


def _botocore_operation(service: str, action: str) -> Any:
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    for name in model.operation_names:
        if xform_name(name) == action:
            return model.operation_model(name)
    raise KeyError(f"{service} has no operation {action}")


def install(runner: LocalTasks | None) -> None:
    """Re-wire moto's ECS normalisers (once per process) and run tasks with ``runner``."""
    global _runner, _installed
    with _lock:
        _runner = runner
        if _installed:
            return
        _installed = True
    from moto.ecs.models import EC2ContainerServiceBackend
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_ecs import (
        StateTaskServiceEcs,
    )

    def normalise_parameters(
        self: Any,
        parameters: dict[str, Any],
        boto_service_name: str | None = None,
        service_action_name: str | None = None,
    ) -> None:
        service = self._get_boto_service_name(boto_service_name)
        action = self._get_boto_service_action(service_action_name)
        self._to_boto_request(parameters, _botocore_operation(service, action).input_shape)

    def normalise_response(
        self: Any,
        response: Any,
        boto_service_name: str | None = None,
        service_action_name: str | None = None,
    ) -> None:
        service = self._get_boto_service_name(boto_service_name)
        action = self._get_boto_service_action(service_action_name)
        self._from_boto_response(response, _botocore_operation(service, action).output_shape)

    StateTaskServiceEcs._normalise_parameters = normalise_parameters  # type: ignore[method-assign]
    StateTaskServiceEcs._normalise_response = normalise_response  # type: ignore[method-assign]

    original_run_task = EC2ContainerServiceBackend.run_task

    def run_task(self: Any, *args: Any, **kwargs: Any) -> Any:
        tasks = original_run_task(self, *args, **kwargs)
        overrides = kwargs.get("overrides", args[3] if len(args) > 3 else None)
        with _lock:
            current = _runner
        if current is not None:
            for task in tasks:
                current.start(task, overrides)
        return tasks

    EC2ContainerServiceBackend.run_task = run_task  # type: ignore[method-assign]
