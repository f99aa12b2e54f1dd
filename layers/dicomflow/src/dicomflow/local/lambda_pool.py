"""Lambda execution environments as processes: the handlers off the local stack's own process.

In the local stack one process serves moto (every S3 request of every handler and of the analysis
task) and executes the state machine. With the handlers in that process too, the whole workflow
shares one interpreter lock: profiled on the default 4D-CT, the stack's process ran at one core
while the second sat idle. :class:`ProcessEnvironments` runs invocations in ``workers`` processes
instead, each one environment as in Lambda: one invocation at a time, its own module state
(powertools Logger keys, Metrics, the step context and its clients), its own cold start. The
handlers are the same code; they reach moto over HTTP, as the analysis task does.

Opt-in (:func:`dicomflow.local.workflow_stack.start_workflow_stack`'s ``lambda_workers``, or
``DICOMFLOW_LOCAL_LAMBDA_WORKERS``): tests that inject faults through the handlers' in-process
clients keep the default, the handlers in the stack's process.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from dicomflow import topology
from dicomflow.local.lambda_runtime import InvocationContext, error_envelope, load_handler

#: The handlers each environment has loaded (by dotted path), in that environment's process.
_loaded: dict[str, Any] = {}


def _start(environment: Mapping[str, str]) -> None:
    os.environ.update(environment)


def _warm() -> int:
    """Import every workflow handler (the environment's cold start, paid before the first scan)."""
    for name in topology.WORKFLOW_FUNCTIONS:
        _handler(topology.FUNCTIONS[name].handler)
    return os.getpid()


def _handler(dotted: str) -> Any:
    if dotted not in _loaded:
        _loaded[dotted] = load_handler(dotted)
    return _loaded[dotted]


def _invoke(dotted: str, event: Any, context: Mapping[str, Any], timeout_s: float) -> tuple[bool, Any]:
    """Run one invocation: ``(True, result)`` or ``(False, the runtime's error envelope)``."""
    lambda_context = InvocationContext(**context, deadline=time.monotonic() + timeout_s)
    try:
        return True, _handler(dotted)(event, lambda_context)
    except Exception as exc:  # noqa: BLE001 - the runtime turns every exception into the envelope
        return False, error_envelope(exc)
    finally:
        sys.stdout.flush()  # the handlers' JSON log lines, in order with the stack's


class ProcessEnvironments:
    """``workers`` Lambda execution environments (spawned processes) with ``environment``."""

    def __init__(self, workers: int, environment: Mapping[str, str]) -> None:
        # spawn, not fork: the stack's process runs moto's server threads, whose locks a fork
        # would copy in whatever state they were.
        self.workers = max(1, workers)
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(dict(environment),),
        )

    def warm(self) -> None:
        """Start every environment and load the handlers in it (before the first scan)."""
        for future in [self._pool.submit(_warm) for _ in range(self.workers)]:
            future.result()

    def invoke(
        self, dotted: str, event: Any, context: Mapping[str, Any], timeout_s: float
    ) -> tuple[bool, Any]:
        return self._pool.submit(_invoke, dotted, event, dict(context), timeout_s).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
