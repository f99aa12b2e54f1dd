"""``dicomflow phantom OUT_DIR``: write a breathing 4D-CT thorax with known ground truth.

See :mod:`dicomflow.phantom` for the geometry, the HU model and the files written.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "phantom",
        help="write a synthetic 4D-CT scan (a breathing thorax) with ground_truth.json and manifest.json",
        description="Write a synthetic 4D-CT scan: one series per respiratory phase, single-frame CT "
        "slices (phase_PP/slice_SSSS.dcm) or one enhanced multi-frame CT file per phase "
        "(phase_PP.dcm), plus ground_truth.json and manifest.json.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write into (created if missing)")
    parser.add_argument("--phases", type=_positive_int, default=10, help="respiratory phases (default 10)")
    parser.add_argument("--slices", type=_positive_int, default=150, help="slices per phase (default 150)")
    parser.add_argument("--size", type=_positive_int, default=512, help="rows = columns (default 512)")
    parser.add_argument(
        "--multiframe", action="store_true", help="one Enhanced CT Image file per phase instead of slices"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of identity, UIDs and noise (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicomflow.phantom import generate_phantom

    result = generate_phantom(
        args.out_dir,
        phases=args.phases,
        slices=args.slices,
        size=args.size,
        multiframe=args.multiframe,
        seed=args.seed,
    )
    print(
        f"wrote {result.file_count} files, {result.bytes_written / 1e6:.1f} MB to {result.out_dir} "
        f"(tidal volume {result.tidal_volume_ml:.0f} mL, defect {result.defect_percent:.1f} %)"
    )
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text}")
    return value
