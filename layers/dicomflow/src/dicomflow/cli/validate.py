"""``dicomflow validate PATH...``: header-only validation of files, directories and whole scans.

Every file named, and every file under a directory named (hidden files skipped), is validated from
its header on a process pool (both cores by default). With ``--manifest``, the manifest defines the
scan: its files are checked for size and SHA-256, missing ones reject the scan, files it does not
declare are reported (a warning) but not validated, and the scan rules run over all its files.
``--scan`` runs the scan rules without a manifest. The JSON report goes to stdout or ``--report``;
the exit status is 0 only if every file (and the scan, when checked) is accepted.

A single folder holding a ``manifest.json`` is a scan: its manifest is used as if given with
``--manifest``. The files that sit beside a scan without being part of it are never validated as
DICOM: ``manifest.json``, ``ground_truth.json`` (a phantom's), the upload journal and the report
being written. No file to validate (an empty folder) is an error, not an accepted scan.

File names in the report are as given on the command line or relative to the directory named (or
to the manifest's folder): they are the operator's own paths, never read from the files.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from dicomflow.cli.numbers import processes
from dicomflow.cli.workers import map_in_workers
from dicomflow.manifest import is_scan_file


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="validate DICOM files and scans from their headers (JSON report, exit 0 if all accepted)",
        description="Check DICOM conformance from each file's header (preamble, file meta, transfer "
        "syntax, UIDs, SOP class, pixel data length, size) and, with --manifest or --scan, the scan as "
        "a whole (one patient and study, phases x slices, positions, orientation, spacing).",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or directories")
    parser.add_argument(
        "--manifest", metavar="MANIFEST", help="manifest.json: check sizes, SHA-256 and the scan as a whole"
    )
    parser.add_argument(
        "--scan", action="store_true", help="check the files as one scan (without a manifest)"
    )
    parser.add_argument("--report", metavar="FILE", help="write the JSON report here instead of stdout")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --report file")
    parser.add_argument(
        "--allow-sop-class",
        metavar="UID",
        action="append",
        default=[],
        help="accept this SOP class too (repeatable); default: CT, Enhanced CT, Legacy Converted Enhanced CT",
    )
    parser.add_argument(
        "--jobs", type=processes, default=os.cpu_count() or 1, help="worker processes (default: one per core)"
    )
    parser.add_argument(
        "--summaries",
        action="store_true",
        help="include each file's scan summary (hashes, positions) in the report",
    )
    parser.set_defaults(func=run)


def _collect(paths: list[str], base: Path | None, skip: set[Path]) -> list[tuple[str, Path]]:
    """(report name, path) of every file to validate, in a stable order."""
    out: list[tuple[str, Path]] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            root = base if base is not None else path
            for found in sorted(path.rglob("*")):
                if not is_scan_file(found.relative_to(path)) or found.resolve() in skip or found.is_dir():
                    continue
                out.append((_name(found, root), found))
        else:
            out.append((_name(path, base) if base is not None else given, path))
    return out


def _name(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _validate_one(job: tuple[str, str, int | None, str | None, list[str], str]) -> dict[str, Any]:
    """Worker: one file's report as a dict (small and picklable)."""
    from dicomflow.validation import FilePolicy, validate_file

    name, path, size, sha256, extra_classes, salt = job
    policy = FilePolicy().with_allowed(extra_classes)
    report = validate_file(
        path, name=name, expected_size=size, expected_sha256=sha256, policy=policy, salt=salt
    )
    return report.to_dict()


def _lost(job: tuple[Any, ...], reason: str) -> dict[str, Any]:
    """The report of a file whose worker died before validating it: rejected, with the reason."""
    from dicomflow.validation import Finding, ValidationReport

    return ValidationReport(job[0], (Finding("WORKER_DIED", reason),)).to_dict()


