"""Run the benchmarks: `make bench` (all) or `make bench BENCH="phantom deid"`.

Each ``bench/bench_<name>.py`` has a ``main() -> int``; figures and the peers' figures are printed
side by side, with ratios.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv: list[str]) -> int:
    available = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    wanted = argv or available
    unknown = set(wanted) - set(available)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; available: {', '.join(available)}")
        return 2
    status = 0
    for name in wanted:
        status |= int(importlib.import_module(f"bench_{name}").main() or 0)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
