"""``dicomflow deid SRC DEST``: de-identify a DICOM file or a tree of them (DICOM PS3.15).

Pixels are copied byte for byte, never decoded; each file's verdict (passed / held / failed /
rejected), pixel hashes and leak check go to the JSON report. Only passed files land in DEST (the
tree mirrored); files held for review (burned-in annotation) go to ``--held`` (default: DEST with
``_held`` appended), never into DEST. Exit status 0 only if every file passed.

A folder with a ``manifest.json`` is a scan: only the files it lists are de-identified, and when
all pass DEST gets the de-identified scan's ``manifest.json`` (new sizes and SHA-256).

Nothing is lost or mixed: DEST (and the held folder) may not be SRC, lie inside it or contain it
(symlinks resolved); a folder is de-identified into a new or empty DEST (one folder is one scan),
and no existing file is written over (a DEST file, --report): ``--force`` clears DEST and the held
folder first and lets the report be replaced. Every file that does not pass is named on stderr,
by its path inside SRC, with the reasons.

The key: ``--key-file F`` (hex or raw bytes, >= 16 bytes), created if it does not exist (its folder
must). Without it, the per-user key ``~/.config/dicomflow/deid.key`` is used, created on first use;
a new key is written whole (mode 0600) or not at all, never over an existing file, and announced on
stderr:
the same key gives the same UIDs, pseudonyms and date shifts on every run, so keep it (and keep it
away from the de-identified data: with it, pseudonyms can be linked back to the patient ID).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicomflow.cli.numbers import processes
from dicomflow.cli.paths import (
    check_new_file,
    check_output_dir,
    is_within,
    make_output_dir,
    refuse_overlap,
    resolved,
    write_text_atomic,
)
from dicomflow.cli.workers import map_in_workers
from dicomflow.errors import InvalidInputError

if TYPE_CHECKING:
    from dicomflow.deid.policy import Deidentifier
    from dicomflow.deid.report import FileReport

DEFAULT_KEY_FILE = Path("~/.config/dicomflow/deid.key")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "deid",
        help="de-identify DICOM files (PS3.15 Basic Profile + options), pixels copied byte for byte",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", metavar="SRC", help="a DICOM file or a folder (walked recursively)")
    parser.add_argument("dest", metavar="DEST", help="output file (for a file) or folder (for a folder)")
    parser.add_argument(
        "--options",
        default="",
        help="comma-separated changes to the default options: NAME or no-NAME, or 'basic' for none "
        "(defaults: retain-long-modified-dates, retain-patient-characteristics, "
        "retain-device-identity, clean-descriptors, retain-safe-private)",
    )
    parser.add_argument("--key-file", type=Path, help=f"pseudonym key file (default {DEFAULT_KEY_FILE})")
    parser.add_argument(
        "--workers", type=processes, default=os.cpu_count() or 1, help="processes (default: cores)"
    )
    parser.add_argument("--report", type=Path, help="write the JSON report here (a new file)")
    parser.add_argument("--held", type=Path, help="folder for files held for review (default DEST_held)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="clear a non-empty DEST (and held folder) first; overwrite an existing DEST file or --report",
    )
    parser.add_argument(
        "--no-verify-pixels", action="store_true", help="skip the BLAKE3 pixel hashes (before, after)"
    )
    parser.set_defaults(func=run)


def _key_file(path: Path | None) -> Path:
    """The key file to use: ``path`` or the per-user default, created (and announced) if missing.
    An explicit key file's folder must exist: a typo in it would otherwise make a new key, and with
    it other pseudonyms than the ones already published."""
    from dicomflow.deid.keys import LocalKey

    key_path = path if path is not None else DEFAULT_KEY_FILE.expanduser()
    flag = "--key-file" if path is not None else "the key file"
    if key_path.is_dir():
        raise InvalidInputError(f"{flag} {key_path} is a folder: give the key file's path")
    if key_path.exists():
        return key_path
    if path is not None and not key_path.parent.is_dir():
        raise InvalidInputError(
            f"--key-file {key_path}: the folder {key_path.parent} does not exist; create it, or give "
            "the path of your existing key"
        )
    try:
        key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise InvalidInputError(f"cannot create the folder of {flag} {key_path}: {exc.strerror}") from None
    try:
        LocalKey.generate_file(key_path)
    except FileExistsError:
        return key_path  # another run made it just now: use that one
    print(
        f"dicomflow deid: created a new pseudonym key at {key_path}; keep it to reproduce UIDs",
        file=sys.stderr,
    )
    return key_path


# The run's de-identifier: built before the workers fork, which inherit it (spawned workers, where
# there is no fork, build their own with _init).
_DEID: Deidentifier | None = None
_VERIFY = True


def _init(key_file: str, options: str, verify: bool) -> None:
    global _DEID, _VERIFY
    import warnings

    # pydicom warns about every odd value it tolerates; the report carries what matters.
    warnings.filterwarnings("ignore", module="pydicom")
    from dicomflow.deid.keys import LocalKey
    from dicomflow.deid.options import DeidOptions
    from dicomflow.deid.policy import Deidentifier

    _DEID = Deidentifier(LocalKey.from_file(key_file), DeidOptions.from_spec(options))
    _VERIFY = verify


def _one(job: tuple[str, str, str]) -> FileReport:
    from dicomflow.deid.stream import deidentify_file

    src, dst, held = job
    assert _DEID is not None
    return deidentify_file(src, dst, _DEID, held_dst=held, verify_pixels=_VERIFY)


def _lost(job: tuple[str, str, str], reason: str) -> FileReport:
    """The report of a file whose worker died before finishing it: FAILED, and nothing left of
    it (an output is only renamed into place once complete: a ``.partial`` one is removed)."""
    from dicomflow.deid.report import FileReport, Verdict

    for target in job[1:]:
        Path(target + ".partial").unlink(missing_ok=True)
    return FileReport(source=job[0], verdict=Verdict.FAILED, reasons=[reason])


def _jobs(src: Path, dest: Path, held: Path) -> Iterator[tuple[str, str, str]]:
    if src.is_file():
        target = dest / src.name if dest.is_dir() else dest
        yield str(src), str(target), str(held / src.name)
        return
    manifest = src / "manifest.json"
    if manifest.is_file():
        # A scan folder: its manifest says which files make the scan (sidecars such as the
        # phantom's ground truth are not DICOM and must not be copied anywhere).
        from dicomflow.manifest import ScanManifest

        for entry in ScanManifest.load(manifest).files:
            yield str(src / entry.name), str(dest / entry.name), str(held / entry.name)
        return
    from dicomflow.manifest import is_scan_file

    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            rel = path.relative_to(src)
            if is_scan_file(rel):  # not a hidden file (.DS_Store, the upload journal) nor a sidecar
                yield str(path), str(dest / rel), str(held / rel)


def _check_outputs(args: argparse.Namespace, src: Path, dest: Path, held: Path) -> None:
    """Refuse, before anything is written, outputs that would overwrite or mix with the input or
    another run's files (see the module docstring)."""
    if src.is_dir():
        refuse_overlap(src, dest)
        refuse_overlap(src, held, dest_name="the held folder")
        # Held files keep their identity: never inside the de-identified folder, nor around it.
        refuse_overlap(dest, held, src_name="DEST", dest_name="the held folder")
        check_output_dir(dest, force=args.force, flag="DEST")
        check_output_dir(held, force=args.force, flag="the held folder")
    else:
        target = dest / src.name if dest.is_dir() else dest
        if resolved(target) == resolved(src):
            raise InvalidInputError(f"DEST {dest} is SRC itself: give a new file or folder for the output")
        check_new_file(target, force=args.force, flag="DEST")
        if resolved(held / src.name) == resolved(src):
            raise InvalidInputError(f"the held file {held / src.name} is SRC itself: give another --held")
        check_new_file(held / src.name, force=args.force, flag="the held file")
    if args.report is not None:
        check_new_file(args.report, force=args.force, flag="--report")
        # The report names the source files: not in the de-identified data, nor among the sources.
        for folder, name in ((src, "SRC"), (dest, "DEST"), (held, "the held folder")):
            if is_within(args.report, folder):
                raise InvalidInputError(f"--report {args.report} is inside {name}: write it elsewhere")
    if args.key_file is not None:
        for folder, name in ((dest, "DEST"), (held, "the held folder"), (src, "SRC")):
            if is_within(args.key_file, folder):
                raise InvalidInputError(
                    f"--key-file {args.key_file} is inside {name}: keep the key away from the data"
                )


