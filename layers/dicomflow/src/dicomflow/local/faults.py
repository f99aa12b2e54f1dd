"""Fault injection in the local stack: AWS errors at chosen calls of the workflow's handlers.

A :class:`FaultInjector` hooks botocore's events on the clients the handlers use (every client of
the step context's boto3 session, :func:`dicomflow.workflow.context.step_context`) and answers
the calls that a :class:`Fault` selects with the error AWS would send: S3 ``SlowDown`` (503) or
``InternalError`` (500), KMS ``ThrottlingException``, ``KMSInternalException``,
``DisabledException``, DynamoDB ``ProvisionedThroughputExceededException``,
``ThrottlingException``, ``InternalServerError``, and ``AccessDenied`` of each service.

A fault selects calls by service and operation (botocore's names: ``s3``/``GetObject``), by the
Lambda function the call comes from (``dicomflow-validate_batch``; the injector wraps the local
dispatcher to know it, in the handler's own thread: calls from threads a handler starts, such as
the quarantine's tagging, are selected with ``function=None``), by the calls' parameters
(``where``: substrings of ``Key``, ``TableName``...), and by position: the ``nth`` selected call
fails, and the ``times - 1`` after it (``times=None``: every one from the ``nth`` on, a persistent
fault).

Two depths, as a fault can meet the SDK or pass it:

- ``wire=False`` (default), at ``before-call``: the error is what the SDK raises once its own
  retries are spent (botocore's retry loop sits below ``before-call``), so each injected error
  reaches dicomflow's code exactly once, through the modelled exception class.
- ``wire=True``, at ``before-send``: an HTTP response in the service's protocol (S3's XML,
  KMS's and DynamoDB's JSON); botocore parses it and applies its retry policy to it.

The analysis task runs in its own process: :func:`task_environment` gives it the faults as
``DICOMFLOW_FAULTS`` (JSON) and a ``sitecustomize`` that installs them on every client it makes
(:func:`install_from_environment`).

Examples
--------
>>> fault = Fault("s3", "GetObject", "SlowDown", function="dicomflow-validate_batch")
>>> fault.describe()
's3.GetObject SlowDown (503) in dicomflow-validate_batch, call 1 once'
>>> Fault.from_dict(fault.to_dict()) == fault
True
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: The errors a fault can answer with: name -> (service, HTTP status, error code, message).
#: AWS's codes and statuses as documented for each service (S3's REST-XML, the JSON protocols).
ERRORS: dict[str, tuple[str, int, str, str]] = {
    "SlowDown": ("s3", 503, "SlowDown", "Please reduce your request rate."),
    "InternalError": ("s3", 500, "InternalError", "We encountered an internal error. Please try again."),
    "AccessDenied": ("s3", 403, "AccessDenied", "Access Denied"),
    "ThrottlingException": ("kms", 400, "ThrottlingException", "Rate exceeded"),
    "KMSInternalException": ("kms", 500, "KMSInternalException", "An internal error occurred."),
    "DisabledException": ("kms", 400, "DisabledException", "The key is disabled."),
    "KMSAccessDeniedException": ("kms", 400, "AccessDeniedException", "not authorized to perform kms"),
    "ProvisionedThroughputExceededException": (
        "dynamodb",
        400,
        "ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded.",
    ),
    "DynamoDBThrottlingException": (
        "dynamodb",
        400,
        "ThrottlingException",
        "Rate of requests exceeds the allowed throughput.",
    ),
    "InternalServerError": ("dynamodb", 500, "InternalServerError", "Internal server error"),
    "DynamoDBAccessDeniedException": (
        "dynamodb",
        400,
        "AccessDeniedException",
        "not authorized to perform dynamodb",
    ),
}
#: The JSON protocols' ``__type`` prefixes (the part botocore strips before the ``#``).
_JSON_PREFIX = {"kms": "", "dynamodb": "com.amazonaws.dynamodb.v20120810#"}
#: What botocore calls a service in its event names (``before-call.<this>.<Operation>``).
_EVENT_SERVICE = {"s3": "s3", "kms": "kms", "dynamodb": "dynamodb", "events": "eventbridge"}
_CONTEXT_KEY = "dicomflow_faults"
ENVIRONMENT = "DICOMFLOW_FAULTS"
#: Where a process given faults by environment writes what it injected (one line each, at exit).
RECORD = "DICOMFLOW_FAULTS_RECORD"


@dataclass(frozen=True)
class Fault:
    """Which calls fail, and with what (see the module's docstring)."""

    service: str
    operation: str
    error: str
    function: str | None = None
    #: Substrings of the call's parameters (``{"Key": "/files/"}``), kept as sorted pairs.
    where: Mapping[str, str] | tuple[tuple[str, str], ...] = ()
    nth: int = 1
    times: int | None = 1
    wire: bool = False

    def __post_init__(self) -> None:
        pairs = self.where.items() if isinstance(self.where, Mapping) else self.where
        object.__setattr__(self, "where", tuple(sorted((str(k), str(v)) for k, v in pairs)))
        if self.error not in ERRORS:
            raise ValueError(f"unknown error {self.error!r}: one of {', '.join(ERRORS)}")
        if ERRORS[self.error][0] != self.service:
            raise ValueError(f"{self.error} is an error of {ERRORS[self.error][0]}, not of {self.service}")
        if self.nth < 1 or (self.times is not None and self.times < 1):
            raise ValueError("nth and times count from 1")

    @property
    def status(self) -> int:
        return ERRORS[self.error][1]

    @property
    def code(self) -> str:
        return ERRORS[self.error][2]

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple(self.where.items()) if isinstance(self.where, Mapping) else self.where

    def describe(self) -> str:
        where = f" in {self.function}" if self.function else ""
        where += "".join(f" where {k}~{v}" for k, v in self.pairs)
        times = "every call" if self.times is None else ("once" if self.times == 1 else f"{self.times} times")
        return f"{self.service}.{self.operation} {self.code} ({self.status}){where}, call {self.nth} {times}"

    def selects(self, service: str, operation: str, function: str | None, params: Mapping[str, Any]) -> bool:
        if (service, operation) != (self.service, self.operation):
            return False
        if self.function is not None and function != self.function:
            return False
        return all(needle in str(params.get(name, "")) for name, needle in self.pairs)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["where"] = dict(self.pairs)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        return cls(**{**data, "where": dict(data.get("where") or {})})


@dataclass
class Injection:
    """One error the injector answered with (for a test to check that its fault happened)."""

    fault: Fault
    function: str | None
    call: int


class FaultInjector:
    """Answers the calls that its armed faults select with their errors; records each one.

    Register it on a boto3/botocore session (:meth:`attach_session`, before the clients are made:
    a client copies its session's handlers when it is created) or on a client (:meth:`attach`).
    The hooks stay; :meth:`arm` and :meth:`disarm` change what they do.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._seen: dict[int, int] = {}
        self.injected: list[Injection] = []
        #: Every call seen, by (function, service, operation): the points a fault can choose.
        self.calls: dict[tuple[str | None, str, str], int] = {}
        self._local = threading.local()

    # -- what fails ----------------------------------------------------------------------------------

    def arm(self, *faults: Fault) -> None:
        """Replace the armed faults (their counts start again); forget what was injected."""
        with self._lock:
            self._faults = list(faults)
            self._seen = {}
            self.injected = []
            self.calls = {}

    def disarm(self) -> None:
        with self._lock:
            self._faults = []
            self._seen = {}

    @contextmanager
    def armed(self, *faults: Fault) -> Iterator[FaultInjector]:
        self.arm(*faults)
        try:
            yield self
        finally:
            self.disarm()

    # -- where the calls come from -----------------------------------------------------------------

    @property
    def function(self) -> str | None:
        """The Lambda function this thread runs (set by :meth:`watch_dispatcher`)."""
        return getattr(self._local, "function", None)

    def watch_dispatcher(self, dispatcher: Any) -> None:
        """Wrap a :class:`~dicomflow.local.lambda_dispatch.LambdaDispatcher` so that the calls
        its handlers make are known by the function's name (threads a handler starts are not)."""
        invoke = dispatcher.invoke

        def watched(function: Any, body: Any, response_headers: dict[str, Any]) -> bytes:
            self._local.function = str(function.function_name)
            try:
                return bytes(invoke(function, body, response_headers))
            finally:
                self._local.function = None

        dispatcher.invoke = watched

    # -- botocore ------------------------------------------------------------------------------------

    def attach(self, events: Any) -> None:
        """Register on a botocore event emitter (``session.events``, ``client.meta.events``)."""
        events.register("before-parameter-build", self._select)
        events.register("before-call", self._answer_call)
        events.register("before-send", self._answer_send)

    def attach_session(self, session: Any) -> None:
        """Register on a boto3 session (or a botocore one): every client it makes afterwards."""
        self.attach(session.events if hasattr(session, "events") else session.get_component("event_emitter"))

    def _select(self, params: Mapping[str, Any], context: dict[str, Any], event_name: str, **_: Any) -> None:
        _stage, service, operation = [*event_name.split("."), "", ""][:3]
        service = {v: k for k, v in _EVENT_SERVICE.items()}.get(service, service)
        function = self.function
        with self._lock:
            point = (function, service, operation)
            self.calls[point] = self.calls.get(point, 0) + 1
            faults = [f for f in self._faults if f.selects(service, operation, function, params)]
        if faults:
            context[_CONTEXT_KEY] = (faults, function)

    def _fire(self, context: Mapping[str, Any] | None, wire: bool) -> Fault | None:
        selected = (context or {}).get(_CONTEXT_KEY)
        if not selected:
            return None
        faults, function = selected
        with self._lock:
            for fault in faults:
                if fault.wire is not wire or fault not in self._faults:
                    continue
                call = self._seen[id(fault)] = self._seen.get(id(fault), 0) + 1
                last = None if fault.times is None else fault.nth + fault.times - 1
                if call >= fault.nth and (last is None or call <= last):
                    self.injected.append(Injection(fault, function, call))
                    return fault
        return None

    def _answer_call(self, context: Mapping[str, Any], **_: Any) -> tuple[Any, dict[str, Any]] | None:
        fault = self._fire(context, wire=False)
        if fault is None:
            return None
        return _StatusOnly(fault.status), parsed_error(fault)

    def _answer_send(self, request: Any, **_: Any) -> Any:
        fault = self._fire(getattr(request, "context", None), wire=True)
        if fault is None:
            return None
        from botocore.awsrequest import AWSResponse

        body, headers = wire_error(fault)
        return AWSResponse(request.url, fault.status, headers, _Raw(body))

    def summary(self) -> list[str]:
        """What was injected, one line each (the test's diagnostics)."""
        return [f"{i.fault.describe()} -> call {i.call} in {i.function}" for i in self.injected]


def parsed_error(fault: Fault) -> dict[str, Any]:
    """The response botocore's parser makes of the error (what ``ClientError.response`` holds)."""
    _, status, code, message = ERRORS[fault.error]
    headers = {"x-amz-request-id": "dicomflow-fault"}
    return {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers, "RetryAttempts": 0},
    }


