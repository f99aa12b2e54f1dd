"""One input through every engine, and what went wrong: a list of problems (empty: handled).

Handled means a clean outcome with a reason:

- the header reader (:func:`dicomflow.dicom.header.read_header_from_path`) returns a header or
  raises a :class:`~dicomflow.dicom.errors.DicomFormatError`;
- the validator (:func:`dicomflow.validation.validate_file`) returns a report, and a rejected one
  says why; it never accepts what the header reader refused;
- the de-identifier (:func:`dicomflow.deid.stream.deidentify_file`), once as it runs (the byte-level
  engine first) and once with the pydicom engine alone, returns a report whose verdict is PASSED
  or HELD with the file written and readable, or REJECTED / FAILED with a reason and nothing written;
  the byte-level engine, for its part, refuses what it does not take with ``Unsupported`` (the
  fallback to pydicom must not hide its bugs).

Anything raised out of them is a problem; so is a reason that names a MemoryError or a
RecursionError (an engine's bounds, not the machine's, must stop a hostile file), or the
de-identifier's catch-all "unexpected ... while de-identifying".
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from dicomflow.deid import stream
from dicomflow.deid.keys import LocalKey
from dicomflow.deid.policy import Deidentifier
from dicomflow.deid.report import FileReport, Verdict
from dicomflow.dicom.elements import Unsupported
from dicomflow.dicom.errors import DicomFormatError
from dicomflow.dicom.header import read_header_from_path
from dicomflow.errors import DeidentificationError, StorageError
from dicomflow.validation import validate_file

#: The pseudonym key of every campaign (fixed: outputs are reproducible).
KEY = b"dicomflow-fuzz-key-0123456789abc"
#: Words in a reason that mean a machine limit, not the engine, stopped the input.
UNBOUNDED = ("MemoryError", "RecursionError")
#: What the byte-level engine may raise: it does not take the file, or the file is not DICOM.
RAW_REFUSALS = (Unsupported, DicomFormatError, DeidentificationError, StorageError)


def check_file(path: Path, work: Path, seconds: dict[str, float] | None = None) -> list[str]:
    """Feed the file at ``path`` to every engine (``work``: a folder for outputs); ``seconds``
    receives each engine's time (``header``, ``validate``, ``deid(raw)``, ``deid(pydicom)``)."""
    problems: list[str] = []
    times = seconds if seconds is not None else {}
    data = path.read_bytes()
    began = time.perf_counter()
    header_refused = _check_header(path, problems)
    times["header"] = time.perf_counter() - began
    began = time.perf_counter()
    _check_validator(path, data, header_refused, problems)
    times["validate"] = time.perf_counter() - began
    for engine in ("raw", "pydicom"):
        began = time.perf_counter()
        _check_deid(path, work / engine, engine, problems)
        times[f"deid({engine})"] = time.perf_counter() - began
    return problems


def _unbounded(text: str) -> bool:
    return any(word in text for word in UNBOUNDED)


def _check_header(path: Path, problems: list[str]) -> bool:
    try:
        read_header_from_path(path)
    except DicomFormatError as exc:
        if _unbounded(str(exc)):
            problems.append(f"header: refused by a machine limit: {exc}")
        return True
    except Exception as exc:  # noqa: BLE001 - the finding itself
        problems.append(f"header: raised {type(exc).__name__}")
        return True
    return False


def _check_validator(path: Path, data: bytes, header_refused: bool, problems: list[str]) -> None:
    try:
        report = validate_file(
            path, name="input.dcm", expected_size=len(data), expected_sha256=hashlib.sha256(data).hexdigest()
        )
    except Exception as exc:  # noqa: BLE001 - the finding itself
        problems.append(f"validate: raised {type(exc).__name__}")
        return
    if report.accepted:
        if header_refused:
            problems.append("validate: accepted a file the header reader refuses")
        return
    for finding in report.findings:
        if not finding.code or not finding.message:
            problems.append("validate: a finding without a code or a reason")
        elif _unbounded(finding.message):
            problems.append(f"validate: refused by a machine limit: {finding.message}")
    if not report.findings:
        problems.append("validate: rejected without a finding")


def _check_deid(path: Path, work: Path, engine: str, problems: list[str]) -> None:
    label = f"deid({engine})"
    out, held = work / "out" / "x.dcm", work / "held" / "x.dcm"
    raw_errors: list[str] = []
    shutil.rmtree(work, ignore_errors=True)  # what an earlier input left
    try:
        with _engine(engine, raw_errors):
            report = stream.deidentify_file(path, out, Deidentifier(LocalKey(KEY)), held_dst=held)
    except Exception as exc:  # noqa: BLE001 - the finding itself
        problems.append(f"{label}: raised {type(exc).__name__}")
        return
    finally:
        leftovers = sorted(p.name for p in work.rglob("*.partial")) if work.exists() else []
    problems.extend(f"{label}: the byte-level engine raised {name} (not Unsupported)" for name in raw_errors)
    if leftovers:
        problems.append(f"{label}: a partial output was left behind")
    problems.extend(f"{label}: {p}" for p in _judge_report(report, out, held, engine))


def _judge_report(report: FileReport, out: Path, held: Path, engine: str) -> Iterator[str]:
    verdict = report.verdict
    if verdict in (Verdict.REJECTED, Verdict.FAILED):
        if not report.reasons:
            yield f"{verdict.value} without a reason"
        for reason in report.reasons:
            if reason.startswith("unexpected"):
                yield f"{verdict.value}: {reason}"
            elif _unbounded(reason):
                yield f"{verdict.value} by a machine limit: {reason}"
        if out.exists() or held.exists():
            yield f"{verdict.value} but an output was written"
        return
    written = out if verdict is Verdict.PASSED else held
    if not written.exists():
        yield f"{verdict.value} but no output was written"
        return
    if engine == "pydicom" and report.engine != "pydicom":
        yield f"the {report.engine} engine ran where only pydicom's was asked for"
    try:
        read_header_from_path(written)
    except Exception as exc:  # noqa: BLE001 - the finding itself
        yield f"{verdict.value}, but the output cannot be read back ({type(exc).__name__}: {exc})"


@contextmanager
def _engine(engine: str, raw_errors: list[str]) -> Iterator[None]:
    """``raw``: the de-identifier as it runs, the byte-level engine's unforeseen exceptions noted;
    ``pydicom``: the byte-level engine refuses every file, so pydicom's engine takes them all."""
    real = stream.prepare_raw

    def noted(*args: Any, **kwargs: Any) -> Any:
        try:
            return real(*args, **kwargs)
        except RAW_REFUSALS:
            raise
        except Exception as exc:
            raw_errors.append(type(exc).__name__)
            raise

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise Unsupported("fuzz: the pydicom engine alone")

    replacement: Callable[..., Any] = noted if engine == "raw" else refuse
    with mock.patch.object(stream, "prepare_raw", replacement):
        yield
