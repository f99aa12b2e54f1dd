"""``dicomflow phantom OUT_DIR``: write a breathing 4D-CT thorax with known ground truth.

See :mod:`dicomflow.phantom` for the geometry, the HU model and the files written. OUT_DIR must be
new or empty (one folder is one scan: a smaller phantom over a bigger one would leave stale phases
beside it); ``--force`` clears it first. The numbers are checked while parsing, so a bad one leaves
nothing behind.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
from pathlib import Path
from typing import Any

from dicomflow.cli.numbers import int_range, non_negative_int


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "phantom",
        help="write a synthetic 4D-CT scan (a breathing thorax) with ground_truth.json and manifest.json",
        description="Write a synthetic 4D-CT scan: one series per respiratory phase, single-frame CT "
        "slices (phase_PP/slice_SSSS.dcm) or one enhanced multi-frame CT file per phase "
        "(phase_PP.dcm), plus ground_truth.json and manifest.json.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="a new or empty folder to write into (created)")
    parser.add_argument(
        "--phases", type=int_range(1, 100), default=10, help="respiratory phases, 1-100 (default 10)"
    )
    parser.add_argument(
        "--slices", type=int_range(2, 20_000), default=150, help="slices per phase, 2-20000 (default 150)"
    )
    parser.add_argument(
        "--size", type=int_range(16, 2048), default=512, help="rows = columns, 16-2048 (default 512)"
    )
    parser.add_argument(
        "--multiframe", action="store_true", help="one Enhanced CT Image file per phase instead of slices"
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of identity, UIDs and noise, >= 0 (default 0)"
    )
    parser.add_argument("--force", action="store_true", help="clear OUT_DIR first if it is not empty")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicomflow.cli.paths import check_output_dir, make_output_dir
    from dicomflow.phantom import generate_phantom

    out = Path(args.out_dir)
    check_output_dir(out, force=args.force, flag="OUT_DIR")
    created = not out.exists()
    make_output_dir(out, flag="OUT_DIR")
    try:
        result = generate_phantom(
            out,
            phases=args.phases,
            slices=args.slices,
            size=args.size,
            multiframe=args.multiframe,
            seed=args.seed,
        )
    except BaseException:
        # Half a phantom is no scan: leave nothing (the folder too, if this run made it).
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            with contextlib.suppress(Exception):
                make_output_dir(out, flag="OUT_DIR")
        raise
    print(
        f"wrote {result.file_count} files, {result.bytes_written / 1e6:.1f} MB to {result.out_dir} "
        f"(tidal volume {result.tidal_volume_ml:.0f} mL, defect {result.defect_percent:.1f} %)"
    )
    return 0
