"""Nothing crosses between scans: the checks that scans processed at the same time stayed apart.

Used by ``tests/reliability/test_load.py`` (a few tiny scans in parallel) and
``bench/bench_load.py`` (20 at once). Given each scan's phantom folder (as the device uploaded
it) and its status record (``GET /scans/{id}``), :func:`check_isolation` reads every object the
workflow wrote and returns the problems found, as sentences that name scans by their position and
objects by their key, never a value read from a file:

- each scan COMPLETED; its keys in the ingest, de-identified and results buckets all lie under
  ``scans/{its id}/``, and no object in those buckets lies under a prefix of no known scan;
- counts match its manifest: the originals and their SHA-256 as the device declared them, one
  de-identified file per original, the de-identified manifest, results.json's shape;
- its de-identified files carry exactly one pseudonymised Study Instance UID, one pseudonym
  Patient ID, one Series Instance UID per phase and one SOP Instance UID per file (distinct per
  scan, consistent within it), Patient Identity Removed = YES;
- its results record, results.json, SEG and SR name its own study and pseudonym, and every UID
  in the SEG and SR that belongs to some scan's de-identified files belongs to its own;
- no patient value planted in any scan's originals (name, IDs, address, telephone, accession,
  comments, history, private note) and no original UID appears in the bytes of any scan's outputs.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

#: The planted values that identify the patient or the visit and are unique enough to search for
#: in bytes. Dates are left out: one scan's shifted date may equal another's original by chance.
PATIENT_VALUES = (
    "PatientName",
    "PatientID",
    "OtherPatientIDsSequence.PatientID",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "AccessionNumber",
    "AdditionalPatientHistory",
    "PatientComments",
    "private:ACME PATIENT INFO:note",
)
_UID_ATTRIBUTES = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
OUTPUT_NAMES = ("results", "seg", "sr", "preview")


@dataclass
class ScanUnderLoad:
    """One scan of a load run: its phantom folder, and what the run learnt of it."""

    folder: Path
    scan_id: str = ""
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(json.loads((self.folder / "manifest.json").read_text()))

    @property
    def truth(self) -> dict[str, Any]:
        return dict(json.loads((self.folder / "ground_truth.json").read_text()))


@dataclass
class _Originals:
    values: set[bytes]
    uids: set[str]


@dataclass
class _Outputs:
    patient_ids: set[str] = field(default_factory=set)
    studies: set[str] = field(default_factory=set)
    series: set[str] = field(default_factory=set)
    instances: set[str] = field(default_factory=set)
    uids: set[str] = field(default_factory=set)  # every UI value of its de-identified files
    bodies: dict[str, bytes] = field(default_factory=dict)  # bucket/key -> bytes


def _uids(ds: pydicom.Dataset) -> set[str]:
    found: set[str] = set()
    for element in ds.iterall():
        if element.VR != "UI" or element.value in (None, ""):
            continue
        values = element.value if element.VM > 1 else [element.value]
        found.update(str(v) for v in values)
    return found


def _originals(scan: ScanUnderLoad) -> _Originals:
    planted = scan.truth["identifying_values"]
    values = {str(planted[name]).upper().encode() for name in PATIENT_VALUES if planted.get(name)}
    uids: set[str] = set()
    for entry in scan.manifest["files"]:
        ds = pydicom.dcmread(scan.folder / entry["name"], stop_before_pixels=True)
        uids.update(str(getattr(ds, a)) for a in _UID_ATTRIBUTES if getattr(ds, a, None))
    return _Originals(values, uids)


class _Buckets:
    def __init__(self, s3: Any, buckets: Mapping[str, str]) -> None:
        self.s3 = s3
        self.names = dict(buckets)
        self.keys = {role: self._list(name) for role, name in self.names.items()}

    def _list(self, bucket: str) -> list[str]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    def under(self, role: str, prefix: str) -> list[str]:
        return [k for k in self.keys[role] if k.startswith(prefix)]

    def get(self, role: str, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.names[role], Key=key)["Body"].read())


def check_isolation(s3: Any, buckets: Mapping[str, str], scans: Sequence[ScanUnderLoad]) -> list[str]:
    """Every way the outputs of ``scans`` crossed or fell short; empty if they stayed apart.

    ``buckets``: the stack's bucket names by role (``ingest``, ``deidentified``, ``results``), as
    in ``stack.json``; ``s3``: a client of the stack's S3. Each scan's ``status`` is its
    ``GET /scans/{id}`` answer.
    """
    problems: list[str] = []
    store = _Buckets(s3, buckets)
    ids = [s.scan_id for s in scans]
    if len(set(ids)) != len(ids) or not all(ids):
        return [f"scan ids are not distinct and set: {ids}"]
    problems += _stray_keys(store, ids)
    originals = [_originals(s) for s in scans]
    outputs = [_Outputs() for _ in scans]
    for n, scan in enumerate(scans):
        problems += _check_scan(store, n, scan, outputs[n])
    problems += _check_distinct(outputs)
    for n, scan in enumerate(scans):
        problems += _check_results(store, n, scan, outputs)
    problems += _check_no_values(originals, outputs)
    return problems


def _stray_keys(store: _Buckets, ids: Sequence[str]) -> list[str]:
    prefixes = tuple(f"scans/{i}/" for i in ids)
    return [
        f"{role} bucket: {key} lies under no scan of the run"
        for role, keys in store.keys.items()
        for key in keys
        if not key.startswith(prefixes)
    ]


def _check_scan(store: _Buckets, n: int, scan: ScanUnderLoad, out: _Outputs) -> list[str]:
    problems: list[str] = []
    prefix = f"scans/{scan.scan_id}/"
    status = scan.status
    if status.get("status") != "COMPLETED":
        problems.append(f"scan #{n} ended {status.get('status')}: {status.get('reason', '')}")
        return problems
    declared = scan.manifest["files"]
    stored = json.loads(store.get("ingest", prefix + "manifest.json"))
    if stored.get("scan_id") not in (None, scan.scan_id):
        problems.append(f"scan #{n}: its stored manifest names another scan")
    entries = stored["files"]
    if [(e["name"], e["sha256"]) for e in entries] != [(e["name"], e["sha256"]) for e in declared]:
        problems.append(f"scan #{n}: the stored manifest's files are not the device's")
    files = store.under("ingest", prefix + "files/")
    if sorted(files) != sorted(e["key"] for e in entries) or not all(
        e["key"].startswith(prefix) for e in entries
    ):
        problems.append(f"scan #{n}: {len(files)} originals stored, {len(entries)} declared")
    deid = [k for k in store.under("deidentified", prefix) if k.endswith(".dcm")]
    if len(deid) != len(declared):
        problems.append(f"scan #{n}: {len(deid)} de-identified files for {len(declared)} originals")
    deid_manifest = json.loads(store.get("deidentified", prefix + "manifest.json"))
    if deid_manifest.get("scan_id") != scan.scan_id or len(deid_manifest["files"]) != len(declared):
        problems.append(f"scan #{n}: the de-identified manifest is not this scan's")
    for key in deid:
        body = store.get("deidentified", key)
        out.bodies[f"deidentified/{key}"] = body
        ds = pydicom.dcmread(io.BytesIO(body), stop_before_pixels=True)
        out.patient_ids.add(str(ds.PatientID))
        out.studies.add(str(ds.StudyInstanceUID))
        out.series.add(str(ds.SeriesInstanceUID))
        out.instances.add(str(ds.SOPInstanceUID))
        out.uids |= _uids(ds)
        if getattr(ds, "PatientIdentityRemoved", "") != "YES":
            problems.append(f"scan #{n}: {key} does not say Patient Identity Removed")
    phases = int(scan.truth["phases"])
    if len(out.patient_ids) != 1 or len(out.studies) != 1:
        problems.append(
            f"scan #{n}: {len(out.patient_ids)} patient ids and {len(out.studies)} studies in its files"
        )
    if len(out.series) != phases or len(out.instances) != len(declared):
        problems.append(
            f"scan #{n}: {len(out.series)} series for {phases} phases, "
            f"{len(out.instances)} instances for {len(declared)} files"
        )
    out.bodies[f"deidentified/{prefix}manifest.json"] = store.get("deidentified", prefix + "manifest.json")
    return problems


def _check_distinct(outputs: Sequence[_Outputs]) -> list[str]:
    problems: list[str] = []
    for a in range(len(outputs)):
        for b in range(a + 1, len(outputs)):
            for what in ("patient_ids", "studies", "series", "instances"):
                if getattr(outputs[a], what) & getattr(outputs[b], what):
                    problems.append(f"scans #{a} and #{b} share {what.replace('_', ' ')}")
    return problems


def _check_results(store: _Buckets, n: int, scan: ScanUnderLoad, outputs: Sequence[_Outputs]) -> list[str]:
    if scan.status.get("status") != "COMPLETED":
        return []
    problems: list[str] = []
    own = outputs[n]
    prefix = f"scans/{scan.scan_id}/"
    record = scan.status.get("results") or {}
    keys = dict(record.get("outputs") or {})
    if set(keys) != set(OUTPUT_NAMES) or record.get("bucket") != store.names["results"]:
        return [f"scan #{n}: its results record lists {sorted(keys)} in another bucket or short"]
    if not all(k.startswith(prefix) for k in keys.values()):
        problems.append(f"scan #{n}: its results record points outside its own prefix")
    if sorted(store.under("results", prefix)) != sorted(keys.values()):
        problems.append(f"scan #{n}: the results bucket holds other objects than its record lists")
        return problems
    bodies = {name: store.get("results", key) for name, key in keys.items()}
    for name, key in keys.items():
        own.bodies[f"results/{key}"] = bodies[name]
    results = json.loads(bodies["results"])
    truth = scan.truth
    if results.get("scan_id") != scan.scan_id:
        problems.append(f"scan #{n}: results.json names another scan")
    shape = results.get("shape") or {}
    if (shape.get("phases"), shape.get("slices")) != (truth["phases"], truth["slices"]):
        problems.append(f"scan #{n}: results.json's shape is not its phantom's")
    if len(results.get("lung_volume_ml") or []) != truth["phases"]:
        problems.append(f"scan #{n}: results.json measures {len(results.get('lung_volume_ml') or [])} phases")
    others = set().union(*(o.uids for m, o in enumerate(outputs) if m != n)) - own.uids
    for name in ("seg", "sr"):
        ds = pydicom.dcmread(io.BytesIO(bodies[name]))
        if str(ds.PatientID) not in own.patient_ids or str(ds.StudyInstanceUID) not in own.studies:
            problems.append(f"scan #{n}: its {name} names another patient or study")
        uids = _uids(ds)
        if uids & others:
            problems.append(f"scan #{n}: its {name} references {len(uids & others)} UIDs of other scans")
        if not uids & (own.series | own.instances):
            problems.append(f"scan #{n}: its {name} references none of its own series or instances")
    return problems


def _check_no_values(originals: Sequence[_Originals], outputs: Sequence[_Outputs]) -> list[str]:
    """No planted value or original UID of any scan in the bytes of any scan's outputs (a value
    that two phantoms happen to share is searched all the same: it must be in neither)."""
    problems: list[str] = []
    needles: list[tuple[int, bytes]] = []
    for m, orig in enumerate(originals):
        needles += [(m, v) for v in orig.values]
        needles += [(m, uid.encode()) for uid in orig.uids]
    for n, out in enumerate(outputs):
        for key, body in out.bodies.items():
            upper = body.upper()
            found = sorted({m for m, needle in needles if needle in upper})
            if found:
                whose = ", ".join("its own" if m == n else f"#{m}'s" for m in found)
                problems.append(f"scan #{n}: {key} holds original values of scan {whose}")
    return problems


def distinct_patients(scans: Iterable[ScanUnderLoad]) -> bool:
    """Whether the phantoms' patients differ in name and ID (the run's premise)."""
    seen = [
        (s.truth["identifying_values"]["PatientName"], s.truth["identifying_values"]["PatientID"])
        for s in scans
    ]
    return len({name for name, _ in seen}) == len(seen) and len({pid for _, pid in seen}) == len(seen)


#: The workflow's functions: each logs "step done" under the scan id as its correlation id, once
#: per scan, or once per batch with the batch's file ``count``.
SCAN_STEPS = ("prepare_scan", "validate_scan", "deidentify_scan", "publish")
BATCH_STEPS = ("validate_batch", "deidentify_batch")


def check_step_logs(lines: str, scans: Sequence[ScanUnderLoad]) -> list[str]:
    """The functions' JSON log lines say each scan's steps under its own id: one "step done" per
    scan step, and batch lines whose counts add up to the scan's files (a retried step would log
    twice and be reported too)."""
    done: dict[tuple[str, str], list[int]] = {}
    for line in lines.splitlines():
        if not line.startswith("{") or '"step done"' not in line:
            continue
        entry = json.loads(line)
        done.setdefault((entry["service"], str(entry.get("correlation_id"))), []).append(
            int(entry.get("count", 1))
        )
    problems = []
    for n, scan in enumerate(scans):
        files = len(scan.manifest["files"])
        for step in SCAN_STEPS:
            logged = len(done.pop((step, scan.scan_id), []))
            if logged != 1:
                problems.append(f"scan #{n}: {step} logged 'step done' {logged} times under its id")
        for step in BATCH_STEPS:
            counted = sum(done.pop((step, scan.scan_id), []))
            if counted != files:
                problems.append(f"scan #{n}: {step} logged {counted} files under its id, for {files}")
    problems += [f"{step} logged 'step done' under an id of no scan of the run" for step, _ in done]
    return problems
