"""Analyse one scan: read the phases, run the model, compute metrics, write the outputs.

``analyze_scan`` takes its input and output as :class:`~dicomflow.storage.ObjectStore` objects, so
the same code runs over S3 (the ECS task) and over local folders (the CLI, the local stack, tests).
Outputs under ``out_prefix``: ``results.json``, ``seg.dcm`` (DICOM SEG), ``sr.dcm`` (TID 1500
Comprehensive 3D SR) and ``preview.png``.
"""

from __future__ import annotations

import ctypes
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from dicomflow.analysis.metrics import (
    DEFECT_THRESHOLD_FRACTION,
    lung_volume_ml,
    tidal_volume_ml,
    ventilation_metrics,
)
from dicomflow.analysis.model import LoadedModel, ModelSpec, PhaseMeasure, available_cores, default_model
from dicomflow.analysis.reading import ScanReader
from dicomflow.errors import AnalysisError
from dicomflow.manifest import ScanManifest, is_scan_file
from dicomflow.privacy import fingerprint
from dicomflow.storage import LocalObjectStore, ObjectStore

logger = logging.getLogger(__name__)

RESULTS_NAME = "results.json"
SEG_NAME = "seg.dcm"
SR_NAME = "sr.dcm"
PREVIEW_NAME = "preview.png"
MANIFEST_NAME = "manifest.json"


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)


def scan_keys(source: ObjectStore, prefix: str, manifest_key: str | None = None) -> list[str]:
    """The keys of the scan's DICOM files: from its manifest when there is one, else every object
    under ``prefix``; JSON files are never read as scan data."""
    return list(scan_files(source, prefix, manifest_key))


def scan_files(source: ObjectStore, prefix: str, manifest_key: str | None = None) -> dict[str, int | None]:
    """:func:`scan_keys` with each file's size where the manifest gives it (None without one): over
    S3 the reader then needs no HEAD per file (1500 requests on the default 4D-CT)."""
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    key = manifest_key or (prefix + MANIFEST_NAME)
    if source.exists(key):
        manifest = ScanManifest.from_json(b"".join(source.iter_chunks(key)))
        # A manifest may list sidecar JSON files (a phantom's ground truth): never scan data.
        return {prefix + f.name: f.size for f in manifest.files if not f.name.endswith(".json")}
    if manifest_key:
        raise AnalysisError(f"the manifest {fingerprint(manifest_key)} does not exist")
    # Without a manifest, the scan's files as the other commands take them (not hidden files such
    # as a Mac's .DS_Store or the upload journal, nor sidecars), and no JSON.
    keys = [k for k in source.list_keys(prefix) if is_scan_file(k[len(prefix) :]) and not k.endswith(".json")]
    if not keys:
        raise AnalysisError(f"no scan files under {fingerprint(prefix)}")
    return dict.fromkeys(keys)


