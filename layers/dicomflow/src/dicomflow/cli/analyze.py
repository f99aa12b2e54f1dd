"""``dicomflow analyze SCAN_DIR OUT_DIR``: the lung analysis of a local scan folder.

Writes ``results.json``, ``seg.dcm`` (DICOM SEG), ``sr.dcm`` (TID 1500 SR) and ``preview.png`` into
OUT_DIR and prints a summary. ``--model PATH --model-sha256 HEX`` runs another ONNX model with the
declared contract instead of the packaged reference model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="lung analysis of a 4D-CT scan folder (results.json, SEG, SR, PNG)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scan_dir", type=Path, metavar="SCAN_DIR", help="folder of the scan's DICOM files")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder for the outputs (created)")
    parser.add_argument("--model", type=Path, help="an ONNX model to use instead of the packaged one")
    parser.add_argument("--model-sha256", help="the SHA-256 the --model file must have")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: the cores)")
    parser.add_argument("--scan-id", default=None, help="scan id to record in results.json")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicomflow.analysis.model import resolve_model
    from dicomflow.analysis.pipeline import analyze_scan
    from dicomflow.errors import InvalidInputError
    from dicomflow.storage import LocalObjectStore

    if not args.scan_dir.is_dir():
        raise InvalidInputError("SCAN_DIR is not a folder")
    spec = resolve_model(args.model, args.model_sha256)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results = analyze_scan(
        LocalObjectStore(args.scan_dir),
        "",
        LocalObjectStore(args.out_dir),
        "",
        spec,
        scan_id=args.scan_id,
        threads=args.threads,
    )
    vent = results["ventilation"]
    summary = {
        "lung_volume_ml": [round(v, 1) for v in results["lung_volume_ml"]],
        "tidal_volume_ml": round(results["tidal_volume_ml"], 1),
        "ventilation_defect_percent": round(vent["defect_percent"], 2),
        "ventilation_heterogeneity_cv": round(vent["heterogeneity_cv"], 3),
        "model": f"{results['model']['name']} {results['model']['version']}",
        "total_s": results["timings_s"]["total_s"],
        "out_dir": str(args.out_dir),
    }
    print(json.dumps(summary))
    return 0
