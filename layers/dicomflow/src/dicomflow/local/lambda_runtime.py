"""What the Lambda runtime gives a handler and makes of its exceptions, for the local stack's two
ways of running handlers (in its own process, :mod:`dicomflow.local.lambda_dispatch`; in processes
of their own, :mod:`dicomflow.local.lambda_pool`): the context object, loading
``functions.<step>.handler.lambda_handler`` and the runtime's error envelope.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicomflow.errors import DicomflowError

Handler = Callable[[Any, Any], Any]

#: The repository root (functions/ lives there) of an editable install.
REPO_ROOT = Path(__file__).resolve().parents[5]


@dataclass
class InvocationContext:
    """The attributes of a Lambda context that handlers and powertools read."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    deadline: float
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def load_handler(dotted: str) -> Handler:
    """The callable at ``functions.<name>.handler.lambda_handler``: imported as a module when the
    repository root is importable (tests, the repository's cwd), else loaded from its file."""
    module_name, _, attribute = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        path = REPO_ROOT.joinpath(*module_name.split(".")).with_suffix(".py")
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    handler = getattr(module, attribute)
    if not callable(handler):
        raise TypeError(f"{dotted} is not callable")
    return handler


def error_envelope(exc: BaseException) -> dict[str, Any]:
    """What the Python runtime returns for an unhandled exception (its message only if ours).

    Examples
    --------
    >>> from dicomflow.errors import TransientStorageError
    >>> error_envelope(TransientStorageError("S3 SlowDown; retry"))["errorType"]
    'TransientStorageError'
    >>> error_envelope(KeyError("Doe^Jane"))["errorMessage"]
    'unexpected KeyError'
    """
    name = type(exc).__name__
    message = str(exc) if isinstance(exc, DicomflowError) else f"unexpected {name}"
    return {"errorType": name, "errorMessage": message, "requestId": "", "stackTrace": []}
