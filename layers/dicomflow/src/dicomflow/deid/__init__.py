"""De-identification per DICOM PS3.15 Annex E (Table E.1-1, edition in ``data/``), streaming.

Entry points: :func:`deidentify_file` (local) and :func:`deidentify_object` (object store) with a
:class:`Deidentifier` (key + :class:`DeidOptions`); each returns a :class:`FileReport`.
"""

from dicomflow.deid.actions import Deidentifier, DeidOutcome, IdentifyingValues
from dicomflow.deid.keys import KmsHmacKey, LocalKey, PseudonymKey
from dicomflow.deid.leakcheck import LeakReport, check_leaks
from dicomflow.deid.options import DeidOptions
from dicomflow.deid.report import FileReport, RunReport, Verdict
from dicomflow.deid.stream import deidentify_file, deidentify_object

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
