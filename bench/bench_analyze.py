"""Lung analysis of the default 4D-CT phantom (issue 16's row: <= 6 s, <= 1 GB), in one run.

Inputs: ``dicomflow phantom`` with its defaults (10 phases x 150 slices x 512^2), single-frame CT
and enhanced multi-frame (one file per phase), generated once and cached in ``.bench/analyze/inputs/``
by parameters.

Measured in interleaved rounds (``ANALYZE_BENCH_ROUNDS``, default 3) on the same warm input, each
as a plain process (wall time, peak RSS of the process tree):

- ours: ``analyze_directory(SCAN_DIR, OUT_DIR, threads=2)`` in a plain Python process, the whole
  analysis (read, model, metrics, SEG, SR, PNG);
- the reference: the previous implementation (pydicom per file, all phases in memory, the model on
  whole phases), the package as of commit ``REFERENCE_COMMIT`` taken out with ``git archive`` and run
  by the same script (``PYTHONPATH``); skipped (and said so) where git or that commit is not at hand;
- once, ``dicomflow analyze SCAN_DIR OUT_DIR --threads 2`` (what a user types: the command's own
  checks of the scan folder come on top; ``--allow-identified`` where the command has it, since the
  phantom is not de-identified);
- once, the peer for the hot part, reading and assembling the HU volumes: a plain pydicom script
  (``dcmread`` + ``pixel_array`` + float64 rescale + ``np.stack`` per phase, the way most analysis
  scripts do it; single-frame only: the script places images by their own Image Position).

Printed: best and median of each, ours against the targets and against the reference as ratios,
the machine's load (``uptime``) before and after, the results compared with the reference's
(counts identical, other numbers within ``FLOAT_TOLERANCE`` relative), and accuracy against the
phantom's ``ground_truth.json``: lung volume per phase (3 %), tidal volume (5 %), defect percent
(3 points).

``ANALYZE_BENCH_QUICK=1`` uses a small phantom (for trying the benchmark, not for figures).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import BIN, ROOT, WORK, Measurement, header, measure, record

HERE = WORK / "analyze"
QUICK = os.environ.get("ANALYZE_BENCH_QUICK") == "1"
ROUNDS = max(1, int(os.environ.get("ANALYZE_BENCH_ROUNDS", "3")))
PHASES, SLICES, SIZE = (10, 150, 512) if not QUICK else (4, 30, 128)
TARGET_WALL_S = 6.0
TARGET_RSS_MB = 1000.0
#: The implementation before issue 16 (every file parsed by pydicom, all phases held, whole-phase runs).
REFERENCE_COMMIT = "b06ff1a1a583acd54595c51cb4cf2aeeed11c1fe"
#: Results that may differ from the reference's: the per-phase lung air fraction is now the
#: lung-voxel-weighted mean of float32 slab means (the whole-phase float32 sum rounded differently,
#: about 1e-7 relative), and what follows from it as the reference air fraction (SV statistics,
#: about 1e-6). Counts (lung and defect voxels, hence volumes and defect percent) must be identical.
FLOAT_TOLERANCE = 1e-5

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

ANALYZE_RUN = r"""
import sys
from dicomflow.analysis.pipeline import analyze_directory
analyze_directory(sys.argv[1], sys.argv[2], threads=int(sys.argv[3]))
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


def _reference_src() -> Path | None:
    """The previous implementation's package source, taken out of git once."""
    target = HERE / "reference" / REFERENCE_COMMIT[:12]
    src = target / "layers" / "dicomflow" / "src"
    if (target / ".complete").exists():
        return src
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", REFERENCE_COMMIT, "layers/dicomflow/src"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError):
        shutil.rmtree(target, ignore_errors=True)
        return None
    (target / ".complete").write_text("")
    return src


def _cli_command(scan: Path, out: Path) -> list[str | os.PathLike[str]]:
    command: list[str | os.PathLike[str]] = [BIN / "dicomflow", "analyze", scan, out, "--threads", "2"]
    usage = subprocess.run([BIN / "dicomflow", "analyze", "--help"], capture_output=True, text=True)
    if "--allow-identified" in usage.stdout:
        command.append("--allow-identified")
    return command


