"""Where a scan's work lives in S3: work items, batch reports, held files, de-identified files.

Every key is made of the scan id and file indices, never of a device's file name (a name can carry
patient data). The ingest bucket holds the originals, ``scans/{id}/work/`` (items and reports) and
``scans/{id}/held/`` (de-identified files held for review); the de-identified bucket holds
``scans/{id}/{index:05d}.dcm`` and the de-identified ``scans/{id}/manifest.json`` that the analysis
task reads (:func:`dicomflow.analysis.pipeline.scan_keys`).

Examples
--------
>>> items_key("s1"), validation_batch_key("s1", 25), deidentified_key("s1", 7)
('scans/s1/work/items.json', 'scans/s1/work/validation/00025.json', 'scans/s1/00007.dcm')
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dicomflow.errors import ManifestError
from dicomflow.manifest import ManifestFile, ManifestLimits, ScanManifest
from dicomflow.storage.base import ObjectStore

PREFIX = "scans/"
JSON = "application/json"


def scan_prefix(scan_id: str) -> str:
    return f"{PREFIX}{scan_id}/"


def work_prefix(scan_id: str) -> str:
    return f"{scan_prefix(scan_id)}work/"


def items_key(scan_id: str) -> str:
    """The work items the Maps read (S3 ItemReader): ``[{"index", "key", "size", "sha256"}, ...]``."""
    return f"{work_prefix(scan_id)}items.json"


def validation_batch_key(scan_id: str, first: int) -> str:
    return f"{work_prefix(scan_id)}validation/{first:05d}.json"


def validation_report_key(scan_id: str) -> str:
    return f"{work_prefix(scan_id)}validation.json"


def deidentification_batch_key(scan_id: str, first: int) -> str:
    return f"{work_prefix(scan_id)}deidentification/{first:05d}.json"


def deidentification_report_key(scan_id: str) -> str:
    return f"{work_prefix(scan_id)}deidentification.json"


def held_key(scan_id: str, index: int) -> str:
    """A file held for review (burned-in annotation), de-identified, beside the originals."""
    return f"{scan_prefix(scan_id)}held/{index:05d}.dcm"


def deidentified_name(index: int) -> str:
    return f"{index:05d}.dcm"


def deidentified_key(scan_id: str, index: int) -> str:
    return scan_prefix(scan_id) + deidentified_name(index)


def deidentified_manifest_key(scan_id: str) -> str:
    return f"{scan_prefix(scan_id)}manifest.json"


def index_name(index: int) -> str:
    """The name a file goes by in reports and scan-level checks: its index, never its file name."""
    return f"{index:05d}"


@dataclass(frozen=True)
class Item:
    """One file of the scan as the workflow sees it: index, ingest key, declared size and SHA-256."""

    index: int
    key: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "key": self.key, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Item:
        return cls(int(data["index"]), str(data["key"]), int(data["size"]), str(data["sha256"]))


@dataclass(frozen=True)
class StoredManifest:
    """The manifest the upload API wrote at completion, with each file's ingest key."""

    manifest: ScanManifest
    items: tuple[Item, ...]

    def indexed(self) -> ScanManifest:
        """The manifest with every file named by its index (what the scan-level checks compare
        against the batch reports, which name files the same way)."""
        files = tuple(ManifestFile(index_name(i.index), i.size, i.sha256) for i in self.items)
        return ScanManifest(
            device_id=self.manifest.device_id,
            scan_type=self.manifest.scan_type,
            files=files,
            scan_id=self.manifest.scan_id,
            device_settings=self.manifest.device_settings,
            limits=self.manifest.limits,
        )


def load_manifest(
    store: ObjectStore, key: str, scan_id: str, *, limits: ManifestLimits | None = None
) -> StoredManifest:
    """Read and validate the stored manifest. A file's ingest key is its ``key`` field (the upload
    API's layout without names) or, in manifests written before it, ``scans/{id}/files/{name}``."""
    data = read_json(store, key)
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ManifestError("the stored manifest is not a manifest object with files")
    raw_files = data["files"]
    # ScanManifest knows name, size and sha256; the ingest key is the workflow's business.
    plain = {**data, "files": [{k: f.get(k) for k in ("name", "size", "sha256")} for f in raw_files]}
    manifest = ScanManifest.from_dict(plain, limits=limits)
    items = tuple(
        Item(index, _ingest_key(scan_id, raw, entry.name), entry.size, entry.sha256)
        for index, (raw, entry) in enumerate(zip(raw_files, manifest.files, strict=True))
    )
    return StoredManifest(manifest, items)


def _ingest_key(scan_id: str, raw: Mapping[str, Any], name: str) -> str:
    key = raw.get("key")
    if isinstance(key, str) and key:
        return key
    return f"{scan_prefix(scan_id)}files/{name}"


def read_json(store: ObjectStore, key: str) -> Any:
    return json.loads(b"".join(store.iter_chunks(key)))


def write_json(store: ObjectStore, key: str, value: Any) -> None:
    store.put(key, json.dumps(value, separators=(",", ":")).encode("utf-8"), content_type=JSON)


def batch_reports(store: ObjectStore, prefix: str) -> Iterator[dict[str, Any]]:
    """Every batch report under ``prefix``, in order of their first index."""
    for key in store.list_keys(prefix):
        if key.endswith(".json"):
            yield read_json(store, key)
