"""De-identification per DICOM PS3.15 Annex E (Table E.1-1, edition in ``data/``), streaming.

Entry points: :func:`deidentify_file` (local) and :func:`deidentify_object` (object store) with a
:class:`Deidentifier` (key + :class:`DeidOptions`); each returns a :class:`FileReport`.

The names below are imported on first use (PEP 562): a worker that de-identifies well-formed
little-endian files never imports pydicom (0.3 s a process), which only the fallback engine needs.
"""

from __future__ import annotations

# Not typing.TYPE_CHECKING: see dicomflow.dicom (mypy and ruff honour a module-level constant).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from dicomflow.deid.actions import DeidOutcome
    from dicomflow.deid.keys import KmsHmacKey, LocalKey, PseudonymKey
    from dicomflow.deid.leakcheck import LeakReport, check_leaks
    from dicomflow.deid.options import DeidOptions
    from dicomflow.deid.policy import Deidentifier, IdentifyingValues
    from dicomflow.deid.report import FileReport, RunReport, Verdict
    from dicomflow.deid.stream import deidentify_file, deidentify_object

_WHERE = {
    "DeidOptions": "options",
    "DeidOutcome": "actions",
    "Deidentifier": "policy",
    "FileReport": "report",
    "IdentifyingValues": "policy",
    "KmsHmacKey": "keys",
    "LeakReport": "leakcheck",
    "LocalKey": "keys",
    "PseudonymKey": "keys",
    "RunReport": "report",
    "Verdict": "report",
    "check_leaks": "leakcheck",
    "deidentify_file": "stream",
    "deidentify_object": "stream",
}
__all__ = [
    "DeidOptions",
    "DeidOutcome",
    "Deidentifier",
    "FileReport",
    "IdentifyingValues",
    "KmsHmacKey",
    "LeakReport",
    "LocalKey",
    "PseudonymKey",
    "RunReport",
    "Verdict",
    "check_leaks",
    "deidentify_file",
    "deidentify_object",
]


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"dicomflow.deid.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
