"""Phantom benchmark (issue 2): the default 4D-CT phantom (10 x 150 x 512^2), single-frame and
enhanced multi-frame, against the targets (< 60 s, < 300 MB peak) and against `cp -r` of the same
bytes (the floor for writing that much data on this disk)."""

from __future__ import annotations

import shutil

from common import BIN, WORK, header, measure, record

TARGET_S = 60.0
TARGET_MB = 300.0


def main() -> int:
    header("phantom: dicomflow phantom OUT --phases 10 --slices 150 --size 512 [--multiframe]")
    root = WORK / "phantom"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    status = 0
    for layout, extra in (("single-frame", []), ("multi-frame", ["--multiframe"])):
        out = root / layout
        ours = measure(f"phantom {layout}", [BIN / "dicomflow", "phantom", out, *extra])
        written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
        copy = measure("cp -r", ["cp", "-r", out, root / f"{layout}-copy"])
        ok = ours.wall_s < TARGET_S and ours.peak_tree_mb < TARGET_MB
        status |= 0 if ok else 1
        print(
            f"phantom {layout}: {ours.wall_s:.1f} s, {written:.0f} MB, {written / ours.wall_s:.0f} MB/s, "
            f"peak RSS {ours.peak_tree_mb:.0f} MB (all processes; largest one {ours.peak_rss_mb:.0f} MB) | "
            f"cp -r {copy.wall_s:.1f} s: {ours.wall_s / copy.wall_s:.1f}x cp | "
            f"targets 60 s, 300 MB: {ours.wall_s / TARGET_S:.2f}x, {ours.peak_tree_mb / TARGET_MB:.2f}x "
            f"-> {'met' if ok else 'MISSED'}",
            flush=True,
        )
        record(
            f"phantom, 10 x 150 x 512² {layout}",  # the row's name: the same from run to run
            ours=f"{ours.wall_s:.1f} s for {written:.0f} MB, {ours.peak_tree_mb:.0f} MB RSS (all processes)",
            peer=f"`cp -r` {copy.wall_s:.1f} s",
            ratio=f"{ours.wall_s / copy.wall_s:.0f}x cp",
            target="< 60 s, < 300 MB",
            met=ok,
        )
        shutil.rmtree(root / f"{layout}-copy", ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