def _warm(root: Path) -> tuple[int, int]:
    total = files = 0
    for path in sorted(root.rglob("*.dcm")):
        total += len(path.read_bytes())
        files += 1
    return total, files


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "uptime unavailable"


def _summary(runs: list[Measurement]) -> tuple[float, float, float, float]:
    walls = [r.wall_s for r in runs]
    rss = [r.peak_tree_mb for r in runs]
    return min(walls), statistics.median(walls), min(rss), statistics.median(rss)


def _compare(ours: dict[str, Any], theirs: dict[str, Any]) -> tuple[list[str], float]:
    """Differences beyond the tolerance (paths), and the largest relative difference of a float."""
    problems: list[str] = []
    worst = 0.0

    def walk(a: Any, b: Any, path: str) -> None:
        nonlocal worst
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if key in ("timings_s", "outputs"):
                    continue
                if key not in a or key not in b:
                    problems.append(f"{path}/{key} missing")
                    continue
                walk(a[key], b[key], f"{path}/{key}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{path}[{i}]")
        elif isinstance(a, float) and isinstance(b, float) and a != b:
            relative = abs(a - b) / max(abs(b), 1e-300)
            worst = max(worst, relative)
            if relative > FLOAT_TOLERANCE:
                problems.append(f"{path}: {a!r} vs {b!r}")
        elif a != b:
            problems.append(f"{path}: {a!r} vs {b!r}")

    walk(ours, theirs, "")
    return problems, worst


