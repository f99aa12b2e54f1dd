"""Every command, a table of bad inputs: each gets a non-zero exit, exactly one line on stderr
saying what was wrong (the substring expected), and never a traceback.

To add a case, append a :class:`Case` to ``CASES``: its argv may name the places of
:class:`tests.cli.conftest.Places` as ``{scan}``, ``{deid}``, ``{key}``, ``{empty}``,
``{notdicom}``, ``{file}``, ``{dir}``, ``{tmp}``. Each case runs ``python -m dicomflow`` in a
process of its own, as a user would, with HOME in the test's folder (no real key is touched).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cli.conftest import Places

#: chmod 000 does not stop root from reading: the "unreadable" cases cannot be made there.
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]
    expected: str  # a substring of the one line on stderr
    unreadable: str | None = None  # a place to chmod 000 first ("{key}")
    absent: list[str] = field(default_factory=list)  # paths that must not exist afterwards
    exit_code: int | None = None  # when a particular non-zero status is part of the contract


K = ["--key-file", "{key}"]

CASES: list[Case] = [
    # dicomflow itself
    Case("no-command", [], "required"),
    Case("unknown-command", ["frobnicate"], "invalid choice"),
    # phantom
    Case("phantom-seed-negative", ["phantom", "{tmp}/new", "--seed", "-5"], "--seed", absent=["{tmp}/new"]),
    Case("phantom-phases-zero", ["phantom", "{tmp}/new", "--phases", "0"], "--phases", absent=["{tmp}/new"]),
    Case("phantom-slices-one", ["phantom", "{tmp}/new", "--slices", "1"], "--slices", absent=["{tmp}/new"]),
    Case("phantom-size-negative", ["phantom", "{tmp}/new", "--size", "-4"], "--size", absent=["{tmp}/new"]),
    Case("phantom-size-not-a-number", ["phantom", "{tmp}/new", "--size", "big"], "--size"),
    Case("phantom-onto-a-file", ["phantom", "{file}"], "is a file"),
    Case("phantom-into-a-used-folder", ["phantom", "{scan}"], "not empty"),
    Case("phantom-under-a-file", ["phantom", "{file}/sub"], "is a file"),
    # validate
    Case("validate-missing-path", ["validate", "{tmp}/nope"], "does not exist"),
    Case("validate-empty-folder", ["validate", "{empty}"], "empty"),
    Case(
        "validate-manifest-missing",
        ["validate", "{scan}", "--manifest", "{tmp}/missing.json"],
        "does not exist",
    ),
    Case("validate-manifest-a-folder", ["validate", "{scan}", "--manifest", "{empty}"], "is a folder"),
    Case("validate-manifest-not-json", ["validate", "{scan}", "--manifest", "{notdicom}"], "not valid JSON"),
    Case(
        "validate-manifest-unreadable",
        ["validate", "{scan}", "--manifest", "{scan}/manifest.json"],
        "manifest.json",
        unreadable="{scan}/manifest.json",
    ),
    Case("validate-report-a-folder", ["validate", "{scan}", "--report", "{empty}"], "is a folder"),
    Case("validate-report-exists", ["validate", "{scan}", "--report", "{file}"], "already exists"),
    Case("validate-jobs-zero", ["validate", "{scan}", "--jobs", "0"], "--jobs"),
    Case("validate-jobs-negative", ["validate", "{scan}", "--jobs", "-2"], "--jobs"),
    Case("validate-not-dicom", ["validate", "{notdicom}"], "1 rejected", exit_code=1),
    Case(
        "validate-unreadable", ["validate", "{notdicom}"], "1 rejected", unreadable="{notdicom}", exit_code=1
    ),
    # deid
    Case("deid-missing-src", ["deid", "{tmp}/nope", "{tmp}/out", *K], "does not exist"),
    Case("deid-empty-src", ["deid", "{empty}", "{tmp}/out", *K], "is empty", absent=["{tmp}/out"]),
    Case("deid-dest-is-src", ["deid", "{scan}", "{scan}", *K], "SRC itself"),
    Case("deid-dest-inside-src", ["deid", "{scan}", "{scan}/out", *K], "inside SRC", absent=["{scan}/out"]),
    Case("deid-dest-contains-src", ["deid", "{scan}/phase_00", "{scan}", *K], "contains SRC"),
    Case(
        "deid-file-onto-itself",
        ["deid", "{scan}/phase_00/slice_0000.dcm", "{scan}/phase_00", *K],
        "SRC itself",
    ),
    Case("deid-dest-used", ["deid", "{scan}", "{dir}", *K], "not empty"),
    Case("deid-dest-a-file", ["deid", "{scan}", "{file}", *K], "is a file"),
    Case("deid-dest-file-exists", ["deid", "{scan}/phase_00/slice_0000.dcm", "{file}", *K], "already exists"),
    Case("deid-key-a-folder", ["deid", "{scan}", "{tmp}/out", "--key-file", "{empty}"], "is a folder"),
    Case(
        "deid-key-in-a-missing-folder",
        ["deid", "{scan}", "{tmp}/out", "--key-file", "{tmp}/nope/key"],
        "does not exist",
        absent=["{tmp}/nope", "{tmp}/out"],
    ),
    Case(
        "deid-key-unreadable",
        ["deid", "{scan}", "{tmp}/out", *K],
        "cannot read the key file",
        unreadable="{key}",
    ),
    Case("deid-key-inside-dest", ["deid", "{scan}", "{tmp}/out", "--key-file", "{tmp}/out/k"], "inside DEST"),
    Case("deid-report-a-folder", ["deid", "{scan}", "{tmp}/out", *K, "--report", "{empty}"], "is a folder"),
    Case("deid-report-exists", ["deid", "{scan}", "{tmp}/out", *K, "--report", "{file}"], "already exists"),
    Case(
        "deid-report-inside-dest",
        ["deid", "{scan}", "{tmp}/out", *K, "--report", "{tmp}/out/r.json"],
        "inside DEST",
    ),
    Case("deid-workers-zero", ["deid", "{scan}", "{tmp}/out", *K, "--workers", "0"], "--workers"),
    Case("deid-workers-negative", ["deid", "{scan}", "{tmp}/out", *K, "--workers", "-2"], "--workers"),
    Case("deid-unknown-option", ["deid", "{scan}", "{tmp}/out", *K, "--options", "keep-all"], "unknown"),
    Case("deid-not-dicom", ["deid", "{notdicom}", "{tmp}/out.dcm", *K], "rejected: notes.txt", exit_code=1),
    # analyze
    Case("analyze-missing-scan", ["analyze", "{tmp}/nope", "{tmp}/out"], "does not exist"),
    Case("analyze-scan-a-file", ["analyze", "{notdicom}", "{tmp}/out"], "not a folder"),
    Case("analyze-empty-scan", ["analyze", "{empty}", "{tmp}/out"], "no DICOM files in SCAN_DIR"),
    Case(
        "analyze-not-dicom",
        ["analyze", "{dir}", "{tmp}/out"],
        "earlier.dcm in SCAN_DIR is not readable DICOM",
    ),
    Case("analyze-identified", ["analyze", "{scan}", "{tmp}/out"], "not de-identified", absent=["{tmp}/out"]),
    Case("analyze-out-a-file", ["analyze", "{deid}", "{file}"], "is a file"),
    Case("analyze-out-inside-scan", ["analyze", "{deid}", "{deid}/out"], "inside SCAN_DIR"),
    Case("analyze-threads-zero", ["analyze", "{deid}", "{tmp}/out", "--threads", "0"], "--threads"),
    Case("analyze-threads-negative", ["analyze", "{deid}", "{tmp}/out", "--threads", "-1"], "--threads"),
    Case(
        "analyze-unreadable-file",
        ["analyze", "{deid}", "{tmp}/out"],
        "phase_01/slice_0002.dcm",
        unreadable="{deid}/phase_01/slice_0002.dcm",
    ),
]


# upload and local-api (the upload half of issue 12). Nothing listens on 127.0.0.1:9 (discard).
_API = ["--api", "http://127.0.0.1:9"]
_U = ["--device-id", "ct-01", "--scan-type", "4d-ct"]
CASES += [
    Case("upload-missing-folder", ["upload", "{tmp}/nope", *_API, *_U], "is not a folder"),
    Case("upload-a-file", ["upload", "{file}", *_API, *_U], "is not a folder"),
    # The folder is checked before the API URL and the metadata: a wrong path is said first.
    Case("upload-missing-folder-nothing-else", ["upload", "{tmp}/nope"], "is not a folder"),
    Case("upload-empty-folder", ["upload", "{empty}", *_API, *_U], "holds no files"),
    Case("upload-api-not-a-url", ["upload", "{scan}", "--api", "notaurl"], "is not an http(s) URL"),
    Case("upload-api-no-host", ["upload", "{scan}", "--api", "http://"], "is not an http(s) URL"),
    Case("upload-api-not-there", ["upload", "{scan}", *_API], "could not be reached"),
    Case("upload-part-size-zero", ["upload", "{scan}", *_API, "--part-size-mib", "0"], "--part-size-mib"),
    Case(
        "upload-part-size-negative", ["upload", "{scan}", *_API, "--part-size-mib", "-4"], "--part-size-mib"
    ),
    Case("upload-part-size-over-5-gib", ["upload", "{scan}", *_API, "--part-size-mib", "5121"], "5 to 5120"),
    Case("upload-workers-zero", ["upload", "{scan}", *_API, "--workers", "0"], "--workers"),
    Case("upload-workers-negative", ["upload", "{scan}", *_API, "--workers", "-2"], "--workers"),
    Case("upload-workers-too-many", ["upload", "{scan}", *_API, "--workers", "65"], "1 to 64"),
    Case("upload-timeout-zero", ["upload", "{scan}", *_API, "--timeout", "0"], "--timeout"),
    Case(
        "upload-metadata-missing", ["upload", "{scan}", *_API, "--metadata", "{tmp}/nope.json"], "cannot read"
    ),
    Case(
        "upload-metadata-not-json", ["upload", "{scan}", *_API, "--metadata", "{notdicom}"], "not valid JSON"
    ),
    Case(
        "upload-scan-type-unknown",
        ["upload", "{scan}", *_API, "--device-id", "ct-01", "--scan-type", "mri"],
        "scan_type 'mri' is unknown",
    ),
    Case("local-api-port-negative", ["local-api", "--port", "-1"], "--port"),
    Case("local-api-port-too-big", ["local-api", "--port", "70000"], "--port"),
]


def run_dicomflow(argv: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """``python -m dicomflow ARGV`` as a user runs it (no debug tracebacks, HOME of its own)."""
    env = {k: v for k, v in os.environ.items() if k != "DICOMFLOW_DEBUG"}
    env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "dicomflow", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    """Exit status non-zero, exactly one non-empty line on stderr holding ``expected``, and no
    traceback anywhere."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert len(lines) == 1, lines
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_is_one_line_and_a_non_zero_exit(case: Case, places: Places) -> None:
    # Given the places of the case (and one made unreadable, where the OS can do that)
    if case.unreadable is not None:
        if ROOT:
            pytest.skip("running as root: chmod 000 does not stop reads")
        Path(places.format(case.unreadable)).chmod(0)
    # When the command runs
    try:
        result = run_dicomflow([places.format(a) for a in case.argv], places.tmp / "home")
    finally:
        if case.unreadable is not None:
            Path(places.format(case.unreadable)).chmod(0o644)
    # Then one line says what was wrong, and nothing was left behind where nothing should be
    assert_one_line_error(result, places.format(case.expected))
    if case.exit_code is not None:
        assert result.returncode == case.exit_code
    for path in case.absent:
        assert not Path(places.format(path)).exists(), path
