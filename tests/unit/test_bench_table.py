"""scripts/bench_table.py: the README's performance table, regenerated from the benchmarks' records."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench_table = _load("bench_table", ROOT / "scripts" / "bench_table.py")
bench_common = _load("bench_common", ROOT / "bench" / "common.py")

README = """# project

## Measured figures

Some prose that must survive.

<!-- bench-table:start -->
| work | dicomflow | peer (same run) | ratio | target | met? | date and machine |
| --- | --- | --- | --- | --- | --- | --- |
| upload 1 GiB | 8 s | boto3 8 s | 1.00x | >= 1.0x | met | 2026-11-22, 2 shared cores |
| de-identify a series | 0.42 s | gdcmanon 0.33 s | 0.79x | >= 1.2x | **not met** | 2026-11-22, 2 cores |
| a row with a pipe a \\| b | x | y | z | t | no target | 2026-12-30, other machine |
<!-- bench-table:end -->

## Next section

After.
"""


def _record(results: Path, **entry: object) -> None:
    with results.open("a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")


def test_records_replace_their_rows_and_other_rows_keep_their_text(tmp_path: Path) -> None:
    # Given a README whose table has three rows, and records for one of them (twice) and a new row
    readme, results = tmp_path / "README.md", tmp_path / "results.jsonl"
    readme.write_text(README, encoding="utf-8")
    common = {"target": ">= 1.2x", "detail": "", "machine": "x86_64, 2 cores, load 1.5"}
    _record(results, row="de-identify a series", ours="0.40 s", peer="gdcmanon 0.40 s", ratio="1.00x",
            met=False, date="2026-12-07", **common)  # fmt: skip
    _record(results, row="de-identify a series", ours="0.30 s", peer="gdcmanon 0.39 s", ratio="1.30x",
            met=True, date="2026-12-07", **common)  # fmt: skip
    results.open("a").write('{"row": "torn')  # a benchmark killed mid-write
    _record(results, row="analyze | 4D-CT", ours="5 s", peer="14 s", ratio="0.36x", target="<= 6 s",
            met=None, detail="load 2.0", date="2026-12-07", machine="x86_64, 2 cores, load 2.0")  # fmt: skip

    # When the table is regenerated
    assert bench_table.main(["--readme", str(readme), "--results", str(results)]) == 0
    text = readme.read_text(encoding="utf-8")

    # Then the newest record replaced its row in place, the unmeasured row kept its text and date,
    # the new row follows (its pipe escaped), and the prose around the markers is untouched
    lines = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert lines == [
        "| upload 1 GiB | 8 s | boto3 8 s | 1.00x | >= 1.0x | met | 2026-11-22, 2 shared cores |",
        "| de-identify a series | 0.30 s | gdcmanon 0.39 s | 1.30x | >= 1.2x | met | "
        "2026-12-07, x86_64, 2 cores, load 1.5 |",
        "| a row with a pipe a \\| b | x | y | z | t | no target | 2026-12-30, other machine |",
        "| analyze \\| 4D-CT | 5 s (load 2.0) | 14 s | 0.36x | <= 6 s | no target | "
        "2026-12-07, x86_64, 2 cores, load 2.0 |",
    ]
    assert text.startswith("# project\n\n## Measured figures\n\nSome prose that must survive.\n\n")
    assert text.endswith("<!-- bench-table:end -->\n\n## Next section\n\nAfter.\n")

    # And a second run with the same records changes nothing (the table is its own store)
    assert bench_table.main(["--readme", str(readme), "--results", str(results), "--check"]) == 0
    # And without any records (a fresh clone, .bench/ removed) every row survives as rendered
    assert bench_table.main(["--readme", str(readme), "--results", str(tmp_path / "none")]) == 0
    assert readme.read_text(encoding="utf-8") == text
    # And a retired row goes only when asked to
    assert (
        bench_table.main(["--readme", str(readme), "--results", str(results), "--drop", "upload 1 GiB"]) == 0
    )
    assert "| upload 1 GiB |" not in readme.read_text(encoding="utf-8")


def test_an_older_record_does_not_replace_a_newer_row(tmp_path: Path) -> None:
    # Given a row rendered from a measurement of 2026-12-30, and a local record of that row from before
    readme, results = tmp_path / "README.md", tmp_path / "results.jsonl"
    readme.write_text(README, encoding="utf-8")
    _record(results, row="a row with a pipe a | b", ours="old", peer="old", ratio="old", target="t",
            met=True, detail="", date="2026-12-01", machine="m")  # fmt: skip

    # When the table is regenerated, then nothing changes
    assert bench_table.main(["--readme", str(readme), "--results", str(results), "--check"]) == 0


def test_a_record_from_bench_common_is_rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a record written by the benchmarks' own record()
    monkeypatch.setattr(bench_common, "WORK", tmp_path)
    monkeypatch.setattr(bench_common, "RESULTS", tmp_path / "results.jsonl")
    bench_common.record(
        "upload 1 GiB", ours="7 s", peer="boto3 8 s", ratio="1.14x", target=">= 1.0x", met=True
    )
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")

    # When the table is regenerated, then --check sees the change and the row carries its stamp
    args = ["--readme", str(readme), "--results", str(tmp_path / "results.jsonl")]
    assert bench_table.main([*args, "--check"]) == 1
    assert bench_table.main(args) == 0
    row = next(line for line in readme.read_text().splitlines() if line.startswith("| upload 1 GiB"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:6] == ["upload 1 GiB", "7 s", "boto3 8 s", "1.14x", ">= 1.0x", "met"]
    assert cells[6].endswith(" cores, load " + cells[6].rsplit("load ", 1)[1])
    assert bench_table._DATE.match(cells[6])


def test_a_readme_without_markers_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no table here\n", encoding="utf-8")
    assert bench_table.main(["--readme", str(readme), "--results", str(tmp_path / "none")]) == 2
    assert readme.read_text() == "# no table here\n"
