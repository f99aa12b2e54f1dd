"""Render the README's performance table from the benchmarks' records (`make bench` runs this last).

Each benchmark appends the rows it measured to ``.bench/results.jsonl`` (``bench/common.py:
record``). This script puts the newest record of each row into README.md between
``<!-- bench-table:start -->`` and ``<!-- bench-table:end -->``, so that the table is never
hand-edited. The table itself is the store of what was rendered before: ``.bench/`` is not
committed (and ``make clean`` removes it), so a row that has no record here (another machine
measured it, or its benchmark did not run) keeps its last rendered text, with the date and machine
of that measurement in its last column. A record older than the row already rendered does not
replace it (a stale local results file must not undo a newer figure from another machine).

    python scripts/bench_table.py [--results .bench/results.jsonl] [--readme README.md] [--check]
                                  [--drop WORK ...]

``--check`` writes nothing and exits 1 if the README would change; ``--drop`` removes a row whose
benchmark now records it under another name.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START = "<!-- bench-table:start -->"
END = "<!-- bench-table:end -->"
COLUMNS = ("work", "dicomflow", "peer (same run)", "ratio", "target", "met?", "date and machine")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
# A cell boundary is a pipe not escaped with a backslash (cells escape theirs when rendered).
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


class TableError(ValueError):
    """The README has no well-formed marked table (markers missing, doubled or out of order)."""


@dataclass(frozen=True)
class Row:
    cells: tuple[str, ...]  # rendered cells, one per column, pipes escaped

    @property
    def work(self) -> str:
        return self.cells[0]

    @property
    def date(self) -> str:
        found = _DATE.match(self.cells[-1])
        return found.group(0) if found else ""


def _escape(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _met(value: object) -> str:
    if value is None:
        return "no target"
    return "met" if value else "**not met**"


def row_from_record(entry: dict[str, object]) -> Row:
    """One table row from one record of ``bench/common.py: record``."""
    ours = str(entry.get("ours", ""))
    detail = str(entry.get("detail") or "")
    if detail:
        ours = f"{ours} ({detail})"
    cells = (
        str(entry["row"]),
        ours,
        str(entry.get("peer", "")),
        str(entry.get("ratio", "")),
        str(entry.get("target", "")),
        _met(entry.get("met")),
        f"{entry.get('date', '')}, {entry.get('machine', '')}".strip(", "),
    )
    return Row(tuple(_escape(c) for c in cells))


def read_records(path: Path) -> dict[str, dict[str, object]]:
    """The newest record of each row (the file is append-only: a later line is newer)."""
    newest: dict[str, dict[str, object]] = {}
    if not path.exists():
        return newest
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            # A benchmark killed mid-write leaves a torn line without its newline, and the next
            # record is appended to it: keep that record, skip the torn part, say where.
            print(f"bench_table: {path.name}:{number}: a torn record skipped", file=sys.stderr)
            tail = line.rfind('{"row"', 1)
            try:
                entry = json.loads(line[tail:]) if tail > 0 else None
            except ValueError:
                entry = None
        if not isinstance(entry, dict) or not isinstance(entry.get("row"), str):
            continue
        key = _escape(entry["row"])
        newest.pop(key, None)  # re-inserted last: rows first seen later keep their place
        newest[key] = entry
    return newest


def _split_region(text: str) -> tuple[str, str, str]:
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise TableError(f"README needs exactly one {START} ... {END} region")
    before, rest = text.split(START, 1)
    region, after = rest.split(END, 1)
    return before, region, after


def parse_rows(region: str) -> list[Row]:
    """The rows already rendered in the marked region (header and rule lines skipped)."""
    rows: list[Row] = []
    for line in region.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = tuple(c.strip() for c in _CELL_SPLIT.split(line.strip("|")))
        if cells == COLUMNS or all(set(c) <= set("-: ") for c in cells):
            continue
        if len(cells) != len(COLUMNS):
            raise TableError(f"a table row has {len(cells)} cells, expected {len(COLUMNS)}")
        rows.append(Row(cells))
    return rows


def merge(rendered: list[Row], records: dict[str, dict[str, object]]) -> list[Row]:
    """Rendered rows in their order, each replaced by its newest record unless that is older;
    rows only in the records follow, in the order they were first recorded."""
    fresh = {key: row_from_record(entry) for key, entry in records.items()}
    out: list[Row] = []
    for row in rendered:
        new = fresh.pop(row.work, None)
        out.append(new if new is not None and new.date >= row.date else row)
    out.extend(fresh.values())
    return out


def render(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(row.cells) + " |" for row in rows]
    return "\n" + "\n".join(lines) + "\n"


def update(
    readme_text: str, records: dict[str, dict[str, object]], drop: frozenset[str] = frozenset()
) -> str:
    """README text with its marked table regenerated from ``records``, without the rows in ``drop``."""
    before, region, after = _split_region(readme_text)
    rows = [row for row in merge(parse_rows(region), records) if row.work not in drop]
    return before + START + render(rows) + END + after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / ".bench" / "results.jsonl")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the README would change")
    parser.add_argument(
        "--drop", action="append", default=[], metavar="WORK", help="remove a row (renamed or retired)"
    )
    args = parser.parse_args(argv)
    old = args.readme.read_text(encoding="utf-8")
    records = read_records(args.results)
    try:
        new = update(old, records, frozenset(_escape(w) for w in args.drop))
    except TableError as error:
        print(f"bench_table: {error}", file=sys.stderr)
        return 2
    if new == old:
        print(f"bench_table: README table up to date ({len(records)} recorded row(s))")
        return 0
    if args.check:
        print("bench_table: README table is out of date (run scripts/bench_table.py)")
        return 1
    args.readme.write_text(new, encoding="utf-8")
    print(f"bench_table: README table regenerated from {len(records)} recorded row(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
