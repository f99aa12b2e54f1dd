"""Lung analysis of the default 4D-CT phantom (issue 5's acceptance figures), in one run.

Inputs: ``dicomflow phantom`` with its defaults (10 phases x 150 slices x 512^2), single-frame CT
and enhanced multi-frame (one file per phase), generated once and cached in ``.bench/analyze/inputs/``
by parameters.

Measured, one after the other, on the same warm input:

- ``dicomflow analyze SCAN_DIR OUT_DIR --threads 2``: the whole analysis (read, model, metrics,
  SEG, SR, PNG) as a plain process: wall time and peak RSS (process tree) against the targets
  (<= 30 s, < 4 GB), as ratios;
- the peer for the hot part, reading and assembling the HU volumes: a plain pydicom script
  (``dcmread`` + ``pixel_array`` + float64 rescale + ``np.stack`` per phase, the way most analysis
  scripts do it), against dicomflow's own read stage (from ``timings_s`` in results.json) and
  against dicomflow's whole analysis (single-frame only: the script places images by their own
  Image Position);
- accuracy against the phantom's ``ground_truth.json``: lung volume per phase (target within 3 %),
  tidal volume (5 %), defect percent (3 points).

``ANALYZE_BENCH_QUICK=1`` uses a small phantom (for trying the benchmark, not for figures).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import BIN, WORK, header, measure

HERE = WORK / "analyze"
QUICK = os.environ.get("ANALYZE_BENCH_QUICK") == "1"
PHASES, SLICES, SIZE = (10, 150, 512) if not QUICK else (4, 30, 128)
TARGET_WALL_S = 30.0
TARGET_RSS_MB = 4096.0

# The peer: what a typical script does with pydicom alone (the whole pixel path, float64 HU).
NAIVE_READ = r"""
import sys, collections, numpy as np, pydicom, pathlib
phases = collections.defaultdict(list)
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.dcm")):
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    phases[ds.SeriesInstanceUID].append((float(ds.ImagePositionPatient[2]), hu))
volumes = [np.stack([hu for _, hu in sorted(s, key=lambda t: t[0])]) for s in phases.values()]
print(len(volumes), volumes[0].shape, volumes[0].dtype)
"""


def _phantom(multiframe: bool) -> Path:
    layout = "mf" if multiframe else "sf"
    root = HERE / "inputs" / f"{layout}_p{PHASES}_s{SLICES}_n{SIZE}"
    done = root / ".complete"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        cmd = [BIN / "dicomflow", "phantom", root, "--phases", PHASES, "--slices", SLICES, "--size", SIZE]
        cmd += ["--multiframe"] if multiframe else []
        print(f"generating {root.name} (cached for later runs) ...", flush=True)
        start = time.perf_counter()
        subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL)
        print(f"  generated in {time.perf_counter() - start:.1f} s", flush=True)
        done.write_text("")
    return root


def _warm(root: Path) -> tuple[int, int]:
    total = files = 0
    for path in sorted(root.rglob("*.dcm")):
        total += len(path.read_bytes())
        files += 1
    return total, files


def _case(multiframe: bool) -> bool:
    layout = "enhanced multi-frame, one file per phase" if multiframe else "single-frame CT"
    header(f"analyze: 4D-CT phantom {PHASES} phases x {SLICES} slices x {SIZE}^2 ({layout}), 2 threads")
    scan = _phantom(multiframe)
    size, files = _warm(scan)
    out = HERE / ("out_mf" if multiframe else "out")
    shutil.rmtree(out, ignore_errors=True)
    ours = measure("dicomflow analyze", [BIN / "dicomflow", "analyze", scan, out, "--threads", "2"])
    results = json.loads((out / "results.json").read_text())
    read_s = results["timings_s"]["read_s"]
    # The peer script places single-frame images only (Image Position of each file).
    peer = None if multiframe else measure("pydicom naive read", [sys.executable, "-c", NAIVE_READ, scan])

    print(f"input: {size / 1e6:.0f} MB in {files} files")
    print(f"{'run':<34}{'wall s':>9}{'peak RSS MB':>14}")
    print(f"{'dicomflow analyze (whole)':<34}{ours.wall_s:>9.2f}{ours.peak_tree_mb:>14.0f}")
    print(f"{'  of which read + assemble':<34}{read_s:>9.2f}{'':>14}")
    if peer is not None:
        print(f"{'pydicom naive read + assemble':<34}{peer.wall_s:>9.2f}{peer.peak_tree_mb:>14.0f}")
    stages = ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in results["timings_s"].items())
    print(f"dicomflow stages (s): {stages}")
    print(
        f"targets: wall {ours.wall_s:.1f} s / {TARGET_WALL_S:.0f} s = {ours.wall_s / TARGET_WALL_S:.2f}x "
        f"({'met' if ours.wall_s <= TARGET_WALL_S else 'MISSED'}); peak RSS {ours.peak_tree_mb:.0f} MB / "
        f"{TARGET_RSS_MB:.0f} MB = {ours.peak_tree_mb / TARGET_RSS_MB:.2f}x "
        f"({'met' if ours.peak_tree_mb < TARGET_RSS_MB else 'MISSED'})"
    )
    if peer is not None:
        print(
            f"ratios vs the pydicom peer: read stage {read_s / peer.wall_s:.2f}x its time; "
            f"whole analysis {ours.wall_s / peer.wall_s:.2f}x its read-only time; "
            f"peak RSS {ours.peak_tree_mb / peer.peak_tree_mb:.2f}x"
        )

    truth = json.loads((scan / "ground_truth.json").read_text())
    errors = [
        100 * (got - want) / want
        for got, want in zip(results["lung_volume_ml"], truth["lung_volume_ml"], strict=True)
    ]
    tidal_error = 100 * (results["tidal_volume_ml"] - truth["tidal_volume_ml"]) / truth["tidal_volume_ml"]
    defect_points = results["ventilation"]["defect_percent"] - truth["defect_percent"]
    worst = max(errors, key=abs)
    ok = abs(worst) <= 3 and abs(tidal_error) <= 5 and abs(defect_points) <= 3
    print(
        f"accuracy: lung volume worst phase {worst:+.2f} % (target 3 %), tidal volume {tidal_error:+.2f} % "
        f"(5 %), defect {results['ventilation']['defect_percent']:.2f} vs {truth['defect_percent']:.2f} = "
        f"{defect_points:+.2f} points (3) -> {'met' if ok else 'MISSED'}"
    )
    return ok and ours.wall_s <= TARGET_WALL_S and ours.peak_tree_mb < TARGET_RSS_MB


def main() -> int:
    met = [_case(multiframe) for multiframe in (False, True)]
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
