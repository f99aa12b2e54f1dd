"""The error hierarchy.

Class names are a contract: the Step Functions workflow matches ``Retry`` and ``Catch`` on the
exception class name that the Lambda runtime reports (``errorType``), so a rename here is a change to
the state machine too. Expected outcomes (a rejected file, a failed leak check on one file) are data
in a report, not exceptions; these are for what a caller must stop on.

Messages never carry patient data: name the element, the key's hash or the count, never the value.
"""

from __future__ import annotations


class DicomflowError(Exception):
    """Base class of every error raised on purpose by dicomflow."""


class InvalidInputError(DicomflowError, ValueError):
    """Input the caller can correct: the message says what was wrong and what to do."""


class ManifestError(InvalidInputError):
    """A scan manifest is malformed, unsafe or over a limit."""


class InvalidTransitionError(DicomflowError):
    """A scan status change that the lifecycle does not allow (e.g. COMPLETED -> UPLOADING)."""


class ConfigurationError(DicomflowError):
    """A setting is missing or invalid; raised once, at start-up."""


class StorageError(DicomflowError):
    """An object store operation failed for a reason that retrying will not fix."""


class ObjectNotFoundError(StorageError):
    """The object (or byte range) asked for does not exist."""


class TransientStorageError(StorageError):
    """A storage call failed in a way worth retrying (throttling, timeouts, 5xx). Workflow: Retry."""


class DeidentificationError(DicomflowError):
    """A file could not be de-identified safely. Workflow: Catch -> quarantine."""


class LeakDetectedError(DeidentificationError):
    """The leak check found an identifying value of the original in the de-identified output."""


class AnalysisError(DicomflowError):
    """The analysis of a scan failed. Workflow: Catch -> FAILED with the reason."""


class ModelIntegrityError(AnalysisError):
    """The model file's SHA-256 is not the one configured: it is refused before loading."""


class ModelContractError(AnalysisError):
    """The model's inputs or outputs are not the declared contract: refused before running."""


class UploadError(DicomflowError):
    """The device upload failed; the message says whether and how to resume."""


#: Every error class by name: the names the workflow may Retry or Catch on (tested against the ASL).
ERROR_CLASSES: dict[str, type[DicomflowError]] = {
    cls.__name__: cls
    for cls in (
        DicomflowError,
        InvalidInputError,
        ManifestError,
        InvalidTransitionError,
        ConfigurationError,
        StorageError,
        ObjectNotFoundError,
        TransientStorageError,
        DeidentificationError,
        LeakDetectedError,
        AnalysisError,
        ModelIntegrityError,
        ModelContractError,
        UploadError,
    )
}
