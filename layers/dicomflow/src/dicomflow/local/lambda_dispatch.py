"""Lambda invocations in moto run our handlers in-process, answering as the Lambda runtime does.

moto's Docker-free Lambda (``LambdaSimpleBackend``) echoes the payload. :func:`install` replaces its
``invoke`` with a dispatch to the function's handler (the ``Handler`` it was created with,
``functions.<step>.handler.lambda_handler``, imported once), so the state machine that moto executes
calls the real code. An exception leaving a handler comes back as the runtime's error envelope:
``x-amz-function-error: Unhandled`` and ``{"errorType": <class name>, "errorMessage", ...}``, so the
ASL's ``Retry``/``Catch`` match on the class name exactly as in AWS.

What differs from AWS, on purpose: the message of an exception that is not a dicomflow error is
replaced by its class name (it may quote a value read from a file; dicomflow's own messages are
written free of patient data), and every handler shares this process's environment (one set of
``DICOMFLOW_*`` settings for all, where AWS gives each function only its own).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from dicomflow.local.lambda_runtime import Handler, InvocationContext, error_envelope, load_handler

if TYPE_CHECKING:
    from dicomflow.local.lambda_pool import ProcessEnvironments

log = logging.getLogger("dicomflow.local.lambda")


class LambdaDispatcher:
    """Maps a moto function (by its ``Handler``) to our handler and runs it.

    ``handlers`` overrides the handler of a function by name (tests use tiny ones). Every call is
    counted by function name in ``invocations`` (a test can see what was retried).
    """

    def __init__(
        self, handlers: dict[str, Handler] | None = None, environments: ProcessEnvironments | None = None
    ) -> None:
        self.overrides = dict(handlers or {})
        #: If given, every function but the overridden ones runs in these processes (one
        #: invocation per environment at a time, as in Lambda) instead of this one.
        self.environments = environments
        self._loaded: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self.invocations: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        # One execution environment per function, which (as in Lambda) runs one invocation at a
        # time: a handler's module state (its powertools Logger's keys, the correlation id, its
        # Metrics) is the environment's, and two scans' invocations at once mixed them up.
        self._environments: dict[str, threading.Lock] = {}

    def handler_for(self, function: Any) -> Handler:
        name = str(function.function_name)
        if name in self.overrides:
            return self.overrides[name]
        dotted = str(function.handler)
        with self._lock:
            if dotted not in self._loaded:
                self._loaded[dotted] = load_handler(dotted)
            return self._loaded[dotted]

    def invoke(self, function: Any, body: Any, response_headers: dict[str, Any]) -> bytes:
        name = str(function.function_name)
        with self._lock:
            self.invocations[name] = self.invocations.get(name, 0) + 1
            environment = self._environments.setdefault(name, threading.Lock())
        raw = body.decode("utf-8") if isinstance(body, bytes) else (body or "")
        event = json.loads(raw) if raw else {}
        timeout = float(getattr(function, "timeout", 0) or 60)
        context = InvocationContext(
            function_name=name,
            memory_limit_in_mb=int(getattr(function, "memory_size", 0) or 512),
            invoked_function_arn=str(function.function_arn),
            aws_request_id=str(uuid.uuid4()),
            deadline=time.monotonic() + timeout,
            log_group_name=f"/aws/lambda/{name}",
        )
        if self.environments is not None and name not in self.overrides:
            fields = {k: v for k, v in vars(context).items() if k != "deadline"}
            try:
                ok, result = self.environments.invoke(str(function.handler), event, fields, timeout)
            except Exception as exc:  # noqa: BLE001 - the environment itself broke (a worker died)
                ok, result = False, error_envelope(exc)
            if not ok:
                return self._failed(name, result, response_headers)
            return json.dumps(result).encode("utf-8")
        try:
            with environment:
                result = self.handler_for(function)(event, context)
        except Exception as exc:  # the runtime turns every exception into the envelope
            log.debug("function %s failed", name, exc_info=True)
            return self._failed(name, error_envelope(exc), response_headers)
        return json.dumps(result).encode("utf-8")

    def _failed(self, name: str, envelope: dict[str, Any], response_headers: dict[str, Any]) -> bytes:
        with self._lock:
            self.errors[name] = self.errors.get(name, 0) + 1
        log.info("function %s raised %s", name, envelope.get("errorType"))
        response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps(envelope).encode("utf-8")

    def close(self) -> None:
        """Stop the execution environments' processes, if any."""
        if self.environments is not None:
            self.environments.close()


_installed: LambdaDispatcher | None = None


def install(dispatcher: LambdaDispatcher) -> None:
    """Route every moto Lambda invocation of this process to ``dispatcher`` (the last one wins)."""
    global _installed
    from moto.awslambda_simple.models import LambdaSimpleBackend

    _installed = dispatcher

    def invoke(
        self: Any,
        function_name: str,
        qualifier: str | None,
        body: Any,
        headers: Any,
        response_headers: Any,
    ) -> bytes:
        if _installed is None:  # pragma: no cover - uninstalled: moto's echo
            return str.encode(body or "Simple Lambda happy path OK")
        function = self.get_function(function_name, qualifier)
        return _installed.invoke(function, body, response_headers)

    LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign]


def uninstall(dispatcher: LambdaDispatcher) -> None:
    """Stop dispatching to ``dispatcher`` (if it is the installed one)."""
    global _installed
    if _installed is dispatcher:
        _installed = None
