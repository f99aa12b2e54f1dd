"""Header-only validation of DICOM files and of whole scans, with findings as data.

Two levels, so that a workflow can fan out over files and then look at the scan:

- :func:`validate_file` / :func:`validate_object` read one file's header (ranged reads, never the
  pixel data), run the conformance rules of :mod:`~dicomflow.validation.file_rules`, check size and
  SHA-256 against the manifest (the digest is streamed over the object) and return a
  :class:`ValidationReport` whose ``details["summary"]`` is the file's small, PHI-free
  :class:`FileSummary`;
- :func:`validate_scan` takes the per-file reports (or summaries) and runs the scan rules of
  :mod:`~dicomflow.validation.scan_rules`, plus the manifest's completeness.

Malformed input never raises out of these functions: it is rejected with a reason. The one
exception is a storage failure worth retrying (:class:`~dicomflow.errors.TransientStorageError`),
which the workflow retries rather than rejecting a good file.

Examples
--------
>>> from pydicom.data import get_testdata_file
>>> report = validate_file(get_testdata_file("CT_small.dcm"), name="ct.dcm")
>>> report.verdict.value, report.codes
('accepted', ())
>>> validate_file(get_testdata_file("MR_small.dcm")).codes
('SOP_CLASS_NOT_ALLOWED',)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dicomflow.errors import ObjectNotFoundError, StorageError, TransientStorageError
from dicomflow.manifest import DeviceSettings, ScanManifest
from dicomflow.storage.base import ObjectStore
from dicomflow.validation.file_rules import FilePolicy, HeaderLike, check_header
from dicomflow.validation.findings import Finding, Severity, ValidationReport, Verdict
from dicomflow.validation.scan_rules import FileSummary, check_scan, summarize
from dicomflow.validation.sop_classes import DEFAULT_ALLOWED_SOP_CLASSES

__all__ = [
    "DEFAULT_ALLOWED_SOP_CLASSES",
    "FilePolicy",
    "FileSummary",
    "Finding",
    "Severity",
    "ValidationReport",
    "Verdict",
    "validate_file",
    "validate_header",
    "validate_object",
    "validate_scan",
]

#: Header reader errors (by class name) and the finding code each becomes.
_READ_ERROR_CODES = {
    "NotDicomError": "NOT_DICOM",
    "TruncatedHeaderError": "TRUNCATED",
    "MalformedHeaderError": "HEADER_MALFORMED",
    "UnsupportedTransferSyntaxError": "TRANSFER_SYNTAX_UNSUPPORTED",
}


def validate_header(
    header: HeaderLike, name: str, *, policy: FilePolicy | None = None, salt: str = ""
) -> ValidationReport:
    """Validate a parsed header (pure: no I/O). See :func:`validate_file` for the parameters.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> from dicomflow.dicom.header import read_header_from_path
    >>> header = read_header_from_path(get_testdata_file("CT_small.dcm"))
    >>> validate_header(header, "ct.dcm").details["summary"]["rows"]
    128
    """
    policy = policy or FilePolicy()
    findings = check_header(header, policy)
    summary, geometry = summarize(header.dataset, name, salt=salt)
    if summary.sop_class in policy.image_sop_classes:
        findings += geometry  # geometry matters only for the images that form a volume
    details: dict[str, Any] = {
        "size": header.file_size,
        "transfer_syntax": None if header.transfer_syntax is None else str(header.transfer_syntax),
        "sop_class": summary.sop_class,
        "summary": summary.to_dict(),
    }
    return ValidationReport(name, tuple(findings), details)


def validate_file(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    policy: FilePolicy | None = None,
    salt: str = "",
) -> ValidationReport:
    """Validate one local file from its header, and its size and SHA-256 against the manifest.

    Parameters
    ----------
    path : path-like
        The file (anything else, a directory or a device, is rejected as ``NOT_DICOM``).
    name : str, optional
        The subject of the report (the manifest's relative name); defaults to the file's name.
    expected_size, expected_sha256 : optional
        The manifest's figures. The SHA-256 is computed (streamed) only when one is expected.
    policy : FilePolicy, optional
        Allowed SOP classes and size limit.
    salt : str
        Salt of the identity digests in the summary; use one per scan.

    Returns
    -------
    ValidationReport
        Never raises for malformed input.
    """
    from dicomflow.dicom.header import read_header_from_path

    path = Path(path)
    subject = name if name is not None else path.name

    def digest() -> str:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()

    return _validate(
        subject,
        lambda: read_header_from_path(path),
        lambda: path.stat().st_size,
        digest,
        expected_size=expected_size,
        expected_sha256=expected_sha256,
        policy=policy,
        salt=salt,
    )


def validate_object(
    store: ObjectStore,
    key: str,
    *,
    name: str | None = None,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    policy: FilePolicy | None = None,
    salt: str = "",
) -> ValidationReport:
    """:func:`validate_file` for an object in an :class:`~dicomflow.storage.ObjectStore`: ranged GETs
    for the header, one streamed GET for the SHA-256 when the manifest gives one.

    Raises
    ------
    TransientStorageError
        The store failed in a way worth retrying (the workflow retries; the file is not rejected).
    """
    from dicomflow.dicom.header import read_header_from_store

    def digest() -> str:
        sha = hashlib.sha256()
        for chunk in store.iter_chunks(key):
            sha.update(chunk)
        return sha.hexdigest()

    return _validate(
        name if name is not None else key,
        lambda: read_header_from_store(store, key),
        lambda: store.size(key),
        digest,
        expected_size=expected_size,
        expected_sha256=expected_sha256,
        policy=policy,
        salt=salt,
    )


def _validate(
    subject: str,
    read: Callable[[], HeaderLike],
    size: Callable[[], int],
    digest: Callable[[], str],
    *,
    expected_size: int | None,
    expected_sha256: str | None,
    policy: FilePolicy | None,
    salt: str,
) -> ValidationReport:
    try:
        report = validate_header(read(), subject, policy=policy, salt=salt)
    except TransientStorageError:
        raise
    except ObjectNotFoundError:
        return ValidationReport(subject, (Finding("FILE_MISSING", "the object does not exist in the store"),))
    except StorageError:
        raise  # the store refused us (access denied...): the scan fails, the file is not rejected
    except OSError as exc:
        # strerror only: the exception's str() would quote the path, which may carry patient data.
        return ValidationReport(
            subject,
            (Finding("UNREADABLE", f"the file cannot be read ({exc.strerror or type(exc).__name__})"),),
        )
    except Exception as exc:  # noqa: BLE001 - malformed input is rejected with a reason, never raised
        from dicomflow.dicom.header import DicomFormatError

        code = _READ_ERROR_CODES.get(type(exc).__name__, "HEADER_MALFORMED")
        # Our reader's messages name the problem, never a value; anything else gives only its type.
        if isinstance(exc, DicomFormatError):
            message = str(exc)
        else:
            message = f"the header cannot be parsed ({type(exc).__name__})"
        return ValidationReport(subject, (Finding(code, message),))
    findings: list[Finding] = []
    details = dict(report.details)
    if expected_size is not None and details.get("size") != expected_size:
        findings.append(
            Finding(
                "SIZE_MISMATCH",
                f"the file is {details.get('size')} bytes but the manifest declares {expected_size}; "
                "the upload is incomplete or the file changed",
            )
        )
    if expected_sha256 is not None:
        try:
            actual = digest()
        except TransientStorageError:
            raise
        except OSError as exc:
            findings.append(
                Finding("UNREADABLE", f"the file cannot be read ({exc.strerror or type(exc).__name__})")
            )
        else:
            details["sha256"] = actual
            if actual != expected_sha256.lower():
                findings.append(
                    Finding(
                        "SHA256_MISMATCH",
                        "the file's SHA-256 differs from the manifest's: the bytes changed in transit or "
                        "the manifest is wrong; upload the file again",
                    )
                )
    return ValidationReport(subject, (*report.findings, *findings), details)


def validate_scan(
    files: Sequence[ValidationReport | FileSummary],
    *,
    manifest: ScanManifest | None = None,
    device_settings: DeviceSettings | None = None,
) -> ValidationReport:
    """Validate a scan as a whole from its files' reports (or summaries).

    Parameters
    ----------
    files : sequence of ValidationReport or FileSummary
        One per file: the reports of :func:`validate_file` / :func:`validate_object` (their
        ``details["summary"]`` is used, and a rejected file rejects the scan), or bare summaries.
    manifest : ScanManifest, optional
        Every declared file must have a report and every report a declared file; its
        ``device_settings`` are checked unless ``device_settings`` is given.
    device_settings : DeviceSettings, optional
        Phases, slices per phase, matrix and voxel size the device declared.

    Returns
    -------
    ValidationReport
        Subject ``"scan"``; ``details`` holds counts of files, accepted, rejected and phases.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> one = validate_file(get_testdata_file("CT_small.dcm"), name="ct.dcm")
    >>> scan = validate_scan([one])
    >>> scan.verdict.value, scan.details["phases"], scan.details["slices_per_phase"]
    ('accepted', 1, [1])
    """
    from dicomflow.validation.scan_rules import phases_of

    summaries: list[FileSummary] = []
    rejected = 0
    names: list[str] = []
    for item in files:
        if isinstance(item, FileSummary):
            summaries.append(item)
            names.append(item.name)
            continue
        names.append(item.subject)
        if not item.accepted:
            rejected += 1
        summary = item.details.get("summary")
        if isinstance(summary, FileSummary):
            summaries.append(summary)
        elif isinstance(summary, Mapping):
            summaries.append(FileSummary.from_dict(summary))
    findings: list[Finding] = []
    if rejected:
        findings.append(
            Finding("FILES_REJECTED", f"{rejected} of {len(files)} files were rejected (see their reports)")
        )
    if manifest is not None:
        findings += _check_manifest_names(manifest, names)
        if device_settings is None:
            device_settings = manifest.device_settings
    findings += check_scan(summaries, device_settings=device_settings)
    phases = phases_of(summaries)
    details = {
        "files": len(files),
        "accepted": len(files) - rejected,
        "rejected": rejected,
        "phases": len(phases),
        "slices_per_phase": sorted({len(p.positions) for p in phases}),
    }
    return ValidationReport("scan", tuple(findings), details)


def _check_manifest_names(manifest: ScanManifest, names: Iterable[str]) -> list[Finding]:
    declared = {f.name for f in manifest.files}
    present = set(names)
    findings = []
    missing = len(declared - present)
    if missing:
        findings.append(
            Finding(
                "FILE_MISSING", f"{missing} of {len(declared)} files declared in the manifest are missing"
            )
        )
    undeclared = len(present - declared)
    if undeclared:
        findings.append(Finding("FILE_UNDECLARED", f"{undeclared} files are not declared in the manifest"))
    return findings