def wire_error(fault: Fault) -> tuple[bytes, dict[str, str]]:
    """The error's HTTP body and headers in the service's protocol."""
    service, _, code, message = ERRORS[fault.error]
    if service == "s3":
        body = (
            "<?xml version='1.0' encoding='UTF-8'?>"
            f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>dicomflow-fault</RequestId></Error>"
        )
        return body.encode(), {"Content-Type": "application/xml", "x-amz-request-id": "dicomflow-fault"}
    body = json.dumps({"__type": _JSON_PREFIX.get(service, "") + code, "message": message})
    return body.encode(), {
        "Content-Type": "application/x-amz-json-1.1",
        "x-amzn-RequestId": "dicomflow-fault",
    }


class _StatusOnly:
    """The HTTP response botocore sees for a ``before-call`` answer: only its status is read."""

    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}
        self.content = b""


class _Raw:
    """A urllib3-like raw body for :class:`botocore.awsrequest.AWSResponse`."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


# -- the local stack -----------------------------------------------------------------------------------


def install(dispatcher: Any | None = None) -> FaultInjector:
    """A :class:`FaultInjector` on the handlers' clients: the step context is made afresh (its
    cached clients and MACs dropped) and its session hooked, so every client a handler makes
    from now on goes through the injector. ``dispatcher``: the stack's, to know the function."""
    from dicomflow.workflow.context import reset_context, step_context

    injector = FaultInjector()
    reset_context()
    injector.attach_session(step_context().session)
    if dispatcher is not None:
        injector.watch_dispatcher(dispatcher)
    return injector