def _case(multiframe: bool, reference_src: Path | None) -> bool:
    layout = "enhanced multi-frame, one file per phase" if multiframe else "single-frame CT"
    header(f"analyze: 4D-CT phantom {PHASES} phases x {SLICES} slices x {SIZE}^2 ({layout}), 2 threads")
    scan = _phantom(multiframe)
    size, files = _warm(scan)
    out = HERE / ("out_mf" if multiframe else "out")
    ref_out = HERE / ("ref_out_mf" if multiframe else "ref_out")
    print(f"input: {size / 1e6:.0f} MB in {files} files; {ROUNDS} rounds", flush=True)
    print(f"load before: {_uptime()}", flush=True)
    ours: list[Measurement] = []
    reference: list[Measurement] = []
    for _ in range(ROUNDS):
        shutil.rmtree(out, ignore_errors=True)
        ours.append(measure("dicomflow", [sys.executable, "-c", ANALYZE_RUN, scan, out, "2"]))
        if reference_src is not None:
            shutil.rmtree(ref_out, ignore_errors=True)
            env = {**os.environ, "PYTHONPATH": str(reference_src)}
            reference.append(
                measure("reference", [sys.executable, "-c", ANALYZE_RUN, scan, ref_out, "2"], env=env)
            )
    cli_out = HERE / ("cli_out_mf" if multiframe else "cli_out")
    shutil.rmtree(cli_out, ignore_errors=True)
    cli = measure("dicomflow analyze", _cli_command(scan, cli_out), check=False)
    # The peer script places single-frame images only (Image Position of each file); one run: it is slow.
    peer = None if multiframe else measure("pydicom naive read", [sys.executable, "-c", NAIVE_READ, scan])
    print(f"load after: {_uptime()}")

    results = json.loads((out / "results.json").read_text())
    print(f"{'run':<40}{'best s':>8}{'median s':>10}{'best MB':>9}{'median MB':>11}")

    def row(name: str, runs: list[Measurement]) -> tuple[float, float]:
        best, median, rss_best, rss_median = _summary(runs)
        print(f"{name:<40}{best:>8.2f}{median:>10.2f}{rss_best:>9.0f}{rss_median:>11.0f}")
        return median, rss_median

    o_med, o_rss_med = row("dicomflow analysis (whole)", ours)
    if reference:
        r_med, r_rss_med = row("previous implementation (whole)", reference)
    else:
        print(f"previous implementation: not run (commit {REFERENCE_COMMIT[:12]} not at hand)")
    if cli.returncode == 0:
        print(f"{'dicomflow analyze CLI (1 run)':<40}{cli.wall_s:>8.2f}{'':>10}{cli.peak_tree_mb:>9.0f}")
    else:
        print(f"dicomflow analyze CLI: exited {cli.returncode} (not timed)")
    if peer is not None:
        name = "pydicom naive read + assemble (1 run)"
        print(f"{name:<40}{peer.wall_s:>8.2f}{'':>10}{peer.peak_tree_mb:>9.0f}")
    stages = ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in results["timings_s"].items())
    print(f"dicomflow stages, last round (s): {stages}")
    met_wall = o_med <= TARGET_WALL_S
    met_rss = o_rss_med <= TARGET_RSS_MB
    print(
        f"targets (medians): wall {o_med:.2f} s / {TARGET_WALL_S:.0f} s = {o_med / TARGET_WALL_S:.2f}x "
        f"({'met' if met_wall else 'MISSED'}); peak RSS {o_rss_med:.0f} MB / {TARGET_RSS_MB:.0f} MB = "
        f"{o_rss_med / TARGET_RSS_MB:.2f}x ({'met' if met_rss else 'MISSED'})"
    )
    same = True
    if reference:
        print(
            f"vs the previous implementation (medians): wall {o_med / r_med:.2f}x its time "
            f"(speed-up {r_med / o_med:.1f}x); peak RSS {o_rss_med / r_rss_med:.2f}x its peak"
        )
        problems, worst = _compare(results, json.loads((ref_out / "results.json").read_text()))
        same = not problems
        print(
            f"results vs the previous implementation: "
            f"{'same' if same else 'DIFFERENT: ' + '; '.join(problems[:5])} (counts identical, largest "
            f"relative difference of a float {worst:.1e}, tolerance {FLOAT_TOLERANCE:.0e})"
        )
    if peer is not None:
        print(f"vs the pydicom read-only peer: whole analysis {o_med / peer.wall_s:.2f}x its time")

    truth = json.loads((scan / "ground_truth.json").read_text())
    errors = [
        100 * (got - want) / want
        for got, want in zip(results["lung_volume_ml"], truth["lung_volume_ml"], strict=True)
    ]
    tidal_error = 100 * (results["tidal_volume_ml"] - truth["tidal_volume_ml"]) / truth["tidal_volume_ml"]
    defect_points = results["ventilation"]["defect_percent"] - truth["defect_percent"]
    worst_phase = max(errors, key=abs)
    ok = abs(worst_phase) <= 3 and abs(tidal_error) <= 5 and abs(defect_points) <= 3
    print(
        f"accuracy: lung volume worst phase {worst_phase:+.2f} % (target 3 %), tidal volume "
        f"{tidal_error:+.2f} % (5 %), defect {results['ventilation']['defect_percent']:.2f} vs "
        f"{truth['defect_percent']:.2f} = {defect_points:+.2f} points (3) -> {'met' if ok else 'MISSED'}"
    )
    o_best, _, _, _ = _summary(ours)
    peers = []
    if reference:
        peers.append(f"the previous implementation {r_med:.2f} s, {r_rss_med:.0f} MB")
    if peer is not None:
        peers.append(f"pydicom read-only peer {peer.wall_s:.1f} s, {peer.peak_tree_mb:.0f} MB")
    if QUICK:  # a small phantom is not the row's figure
        return ok and same and met_wall and met_rss
    record(
        f"analyze the default 4D-CT ({PHASES} x {SLICES} x {SIZE}x{SIZE}), "
        + ("enhanced multi-frame" if multiframe else "single-frame"),
        ours=f"{o_med:.2f} s median (best {o_best:.2f} s), {o_rss_med:.0f} MB ({ROUNDS} rounds)",
        peer="; ".join(peers) or "none at hand",
        ratio=(
            f"{o_med / r_med:.2f}x the previous implementation's time, "
            f"{o_rss_med / r_rss_med:.2f}x its memory"
            if reference
            else f"{o_med / TARGET_WALL_S:.2f}x the target time"
        ),
        target=f"<= {TARGET_WALL_S:.0f} s, <= {TARGET_RSS_MB / 1000:.0f} GB",
        met=met_wall and met_rss,
        detail=(
            f"accuracy {'met' if ok else 'MISSED'}, results "
            f"{'same as' if same else 'DIFFERENT from'} the reference's"
        ),
    )
    return ok and same and met_wall and met_rss


def main() -> int:
    reference_src = _reference_src()
    met = [_case(multiframe, reference_src) for multiframe in (False, True)]
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
