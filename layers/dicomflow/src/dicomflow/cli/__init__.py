"""The ``dicomflow`` command line.

Each subcommand lives in its own module of this package, exposing ``register(subparsers)`` that adds
its parser and sets ``func(args) -> int`` (the exit status). Modules are imported only to register,
so a subcommand's heavy imports (onnxruntime, boto3) belong inside its ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from dicomflow import __version__
from dicomflow.errors import DicomflowError

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("phantom", "validate", "deid", "analyze", "upload", "local_api")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or of ``only`` that one (what ``main`` runs: importing the
    other subcommands' modules costs a run 20 ms for nothing)."""
    parser = argparse.ArgumentParser(
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
    args = build_parser(only).parse_args(argv)
    try:
        return int(args.func(args))
    except DicomflowError as exc:
        # Our errors carry a message meant for the user (and free of patient data).
        print(f"dicomflow {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dicomflow {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