def _tell_not_passed(reports: list[FileReport], src: Path) -> None:
    """One line on stderr per file that did not pass: its path inside SRC (the user's own), its
    verdict and the reasons (which name elements and checks, never values)."""
    for report in reports:
        if report.verdict.value == "passed":
            continue
        try:
            shown = Path(report.source).relative_to(src).as_posix() if src.is_dir() else src.name
        except ValueError:
            shown = report.source
        reasons = "; ".join(report.reasons) or "no reason given"
        print(f"dicomflow deid: {report.verdict.value}: {shown}: {reasons}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from dicomflow.deid.keys import LocalKey
    from dicomflow.deid.options import DeidOptions
    from dicomflow.deid.profile import table
    from dicomflow.deid.report import RunReport

    src, dest = Path(args.src), Path(args.dest)
    if not src.exists():
        raise InvalidInputError(f"SRC {src} does not exist")
    if src.is_dir() and dest.exists() and not dest.is_dir():
        raise InvalidInputError(f"{dest} is a file; a folder is de-identified into a folder")
    options = DeidOptions.from_spec(args.options)  # validate before starting processes
    held = args.held or dest.with_name(dest.name + "_held")
    if src.is_file():
        held = args.held or dest.parent / (dest.name + "_held")
    _check_outputs(args, src, dest, held)
    jobs = list(_jobs(src, dest, held))
    if not jobs:
        raise InvalidInputError(f"SRC {src} is empty: no files to de-identify")
    key_file = _key_file(args.key_file)
    key = LocalKey.from_file(key_file)
    # Every check passed: now (and only now) a used DEST is cleared, with --force.
    if src.is_dir():
        make_output_dir(dest, flag="DEST")
        if held.is_dir():
            make_output_dir(held, flag="the held folder")
    elif args.force:
        (held / src.name).unlink(missing_ok=True)
    verify = not args.no_verify_pixels
    workers = max(1, min(args.workers, len(jobs)))
    # Built here, before any worker starts: forked workers inherit the de-identifier, its loaded
    # tables and the imported engine instead of each doing it again (about 60 ms per worker;
    # spawned ones, where there is no fork, run _init themselves).
    _init(str(key_file), args.options, verify)
    import dicomflow.deid.stream  # noqa: F401
    from dicomflow.dicom.dictionary import dictionary_vr

    dictionary_vr(0x00100010)  # loads the data dictionary
    chunk = max(1, min(16, len(jobs) // (workers * 4)))
    # The first file is done here: the workers inherit what the de-identifier learnt from it
    # (a series' other slices differ from it in a few elements).
    reports = map_in_workers(
        _one,
        jobs,
        workers,
        _lost,
        chunk,
        first_here=True,
        initializer=_init,
        initargs=(str(key_file), args.options, verify),
    )
    run_report = RunReport(
        profile=f"DICOM PS3.15 Table E.1-1 edition {table()['edition']}",
        options=list(options.enabled),
        key_id=key.key_id,
        files=reports,
    )
    if args.report:
        write_text_atomic(args.report, run_report.to_json(), flag="--report")
    _tell_not_passed(reports, src)
    counts = run_report.counts
    print(
        f"dicomflow deid: {len(reports)} file(s): "
        + ", ".join(f"{n} {v}" for v, n in counts.items())
        + (f"; report {args.report}" if args.report else "")
    )
    if src.is_dir() and (src / "manifest.json").is_file():
        _write_deidentified_manifest(src, dest, run_report.all_passed)
    return 0 if run_report.all_passed else 1


def _write_deidentified_manifest(src: Path, dest: Path, all_passed: bool) -> None:
    """The de-identified scan's manifest: same scan, the new files' sizes and SHA-256. Written only
    when every file passed, so a manifest never describes a partial scan."""
    from dicomflow.manifest import ManifestFile, ScanManifest, sha256_file

    if not all_passed:
        print(
            "dicomflow deid: not every file passed, so no manifest.json is written in DEST", file=sys.stderr
        )
        return
    original = ScanManifest.load(src / "manifest.json")
    files = tuple(
        ManifestFile(name=f.name, size=(dest / f.name).stat().st_size, sha256=sha256_file(dest / f.name))
        for f in original.files
    )
    deidentified = ScanManifest(
        device_id=original.device_id,
        scan_type=original.scan_type,
        device_settings=original.device_settings,
        scan_id=original.scan_id,
        files=files,
    )
    write_text_atomic(dest / "manifest.json", deidentified.to_json(), flag="DEST's manifest")
