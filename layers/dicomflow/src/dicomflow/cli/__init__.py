"""The ``dicomflow`` command line.

Each subcommand lives in its own module of this package, exposing ``register(subparsers)`` that adds
its parser and sets ``func(args) -> int`` (the exit status). Modules are imported only to register,
so a subcommand's heavy imports (onnxruntime, boto3) belong inside its ``func``.

No traceback reaches the user: a bad flag, a dicomflow error or a failed file operation is one line
on stderr (what was wrong, which flag or file, what to do) and a non-zero exit; anything else (a
bug) is one line with the exception's type and where it was raised, and the traceback only with
``DICOMFLOW_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from dicomflow import __version__
from dicomflow.errors import DicomflowError

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "phantom",
    "validate",
    "deid",
    "analyze",
    "upload",
    "local_api",
    "local",
    "status",
)


#: Set to 1 to see the traceback of an unexpected error instead of its one-line summary.
DEBUG_ENV = "DICOMFLOW_DEBUG"


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (argparse prints the whole usage first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or of ``only`` that one (what ``main`` runs: importing the
    other subcommands' modules costs a run 20 ms for nothing)."""
    parser = _Parser(
        prog="dicomflow",
        description="DICOM scans from device to analysed result: phantom scans, validation, "
        "de-identification (DICOM PS3.15), upload and lung analysis.",
    )
    parser.add_argument("--version", action="version", version=f"dicomflow {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS if only is None else (only,):
        importlib.import_module(f"dicomflow.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = argv[0].replace("-", "_") if argv else None
    only = first if first in COMMANDS else None
    try:
        args = build_parser(only).parse_args(argv)
    except SystemExit as exc:  # --help, --version, a usage error: already printed
        return exc.code if isinstance(exc.code, int) else 2
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return int(args.func(args))
    except DicomflowError as exc:
        # Our errors carry a message meant for the user (and free of patient data).
        print(f"dicomflow {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dicomflow {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if debug:
            raise
        print(f"dicomflow {args.command}: {_os_error(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if debug:
            raise
        # A bug: its type and where, not its message (which might quote a value read from a file).
        print(
            f"dicomflow {args.command}: internal error {type(exc).__name__} at {_where(exc)}; "
            f"run again with {DEBUG_ENV}=1 for the traceback, and report it",
            file=sys.stderr,
        )
        return 3


def _os_error(exc: OSError) -> str:
    """'could not <operation> <file>: <reason>' from an OSError that no command expected."""
    operation = {
        PermissionError: "access",
        IsADirectoryError: "use (it is a folder)",
        NotADirectoryError: "use (a part of its path is a file)",
        FileNotFoundError: "find",
        FileExistsError: "create (it exists)",
    }.get(type(exc), "use")
    reason = exc.strerror or type(exc).__name__
    if exc.filename is None:
        return f"a file operation failed: {reason}"
    return f"could not {operation} {os.fsdecode(exc.filename)}: {reason}"


def _where(exc: BaseException) -> str:
    import traceback  # 3-4 ms: only when there is a bug to report

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "an unknown place"
    last = frames[-1]
    return f"{os.path.basename(last.filename)}:{last.lineno} ({last.name})"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