def _trim_heap() -> None:
    """Hand freed buffers back to the system before the outputs are built.

    glibc keeps freed heap pages once its mmap threshold has adapted to large buffers (the old
    reader's 1500 slices of 512 KiB left about 0.9 GB resident); ``malloc_trim`` returns them.
    """
    with suppress(OSError, AttributeError):  # not glibc: nothing to trim, or no way to
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def analyze_scan(
    source: ObjectStore,
    prefix: str,
    dest: ObjectStore,
    out_prefix: str,
    model: ModelSpec | None = None,
    *,
    scan_id: str | None = None,
    manifest_key: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Analyse the scan under ``prefix`` of ``source`` and write the outputs under ``out_prefix``.

    Returns the results (also written as ``results.json``). Raises
    :class:`~dicomflow.errors.AnalysisError` (or a subclass: the model's integrity or contract)
    when the scan cannot be analysed.

    Examples
    --------
    >>> import tempfile
    >>> from dicomflow.storage import LocalObjectStore
    >>> empty, out = LocalObjectStore(tempfile.mkdtemp()), LocalObjectStore(tempfile.mkdtemp())
    >>> try:
    ...     analyze_scan(empty, "scan", out, "out")
    ... except AnalysisError as exc:
    ...     print(type(exc).__name__)
    AnalysisError
    """
    timer = _Timer()
    started = time.perf_counter()
    spec = model or default_model()
    with timer.stage("load_model_s"):
        loaded = LoadedModel(spec, threads=threads)
    with timer.stage("read_headers_s"):
        files = scan_files(source, prefix, manifest_key)
        sizes = {k: size for k, size in files.items() if size is not None}
        reader = ScanReader(source, workers=threads or available_cores(), sizes=sizes)
        scan = reader.plan(list(files))
    if len(scan.phases) < 2:
        raise AnalysisError(
            f"the scan has {len(scan.phases)} phase; ventilation needs at least an inhale and an exhale phase"
        )
    logger.info("scan planned", extra={"phases": len(scan.phases), "shape": scan.shape})
    from dicomflow.analysis.outputs import prepare_in_background

    outputs_ready = prepare_in_background()  # highdicom's tables, beside the phases' work

    # One phase in memory at a time, plus the one with the most lung so far (end-inspiration is
    # the largest lung, so only that phase's voxels are needed afterwards): two int16 buffers,
    # reused, instead of the whole scan.
    read_s = segment_s = 0.0
    measures: list[PhaseMeasure] = []
    work: np.ndarray | None = np.empty(scan.shape, dtype=np.int16)
    kept: np.ndarray | None = None
    for phase in scan.phases:
        tick = time.perf_counter()
        assert work is not None
        volume = reader.read_phase(phase, work)
        tock = time.perf_counter()
        measure = loaded.measure(volume)
        segment_s += time.perf_counter() - tock
        read_s += tock - tick
        measures.append(measure)
        if kept is None or measure.lung_voxels > max(m.lung_voxels for m in measures[:-1]):
            work, kept = kept, work  # np.argmax's choice: the first phase with the most lung
            if work is None:
                work = np.empty(scan.shape, dtype=np.int16)
    del work, volume
    timer.timings["read_s"] = round(timer.timings["read_headers_s"] + read_s, 3)
    timer.timings["segment_s"] = round(segment_s, 3)
    assert kept is not None
    counts = [m.lung_voxels for m in measures]
    air = [m.lung_air_fraction for m in measures]
    volumes = [lung_volume_ml(c, scan.voxel_volume_ml) for c in counts]
    tidal, inhale, exhale = tidal_volume_ml(volumes)
    box = measures[inhale].box
    if counts[inhale] == 0 or box is None:
        raise AnalysisError("no lung was found in any phase (no voxels in the model's lung window)")
    inhale_hu = kept
    scan.release_headers(keep=inhale)

    with timer.stage("ventilation_s"):
        vent_out = loaded.ventilation(inhale_hu, air[exhale], box)
        threshold = float(spec.parameters.get("defect_threshold_fraction", DEFECT_THRESHOLD_FRACTION))
        # Over the box: outside it there is no lung, so every metric is the whole volume's.
        vent, defect_box = ventilation_metrics(
            vent_out.specific_ventilation,
            vent_out.lung_mask,
            voxel_specific_ventilation=vent_out.voxel_specific_ventilation,
            threshold_fraction=threshold,
        )
        lung_mask = vent_out.full(vent_out.lung_mask, scan.shape)
        defect = vent_out.full(defect_box, scan.shape)

    s, r, c = scan.spacing_mm
    results: dict[str, Any] = {
        "scan_id": scan_id,
        "status": "succeeded",
        "model": {"name": spec.name, "version": spec.version, "sha256": spec.sha256},
        "shape": {
            "phases": len(scan.phases),
            "slices": scan.shape[0],
            "rows": scan.shape[1],
            "columns": scan.shape[2],
        },
        "voxel_size_mm": [c, r, s],
        "voxel_volume_ml": scan.voxel_volume_ml,
        "phases": [
            {
                "index": p.index,
                "label": p.label,
                "percent": p.percent,
                "series_instance_uid": p.series_instance_uid,
                "lung_voxels": counts[p.index],
                "lung_volume_ml": volumes[p.index],
                "lung_air_fraction": air[p.index],
            }
            for p in scan.phases
        ],
        "lung_volume_ml": volumes,
        "inhale_phase": inhale,
        "exhale_phase": exhale,
        "tidal_volume_ml": tidal,
        "ventilation": {
            "defect_percent": vent.defect_percent,
            "defect_voxels": vent.defect_voxels,
            "defect_volume_ml": lung_volume_ml(vent.defect_voxels, scan.voxel_volume_ml),
            "heterogeneity_cv": vent.heterogeneity_cv,
            "median_specific_ventilation": vent.median_specific_ventilation,
            "mean_specific_ventilation": vent.mean_specific_ventilation,
            "defect_threshold_fraction": threshold,
            "reference_air_fraction": air[exhale],
        },
        "source_series": {
            "inhale": scan.phases[inhale].series_instance_uid,
            "exhale": scan.phases[exhale].series_instance_uid,
        },
    }
    out_prefix = out_prefix.rstrip("/") + "/" if out_prefix else ""
    inhale_phase = scan.phases[inhale]
    with timer.stage("preview_s"):
        from dicomflow.analysis.outputs.preview import coronal_row, render_coronal

        row = coronal_row(lung_mask, defect)
        png = render_coronal(
            inhale_hu[:, row, :],
            lung_mask[:, row, :],
            vent_out.plane(vent_out.specific_ventilation, row, scan.shape),
            defect[:, row, :],
            scan.spacing_mm,
            results,
        )
    # The maps and the inhale volume are no longer needed: free them before the SEG is built.
    del vent_out, inhale_hu, kept, defect_box
    _trim_heap()
    with timer.stage("seg_s"):
        outputs_ready.join()
        from dicomflow.analysis.outputs.seg import lung_segmentation

        seg = lung_segmentation(
            inhale_phase, lung_mask, defect, model_name=spec.name, model_version=spec.version
        )
        del lung_mask, defect
        dest.put(out_prefix + SEG_NAME, _dicom_bytes(seg), content_type="application/dicom")
    with timer.stage("sr_s"):
        from dicomflow.analysis.outputs.sr import measurement_report

        evidence = [*scan.evidence(), seg]
        sr = measurement_report(results, evidence, model_name=spec.name, model_version=spec.version)
        dest.put(out_prefix + SR_NAME, _dicom_bytes(sr), content_type="application/dicom")
    dest.put(out_prefix + PREVIEW_NAME, png, content_type="image/png")
    results["outputs"] = {
        "results": out_prefix + RESULTS_NAME,
        "seg": out_prefix + SEG_NAME,
        "seg_sop_instance_uid": str(seg.SOPInstanceUID),
        "sr": out_prefix + SR_NAME,
        "sr_sop_instance_uid": str(sr.SOPInstanceUID),
        "preview": out_prefix + PREVIEW_NAME,
    }
    timer.timings["total_s"] = round(time.perf_counter() - started, 3)
    results["timings_s"] = timer.timings
    dest.put(
        out_prefix + RESULTS_NAME,
        (json.dumps(results, indent=2) + "\n").encode(),
        content_type="application/json",
    )
    return results


def _dicom_bytes(ds: Any) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def analyze_directory(
    scan_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    model: ModelSpec | None = None,
    *,
    threads: int | None = None,
) -> dict[str, Any]:
    """:func:`analyze_scan` over local folders (the CLI and the local stack)."""
    return analyze_scan(
        LocalObjectStore(Path(scan_dir)), "", LocalObjectStore(Path(out_dir)), "", model, threads=threads
    )
