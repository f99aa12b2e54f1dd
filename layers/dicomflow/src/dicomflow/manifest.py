"""The scan manifest: what a device declares it will upload, validated on construction.

The manifest is the unit of work: one scan, N files, each with its relative name, size and
SHA-256. It travels as JSON (the device's ``POST /scans`` body, ``manifest.json`` next to the data)
and is validated with messages that say what is wrong and what to do. Messages point at a file by
its index, never by echoing its name: a file name written by a device can carry patient data.

The manifest the upload API stores next to the data at completion (``scans/{id}/manifest.json``,
KMS-encrypted) gives each file one more field, ``key``: the object key the file was uploaded to
(``scans/{id}/files/{index:05d}-{sha256[:16]}.dcm``: keys carry no names). It is the only map from
a name to its object; readers take the key from there and never build it from the name.
:meth:`ScanManifest.from_dict` ignores it.

Standard library only: the device uploader builds manifests on machines without numpy or pydicom.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from dicomflow.errors import ManifestError

MANIFEST_VERSION = 1
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Characters that Windows or S3 tooling treat specially; a device's name must not rely on them.
_FORBIDDEN_NAME_CHARS = set('\\:*?"<>|') | {chr(c) for c in range(0x20)} | {"\x7f"}
GiB = 1024**3

#: Files at the top of a scan folder that are not part of the scan: its manifest and a phantom's
#: ground truth. Hidden files (the upload journal, a Mac's ``.DS_Store``) are never part of it.
SIDECARS = frozenset({"manifest.json", "ground_truth.json"})


def is_scan_file(relative: str | Path) -> bool:
    """Whether a file at ``relative`` (a path inside a scan folder) is one of the scan's files when
    the folder has no manifest to list them: not hidden, nor in a hidden folder, nor a sidecar.
    The upload, ``validate`` and ``deid`` all walk a folder by this rule.

    >>> [is_scan_file(n) for n in ("phase_00/slice_0001.dcm", "ground_truth.json", ".DS_Store",
    ...                            "a/.dicomflow-upload.json", "a/manifest.json")]
    [True, False, False, False, True]
    """
    parts = Path(relative).parts
    if not parts or any(part.startswith(".") for part in parts):
        return False
    return not (len(parts) == 1 and parts[0] in SIDECARS)


class ScanType(StrEnum):
    """What the device acquired."""

    FOUR_D_CT = "4d-ct"
    INSPIRATION_HOLD = "inspiration-hold"
    EXPIRATION_HOLD = "expiration-hold"

    @classmethod
    def parse(cls, value: str) -> ScanType:
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(t.value for t in cls)
            raise ManifestError(f"scan_type {value!r} is unknown; use one of: {allowed}") from None


@dataclass(frozen=True)
class ManifestLimits:
    """Server-side limits on a manifest (the API's settings override the defaults)."""

    max_files: int = 10_000
    max_file_size: int = 64 * GiB
    max_total_size: int = 512 * GiB
    max_name_length: int = 255


@dataclass(frozen=True)
class DeviceSettings:
    """Acquisition settings the device reports; all optional, checked when present."""

    protocol_duration_s: float | None = None
    phases: int | None = None
    slices_per_phase: int | None = None
    matrix: tuple[int, int] | None = None  # rows, columns
    voxel_size_mm: tuple[float, float, float] | None = None  # column spacing, row spacing, slice

    def __post_init__(self) -> None:
        if self.protocol_duration_s is not None and not _positive(self.protocol_duration_s):
            raise ManifestError("device_settings.protocol_duration_s must be a number > 0 (seconds)")
        for name in ("phases", "slices_per_phase"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and 0 < value <= 100_000):
                raise ManifestError(f"device_settings.{name} must be a whole number from 1 to 100000")
        if self.matrix is not None:
            if len(self.matrix) != 2 or not all(_is_int(v) and 0 < v <= 65535 for v in self.matrix):
                raise ManifestError("device_settings.matrix must be [rows, columns], each 1..65535")
            object.__setattr__(self, "matrix", tuple(self.matrix))
        if self.voxel_size_mm is not None:
            if len(self.voxel_size_mm) != 3 or not all(_positive(v) for v in self.voxel_size_mm):
                raise ManifestError("device_settings.voxel_size_mm must be three numbers > 0 (mm)")
            object.__setattr__(self, "voxel_size_mm", tuple(float(v) for v in self.voxel_size_mm))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DeviceSettings:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ManifestError("device_settings must be an object")
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ManifestError(
                f"device_settings has unknown fields: {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(cls.__dataclass_fields__)}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class ManifestFile:
    """One file of a scan: its name relative to the scan root (POSIX separators), size, SHA-256."""

    name: str
    size: int
    sha256: str

    def check(self, index: int, limits: ManifestLimits) -> None:
        where = f"files[{index}]"
        check_relative_name(self.name, where=f"{where}.name", max_length=limits.max_name_length)
        if not _is_int(self.size) or self.size < 1:
            raise ManifestError(f"{where}.size must be a whole number of bytes >= 1")
        if self.size > limits.max_file_size:
            raise ManifestError(
                f"{where}.size is {self.size} bytes, over the limit of {limits.max_file_size}; "
                "split the scan or ask the operator to raise the file size limit"
            )
        if not isinstance(self.sha256, str) or not _SHA256_RE.match(self.sha256):
            raise ManifestError(f"{where}.sha256 must be 64 lowercase hexadecimal characters")

    @classmethod
    def from_dict(cls, data: Any, index: int) -> ManifestFile:
        if not isinstance(data, Mapping):
            raise ManifestError(f"files[{index}] must be an object with name, size and sha256")
        missing = {"name", "size", "sha256"} - set(data)
        if missing:
            raise ManifestError(f"files[{index}] lacks {', '.join(sorted(missing))}")
        sha = data["sha256"]
        return cls(name=data["name"], size=data["size"], sha256=sha.lower() if isinstance(sha, str) else sha)


@dataclass(frozen=True)
class ScanManifest:
    """A scan as the device declares it. Construction validates it; an invalid one never exists.

    ``scan_id`` is assigned by the server; a device's request carries none.

    Examples
    --------
    >>> m = ScanManifest(device_id="ct-01", scan_type=ScanType.FOUR_D_CT,
    ...                  files=(ManifestFile("phase_00/0001.dcm", 10, "0" * 64),))
    >>> m.total_size
    10
    """

    device_id: str
    scan_type: ScanType
    files: tuple[ManifestFile, ...]
    scan_id: str | None = None
    device_settings: DeviceSettings = field(default_factory=DeviceSettings)
    limits: ManifestLimits = field(default_factory=ManifestLimits, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.scan_id is not None:
            check_identifier(self.scan_id, "scan_id")
        check_identifier(self.device_id, "device_id")
        object.__setattr__(self, "scan_type", ScanType.parse(self.scan_type))
        object.__setattr__(self, "files", tuple(self.files))
        limits = self.limits
        if not self.files:
            raise ManifestError("files is empty: a scan needs at least one file")
        if len(self.files) > limits.max_files:
            raise ManifestError(
                f"the scan has {len(self.files)} files, over the limit of {limits.max_files}; "
                "split it into several scans"
            )
        seen: dict[str, int] = {}
        for index, item in enumerate(self.files):
            if not isinstance(item, ManifestFile):
                raise ManifestError(f"files[{index}] is not a file entry")
            item.check(index, limits)
            # Case-insensitive: two names that differ only in case collide on Windows and macOS.
            folded = item.name.casefold()
            if folded in seen:
                raise ManifestError(
                    f"files[{index}].name repeats files[{seen[folded]}].name (names are compared "
                    "ignoring case); every file needs its own name"
                )
            seen[folded] = index
        for folded, index in seen.items():
            parts = folded.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent in seen:
                    raise ManifestError(f"files[{seen[parent]}].name is also a folder of files[{index}].name")
        if self.total_size > limits.max_total_size:
            raise ManifestError(
                f"the scan totals {self.total_size} bytes, over the limit of "
                f"{limits.max_total_size}; split it into several scans"
            )

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, name: str) -> ManifestFile:
        for item in self.files:
            if item.name == name:
                return item
        raise KeyError(name)

    def with_scan_id(self, scan_id: str) -> ScanManifest:
        return replace(self, scan_id=scan_id)

    # -- JSON ------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, *, limits: ManifestLimits | None = None) -> ScanManifest:
        if not isinstance(data, Mapping):
            raise ManifestError("the manifest must be a JSON object")
        known = {"version", "scan_id", "device_id", "scan_type", "device_settings", "files"}
        unknown = set(data) - known
        if unknown:
            raise ManifestError(
                f"the manifest has unknown fields: {', '.join(sorted(map(str, unknown)))}; "
                f"allowed: {', '.join(sorted(known))}"
            )
        version = data.get("version", MANIFEST_VERSION)
        if version != MANIFEST_VERSION:
            raise ManifestError(f"manifest version {version!r} is not supported; use {MANIFEST_VERSION}")
        for required in ("device_id", "scan_type", "files"):
            if required not in data:
                raise ManifestError(f"the manifest lacks {required}")
        files = data["files"]
        if not isinstance(files, list):
            raise ManifestError("files must be a list of {name, size, sha256}")
        limits = limits or ManifestLimits()
        if len(files) > limits.max_files:  # before building thousands of entries
            raise ManifestError(
                f"the scan has {len(files)} files, over the limit of {limits.max_files}; "
                "split it into several scans"
            )
        return cls(
            scan_id=data.get("scan_id"),
            device_id=data["device_id"],
            scan_type=data["scan_type"],
            device_settings=DeviceSettings.from_dict(data.get("device_settings")),
            files=tuple(ManifestFile.from_dict(f, i) for i, f in enumerate(files)),
            limits=limits,
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, limits: ManifestLimits | None = None) -> ScanManifest:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"the manifest is not valid JSON ({exc.__class__.__name__})") from None
        return cls.from_dict(data, limits=limits)

    @classmethod
    def load(cls, path: str | Path, *, limits: ManifestLimits | None = None) -> ScanManifest:
        return cls.from_json(Path(path).read_bytes(), limits=limits)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": MANIFEST_VERSION}
        if self.scan_id is not None:
            out["scan_id"] = self.scan_id
        out["device_id"] = self.device_id
        out["scan_type"] = self.scan_type.value
        settings = self.device_settings.to_dict()
        if settings:
            out["device_settings"] = settings
        out["files"] = [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in self.files]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


def check_identifier(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ManifestError(
            f"{what} must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return value


def check_relative_name(name: Any, *, where: str = "name", max_length: int = 255) -> str:
    """Check that ``name`` is a safe relative POSIX path: no escape from the scan's folder."""
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{where} must be a non-empty string")
    if len(name) > max_length or len(name.encode("utf-8")) > max_length * 4:
        raise ManifestError(f"{where} is longer than {max_length} characters")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ManifestError(f"{where} is an absolute path; use a path relative to the scan folder")
    if any(ch in _FORBIDDEN_NAME_CHARS for ch in name):
        raise ManifestError(
            f"{where} contains a control character or one of \\ : * ? \" < > |; use '/' between "
            "folders and plain characters in names"
        )
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise ManifestError(
                f"{where} has an empty, '.' or '..' path segment; names must stay inside the scan folder"
            )
        if part != part.strip() or part.endswith("."):
            raise ManifestError(f"{where} has a segment with leading/trailing spaces or a trailing dot")
    return name


def sha256_file(path: str | Path, chunk_size: int = 1024 * 1024) -> str:
    """SHA-256 of a file, streamed (memory does not grow with the file)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def files_from_directory(root: str | Path, *, exclude: Iterable[str] = ()) -> tuple[ManifestFile, ...]:
    """Every regular file under ``root`` (sorted, POSIX names), with its size and SHA-256.

    Hidden files (a leading '.') and the names in ``exclude`` (e.g. ``manifest.json``) are skipped.
    """
    root = Path(root)
    skip = set(exclude)
    entries = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel in skip or any(p.startswith(".") for p in rel.split("/")):
            continue
        entries.append(ManifestFile(name=rel, size=path.stat().st_size, sha256=sha256_file(path)))
    return tuple(entries)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and value > 0 and value < float("inf")
    )