def run(args: argparse.Namespace) -> int:
    from dicomflow.cli.paths import check_new_file, resolved, write_text_atomic
    from dicomflow.errors import InvalidInputError
    from dicomflow.manifest import ScanManifest
    from dicomflow.validation import Finding, Severity, ValidationReport, validate_scan

    missing = [given for given in args.paths if not Path(given).exists()]
    if missing:
        more = f" (and {len(missing) - 1} more path(s))" if missing[1:] else ""
        raise InvalidInputError(f"{missing[0]} does not exist{more}")
    if args.report:
        check_new_file(args.report, force=args.force, flag="--report")
    manifest = None
    base: Path | None = None
    skip: set[Path] = set()
    manifest_arg = args.manifest
    if manifest_arg is None and len(args.paths) == 1 and (Path(args.paths[0]) / "manifest.json").is_file():
        manifest_arg = str(Path(args.paths[0]) / "manifest.json")  # a scan folder: its own manifest
    if manifest_arg:
        manifest_path = Path(manifest_arg)
        if not manifest_path.is_file():
            raise InvalidInputError(
                f"--manifest {manifest_arg} "
                + ("is a folder: give its manifest.json" if manifest_path.is_dir() else "does not exist")
            )
        try:
            manifest = ScanManifest.load(manifest_path)
        except OSError as exc:
            raise InvalidInputError(f"cannot read --manifest {manifest_arg}: {exc.strerror}") from None
        base = manifest_path.parent
        skip.add(manifest_path.resolve())
    if args.report:
        skip.add(resolved(args.report))  # a report from an earlier run, in the folder validated
    files = _collect(args.paths, base, skip)
    if not files and manifest is None:
        raise InvalidInputError(
            f"the scan is empty: no files to validate in {' '.join(args.paths)}; give the folder of its "
            "DICOM files"
        )

    undeclared: list[str] = []
    declared = {f.name: f for f in manifest.files} if manifest is not None else None
    jobs = []
    # One random salt per run: the identity digests in summaries only need to compare within it.
    salt = secrets.token_hex(16)
    for name, path in files:
        entry = declared.get(name) if declared is not None else None
        if declared is not None and entry is None:
            undeclared.append(name)
            continue
        size = entry.size if entry is not None else None
        sha = entry.sha256 if entry is not None else None
        jobs.append((name, str(path), size, sha, list(args.allow_sop_class), salt))

    workers = max(1, min(args.jobs, len(jobs)))
    chunk = max(1, len(jobs) // (workers * 8))
    results = map_in_workers(_validate_one, jobs, workers, _lost, chunk)
    reports = [ValidationReport.from_dict(r) for r in results]

    scan_report = None
    if manifest is not None or args.scan:
        scan_report = validate_scan(reports, manifest=manifest)
        if undeclared:
            scan_report = scan_report.with_findings(
                [
                    Finding(
                        "FILE_UNDECLARED",
                        f"{len(undeclared)} file(s) in the folder are not in the manifest and were not "
                        "validated (they are not part of the scan)",
                        severity=Severity.WARNING,
                    )
                ]
            )
    accepted = sum(1 for r in reports if r.accepted)
    ok = accepted == len(reports) and (scan_report is None or scan_report.accepted)
    out: dict[str, Any] = {
        "verdict": "accepted" if ok else "rejected",
        "files_checked": len(reports),
        "files_accepted": accepted,
        "files_rejected": len(reports) - accepted,
        "scan": scan_report.to_dict() if scan_report is not None else None,
        "files": [_shown(r, args.summaries) for r in results],
    }
    if undeclared:
        out["not_in_manifest"] = undeclared
    text = json.dumps(out, indent=2) + "\n"
    if args.report:
        write_text_atomic(args.report, text, flag="--report")
    else:
        sys.stdout.write(text)
    scan_part = f"; scan {scan_report.verdict.value}" if scan_report is not None else ""
    print(
        f"validate: {len(reports)} files, {accepted} accepted, {len(reports) - accepted} rejected{scan_part}",
        file=sys.stderr,
    )
    return 0 if ok else 1


def _shown(report: dict[str, Any], summaries: bool) -> dict[str, Any]:
    if not summaries:
        report = {k: v for k, v in report.items() if k != "summary"}
    return report