def renew(injector: FaultInjector) -> None:
    """Make the step context afresh and hook it again (a case's MACs and clients start cold)."""
    from dicomflow.workflow.context import reset_context, step_context

    reset_context()
    injector.attach_session(step_context().session)


_SITECUSTOMIZE = """\
# Written by dicomflow.local.faults: installs DICOMFLOW_FAULTS in this process (tests only).
from dicomflow.local.faults import install_from_environment

install_from_environment()
"""


def task_environment(faults: list[Fault], folder: Path) -> dict[str, str]:
    """The variables that inject ``faults`` into a process started with them (the analysis task):
    ``DICOMFLOW_FAULTS``, a ``PYTHONPATH`` with a ``sitecustomize`` written to ``folder``, and
    ``DICOMFLOW_FAULTS_RECORD``: ``folder/injected.txt``, where the process writes what it injected."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return {
        ENVIRONMENT: json.dumps([f.to_dict() for f in faults]),
        RECORD: str(folder / "injected.txt"),
        "PYTHONPATH": path,
    }


def install_from_environment() -> FaultInjector | None:
    """Arm the faults of ``DICOMFLOW_FAULTS`` on every botocore session this process makes."""
    raw = os.environ.get(ENVIRONMENT)
    if not raw:
        return None
    import botocore.session

    injector = FaultInjector()
    injector.arm(*(Fault.from_dict(f) for f in json.loads(raw)))
    record = os.environ.get(RECORD)
    if record:
        import atexit

        def write() -> None:
            with open(record, "a", encoding="utf-8") as fh:
                fh.writelines(line + "\n" for line in injector.summary())

        atexit.register(write)
    original = botocore.session.Session.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        injector.attach_session(self)

    botocore.session.Session.__init__ = init
    return injector


@contextmanager
def scaled_retry_waits(factor: float) -> Iterator[None]:
    """Step Functions' Retry waits in moto's interpreter times ``factor`` (a test's matrix runs
    the ASL's policy, attempts and backoff as written, in a fraction of the wall time)."""
    import time as real_time

    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    class Scaled:
        def __getattr__(self, name: str) -> Any:
            return getattr(real_time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            real_time.sleep(seconds * factor)

    saved = retrier_decl.time
    retrier_decl.time = Scaled()  # type: ignore[assignment]
    try:
        yield
    finally:
        retrier_decl.time = saved
