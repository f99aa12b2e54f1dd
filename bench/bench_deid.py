"""De-identification, dicomflow beside its peers, in one run (issue 3's acceptance figures).

Three inputs, generated once with ``dicomflow phantom`` and cached in ``.bench/deid/`` by parameters:

- a CT series: 1 phase x 300 single-frame 512 x 512 slices (``phase_00/slice_SSSS.dcm``);
- the same series with each slice's own Acquisition DateTime, as scanners write them (the phantom's
  slices of a phase share one). A date-time is identifying, so the identifying text then differs
  from slice to slice: not a target, it shows that what the de-identifier remembers from slice to
  slice still serves such a series;
- a ~1 GB Enhanced CT file: 1 phase x 2000 frames of 512 x 512 (``phase_00.dcm``).

On each, one after the other: ``cp`` (the floor: bytes moved, nothing parsed), ``gdcmanon -e``
(GDCM, C++; a self-signed certificate is made with openssl at run time), ``python -m dicognito``,
``dicom-anonymizer`` and ``dicomflow deid``. Each run gets wall time, files/s, MB/s (input bytes per
second) and peak RSS: the tool's largest single process (from GNU time, which spawns it: a
Python parent's own high-water mark would otherwise leak into the child's ``ru_maxrss``) and the
largest sum over its process tree (sampled every 20 ms, so worker pools count in full). Each run
has a timeout (``DEID_BENCH_TIMEOUT``, default 300 s; peers that load a whole 1 GB file
may hit it, which is printed as ``timeout``). Ratios are dicomflow against each peer.

Targets (issue 16): on the series, dicomflow's files/s at least 1.2x gdcmanon's; on the 1 GB file,
wall time at most 1.5x ``cp`` and peak RSS at most 100 MB; met when the medians reach them. The rows
are recorded for the README's table (``bench/common.py: record``), except with the quick inputs.

The machine is shared and noisy: cp, gdcmanon and dicomflow run ``DEID_BENCH_REPEAT`` times (default
5) in interleaved rounds, each after a ``sync``; their best and median times are printed, and the
ratios and targets are given for both. The slow peers run once. The process tree's RSS is sampled in
the first round only (the sampler's own CPU would otherwise weigh on the tools that use both cores);
the peak RSS of a tool is the largest of its rounds.

``DEID_BENCH_QUICK=1`` shrinks the inputs (for trying the benchmark itself, not for figures);
``DEID_BENCH_CASES=series`` (or ``series-dt``, ``file``, or a comma-separated list) runs those only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from common import BIN, GNU_TIME, WORK, _TreeSampler, header, record

HERE = WORK / "deid"
TIMEOUT_S = float(os.environ.get("DEID_BENCH_TIMEOUT", "300"))
#: Runs of the fast tools (cp, gdcmanon, dicomflow), interleaved; the slow peers run once.
REPEAT = max(1, int(os.environ.get("DEID_BENCH_REPEAT", "5")))
FAST_TOOLS = frozenset({"cp", "gdcmanon", "dicomflow"})
QUICK = os.environ.get("DEID_BENCH_QUICK") == "1"
DICOMFLOW = "dicomflow"
GDCM_INSTALL = "apt-get update && apt-get install -y libgdcm-tools"


@dataclass(frozen=True)
class Case:
    name: str
    phases: int
    slices: int
    size: int
    multiframe: bool
    #: Each slice with its own Acquisition DateTime (rewritten from the phantom's series).
    acquired_apart: bool = False

    @property
    def key(self) -> str:
        layout = "mf" if self.multiframe else "sf"
        return f"{layout}_p{self.phases}_s{self.slices}_n{self.size}" + ("_dt" if self.acquired_apart else "")


@dataclass(frozen=True)
class Run:
    tool: str
    status: str  # "ok", "timeout", "exit N", "skipped: why"
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0  # the largest single process
    files_out: int = 0
    tree_rss_mb: float = 0.0  # the largest sum over the process tree (sampled every 20 ms)
    median_s: float = 0.0  # over the repeated runs (wall_s is then the best of them)
    repeats: int = 1

    @property
    def ok(self) -> bool:
        return self.status == "ok"


ALL_CASES = {
    "series": Case("CT series, 300 x 512^2 slices", 1, 300, 512, False)
    if not QUICK
    else Case("CT series (quick)", 1, 20, 128, False),
    "series-dt": Case(
        "CT series, 300 x 512^2 slices, each with its own Acquisition DateTime", 1, 300, 512, False, True
    )
    if not QUICK
    else Case("CT series, own Acquisition DateTimes (quick)", 1, 20, 128, False, True),
    "file": Case("enhanced multi-frame, 2000 x 512^2 (~1 GB)", 1, 2000, 512, True)
    if not QUICK
    else Case("enhanced multi-frame (quick)", 1, 60, 128, True),
}
#: ``DEID_BENCH_CASES=series`` (``series-dt``, ``file``, or a list) runs those only (default: all).
CASES = tuple(
    ALL_CASES[name] for name in os.environ.get("DEID_BENCH_CASES", "series,series-dt,file").split(",") if name
)


def main() -> int:
    header("deid: dicomflow vs cp, gdcmanon, dicognito, dicom-anonymizer")
    HERE.mkdir(parents=True, exist_ok=True)
    certificate = _certificate()
    key_file = HERE / "bench.key"
    status = 0
    results: dict[str, tuple[Case, int, int, list[Run]]] = {}
    for case in CASES:
        source, files, size = _input(case)
        print(
            f"\n-- {case.name}: {files} file(s), {size / 1e6:.0f} MB ({source.relative_to(WORK.parent)})",
            flush=True,
        )
        _warm(source)
        tools = _tools(certificate, key_file)
        every: dict[str, list[Run]] = {tool: [] for tool, _ in tools}
        # Interleaved rounds: a burst of load on this shared machine hits every tool alike, not
        # one of them; each run starts after the previous one's output is written back (sync).
        for round_no in range(REPEAT):
            print(f"  round {round_no + 1}/{REPEAT}", flush=True)
            for tool, build in tools:
                if round_no and tool not in FAST_TOOLS:
                    continue
                out = HERE / "out" / tool
                _clear(out)
                out.parent.mkdir(parents=True, exist_ok=True)
                cmd = build(source, out)  # type: ignore[operator]
                os.sync()
                run = (
                    _skipped(tool, cmd)
                    if isinstance(cmd, str)
                    else _measure(tool, cmd, out, sample=round_no == 0)
                )
                every[tool].append(run)
                _print_run(run, files, size)
                if tool == DICOMFLOW and run.ok and round_no == 0:
                    _print_engines(HERE / "out" / "dicomflow_report.json")
                    if not _check_outputs(source, out):
                        status = 1
                _clear(out)
        runs = [_summary(tool, done) for tool, done in every.items()]
        print(f"  summary (best of {REPEAT} for {', '.join(sorted(FAST_TOOLS))}; median in brackets)")
        for run in runs:
            _print_run(run, files, size)
        _print_ratios(runs)
        if not case.multiframe and not case.acquired_apart:
            _print_floor(source, _find(runs, "gdcmanon"))
        if case.multiframe:
            _print_file_floor(source, _find(runs, "cp"))
        results[case.key] = (case, files, size, runs)
        ours = _find(runs, DICOMFLOW)
        if ours is None or not ours.ok:
            status = 1
    _print_targets(results)
    return status


# -- inputs ----------------------------------------------------------------------------------------


def _input(case: Case) -> tuple[Path, int, int]:
    """The cached phantom for ``case``: (what to hand the tools, number of files, total bytes)."""
    if case.acquired_apart:
        return _acquired_apart(case)
    root = HERE / "inputs" / case.key
    done = root / ".complete"
    if not done.exists() or done.read_text() == "fallback":
        shutil.rmtree(root, ignore_errors=True)
        cmd = [BIN / "dicomflow", "phantom", root, "--phases", str(case.phases), "--slices", str(case.slices),
               "--size", str(case.size)] + (["--multiframe"] if case.multiframe else [])  # fmt: skip
        print(f"generating {case.key} (cached for later runs) ...", flush=True)
        start = time.perf_counter()
        made = subprocess.run(
            [str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        origin = "phantom"
        if made.returncode != 0:
            # The benchmark measures de-identification, not the phantom: fall back to a synthetic scan.
            reason = (made.stderr.strip().splitlines() or ["no message"])[-1][:200]
            print(f"  dicomflow phantom failed ({reason}); using bench/peers_inputs.py instead", flush=True)
            from peers_inputs import write_multiframe, write_series

            shutil.rmtree(root, ignore_errors=True)
            if case.multiframe:
                write_multiframe(root, frames=case.phases * case.slices, rows=case.size)
            else:
                write_series(root, slices=case.slices, rows=case.size)
            origin = "fallback"
        print(f"  generated in {time.perf_counter() - start:.1f} s ({origin})", flush=True)
        done.write_text(origin)
    if done.read_text() == "fallback":
        print(f"  note: {case.key} is the synthetic fallback input, not the phantom", flush=True)
    manifest = json.loads((root / "manifest.json").read_text())
    names = [f["name"] for f in manifest["files"]]
    total = sum(f["size"] for f in manifest["files"])
    if case.multiframe:
        if len(names) != 1:
            raise RuntimeError(f"{case.key}: expected one multi-frame file, the manifest lists {len(names)}")
        return root / names[0], 1, total
    folders = {str(Path(n).parent) for n in names}
    if len(folders) != 1:
        raise RuntimeError(f"{case.key}: expected one series folder, found {len(folders)}")
    return root / folders.pop(), len(names), total


def _acquired_apart(case: Case) -> tuple[Path, int, int]:
    """The phantom's series with each slice's own Acquisition DateTime (half a second apart), as
    a scanner writes them: written once from the plain series, with pydicom."""
    source, files, _ = _input(replace(case, acquired_apart=False))
    root = HERE / "inputs" / case.key
    series = root / source.name
    done = root / ".complete"
    if not done.exists():
        import pydicom

        shutil.rmtree(root, ignore_errors=True)
        series.mkdir(parents=True)
        print(f"generating {case.key} from {source.parent.name} (cached for later runs) ...", flush=True)
        for n, path in enumerate(sorted(source.glob("*.dcm"))):
            ds = pydicom.dcmread(path)
            seconds = 30 + n // 2
            ds.AcquisitionDateTime = f"2024061118{seconds // 60:02d}{seconds % 60:02d}.{n % 2 * 5}00000"
            ds.save_as(series / path.name, enforce_file_format=True)
        done.write_text("phantom, own Acquisition DateTimes")
    paths = sorted(series.glob("*.dcm"))
    if len(paths) != files:
        raise RuntimeError(f"{case.key}: expected {files} slices, found {len(paths)}")
    return series, files, sum(p.stat().st_size for p in paths)


def _warm(source: Path) -> None:
    """Read the input once so that every tool starts from the same (warm) page cache."""
    for path in [source] if source.is_file() else sorted(source.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                while fh.read(16 * 1024 * 1024):
                    pass


def _certificate() -> Path | None:
    """A self-signed certificate for ``gdcmanon -e`` (it encrypts the removed values to it)."""
    cert, key = HERE / "gdcmanon_cert.pem", HERE / "gdcmanon_key.pem"
    if cert.exists():
        return cert
    if shutil.which("openssl") is None:
        return None
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "3650",
            "-nodes",
            "-subj",
            "/CN=dicomflow-bench",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return cert


# -- tools -----------------------------------------------------------------------------------------


def _tools(certificate: Path | None, key_file: Path) -> list[tuple[str, object]]:
    """(name, build(source, out) -> command, or a string saying why it is skipped), in run order."""
    python = str(BIN / "python")

    def cp(source: Path, out: Path) -> Sequence[str]:
        if source.is_dir():
            return ["cp", "-r", str(source), str(out)]
        out.mkdir(parents=True, exist_ok=True)
        return ["cp", str(source), str(out / source.name)]

    def gdcmanon(source: Path, out: Path) -> Sequence[str] | str:
        if shutil.which("gdcmanon") is None:
            return f"gdcmanon not installed; install it with: {GDCM_INSTALL}"
        if certificate is None:
            return "openssl not found (gdcmanon -e needs a certificate)"
        target = out if source.is_dir() else out / source.name
        out.mkdir(parents=True, exist_ok=True)
        return ["gdcmanon", "-e", "--continue", "-c", str(certificate), "-i", str(source), "-o", str(target)]

    def dicognito(source: Path, out: Path) -> Sequence[str]:
        return [python, "-m", "dicognito", "--quiet", "--output-directory", str(out), str(source)]

    def dicom_anonymizer(source: Path, out: Path) -> Sequence[str] | str:
        script = BIN / "dicom-anonymizer"
        if not script.exists():
            return "dicom-anonymizer not installed (pip install -r requirements-dev.txt)"
        out.mkdir(parents=True, exist_ok=True)  # it refuses an output folder that does not exist
        target = out if source.is_dir() else out / source.name
        return [str(script), str(source), str(target)]

    def dicomflow(source: Path, out: Path) -> Sequence[str]:
        if not key_file.exists():
            key_file.write_text(secrets.token_hex(32))
        out.mkdir(parents=True, exist_ok=True)
        target = out if source.is_dir() else out / source.name
        held = out.parent / "dicomflow_held"
        shutil.rmtree(held, ignore_errors=True)
        return [
            str(BIN / "dicomflow"), "deid", str(source), str(target), "--key-file", str(key_file),
            "--held", str(held), "--report", str(out.parent / "dicomflow_report.json"),
            "--force",  # the report of the round before is replaced
        ]  # fmt: skip

    return [
        ("cp", cp),
        ("gdcmanon", gdcmanon),
        ("dicognito", dicognito),
        ("dicom-anonymizer", dicom_anonymizer),
        (DICOMFLOW, dicomflow),
    ]


def _summary(tool: str, runs: list[Run]) -> Run:
    """The best run (shortest wall time) of a tool, with the median wall time of its runs."""
    ok = [r for r in runs if r.ok]
    if not ok:
        return runs[0]
    best = min(ok, key=lambda r: r.wall_s)
    walls = sorted(r.wall_s for r in ok)
    median = (
        walls[len(walls) // 2]
        if len(walls) % 2
        else (walls[len(walls) // 2 - 1] + walls[len(walls) // 2]) / 2
    )
    peak = max(r.peak_rss_mb for r in ok)
    tree = max(r.tree_rss_mb for r in ok)
    return Run(tool, "ok", best.wall_s, peak, best.files_out, tree, median, len(ok))


def _print_engines(report: Path) -> None:
    """Which header engine de-identified the files (the byte-level one is the fast path)."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        files = json.loads(report.read_text())["files"]
        engines: dict[str, int] = {}
        for entry in files:
            engines[str(entry.get("engine"))] = engines.get(str(entry.get("engine")), 0) + 1
        print(f"    dicomflow header engine: {', '.join(f'{k} {v}' for k, v in sorted(engines.items()))}")


def _pixel_value_hash(path: Path) -> tuple[str, int] | None:
    """BLAKE3 of the Pixel Data value's bytes, found by pydicom (not by dicomflow's own reader,
    so the check does not share the de-identifier's idea of where the pixels are); None if none."""
    import pydicom
    from blake3 import blake3

    ds = pydicom.dcmread(path, defer_size=1024, stop_before_pixels=False)
    raw = ds._dict.get(0x7FE00010)
    if raw is None or getattr(raw, "value_tell", None) is None:
        return None
    hasher = blake3(max_threads=blake3.AUTO)
    with open(path, "rb") as fh:
        fh.seek(raw.value_tell)
        left = raw.length
        while left > 0:
            chunk = fh.read(min(left, 16 * 1024 * 1024))
            if not chunk:
                break
            hasher.update(chunk)
            left -= len(chunk)
    return hasher.hexdigest(), raw.length


def _check_outputs(source: Path, out: Path) -> bool:
    """Every output of dicomflow's run accepted by ``dicomflow validate``, and its Pixel Data the
    source's byte for byte (BLAKE3 of the value, located by pydicom in both files). Untimed."""
    outputs = sorted(p for p in out.rglob("*") if p.is_file()) if out.is_dir() else []
    sources = {p.name: p for p in ([source] if source.is_file() else sorted(source.rglob("*.dcm")))}
    done = subprocess.run(
        [str(BIN / "dicomflow"), "validate", str(out)], capture_output=True, text=True, check=False
    )
    said = [line for line in (done.stderr + done.stdout).splitlines() if line.startswith("validate:")]
    summary = said[-1] if said else "no summary"
    same = sum(
        1
        for p in outputs
        if p.name in sources
        and (h := _pixel_value_hash(p)) is not None
        and h == _pixel_value_hash(sources[p.name])
    )
    ok = done.returncode == 0 and same == len(outputs) == len(sources)
    print(
        f"    dicomflow outputs checked: {summary} (exit {done.returncode}); pixel values identical to "
        f"the source's in {same}/{len(outputs)} (of {len(sources)} inputs) -> {'ok' if ok else 'FAILED'}",
        flush=True,
    )
    return ok


def _clear(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _skipped(tool: str, why: str) -> Run:
    return Run(tool, f"skipped: {why}")


def _measure(tool: str, cmd: Sequence[str], out: Path, sample: bool = True) -> Run:
    """Run ``cmd`` in its own process group with a timeout; wall time and peak RSS.

    ``sample``: also sample the process tree's RSS every 20 ms (about 0.7 ms a sample here: it
    takes a little of the CPU a tool on both cores would use, so only the first round samples)."""
    # Linux carries the spawning process's high-water RSS into the child's ru_maxrss across exec, so
    # a child of this (Python) process never reports under ~18 MB. GNU time, small itself, spawns
    # the tool and reports the tool's own figure; wait4's is the fallback.
    rss_file = out.parent / f"{tool}.maxrss"
    rss_file.unlink(missing_ok=True)
    wrapped = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *cmd] if Path(GNU_TIME).exists() else list(cmd)
    start = time.perf_counter()
    proc = subprocess.Popen(
        wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    sampler = _TreeSampler(proc.pid)
    if sample:
        sampler.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # our own child's group: the tool and its workers

    timer = threading.Timer(TIMEOUT_S, kill)
    timer.start()
    stderr_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read() if proc.stderr else b""))
    reader.start()
    _, wait_status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    timer.cancel()
    if sample:
        sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(wait_status)
    reader.join()
    rss = usage.ru_maxrss / 1024.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        rss = int(rss_file.read_text().split()[-1]) / 1024.0
    files_out = sum(1 for p in out.rglob("*") if p.is_file()) if out.exists() else 0
    if timed_out.is_set():
        return Run(tool, "timeout", wall, rss, files_out, max(rss, sampler.peak_mb))
    if proc.returncode != 0:
        tail = b"".join(stderr_chunks).decode(errors="replace").strip().splitlines()[-3:]
        print(f"    {tool} exited {proc.returncode}: {' | '.join(tail)[:300]}", flush=True)
        return Run(tool, f"exit {proc.returncode}", wall, rss, files_out, max(rss, sampler.peak_mb))
    return Run(tool, "ok", wall, rss, files_out, max(rss, sampler.peak_mb))


def _python_start() -> float:
    """The start of a Python process that imports what ``dicomflow deid`` imports before its
    first file (best of 3)."""
    starts = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import dicomflow.cli.deid, dicomflow.deid.stream"], check=True)
        starts.append(time.perf_counter() - started)
    return min(starts)


def _print_floor(source: Path, gdcm: Run | None) -> None:
    """What the series costs before any header is looked at, against the 1.2x-gdcmanon budget.

    Per file, in this process (CPU time, best of 3 passes), what ``dicomflow deid`` does to it
    besides the header: read it whole, create the output (a new file, as each run does: here that
    costs more than the write), write it, BLAKE3 of the pixels (the proof's "before"), read the
    written range back and compare it, rename it into place; and, for a scan folder (a
    ``manifest.json``; not this input), the output's SHA-256 for the de-identified manifest.
    gdcmanon does the read, create and write only. Plus the start of a Python process that
    imports what ``dicomflow deid`` imports before its first file. Both cores, perfectly shared,
    is the best case."""
    import hashlib

    from blake3 import blake3

    files = sorted(p for p in source.rglob("*.dcm") if p.is_file())
    scan = (source / "manifest.json").is_file()
    scratch = HERE / "out" / "floor"
    size = max(p.stat().st_size for p in files)
    buffer = memoryview(bytearray(size))

    def one_pass(integrity: bool) -> float:
        back = bytearray()  # as dicomflow's: one buffer of the range's length, compared by memcmp
        _clear(scratch)
        scratch.mkdir(parents=True, exist_ok=True)
        started = time.process_time()
        for i, path in enumerate(files):
            fd = os.open(path, os.O_RDONLY)
            n = os.preadv(fd, [buffer[: os.fstat(fd).st_size]], 0)
            os.close(fd)
            data = buffer[:n]
            if integrity:
                blake3(data).digest()
            partial = scratch / f"{i}.dcm.partial"
            out = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            os.pwrite(out, data, 0)
            if integrity:
                if len(back) != n:
                    back = bytearray(n)
                os.preadv(out, [back], 0)
                assert back == data  # (bytearray == memoryview: a memcmp; the other way round is not)
            os.close(out)
            if integrity:
                os.replace(partial, scratch / f"{i}.dcm")
                if scan:
                    hashlib.sha256(data).digest()
        return (time.process_time() - started) / len(files)

    bare = min(one_pass(False) for _ in range(3))
    full = min(one_pass(True) for _ in range(3))
    _clear(scratch)
    start = _python_start()
    cores = os.cpu_count() or 1
    floor = start + len(files) * full / cores
    line = (
        f"  floor before any header work: {full * 1000:.2f} ms CPU a file with the integrity work "
        f"({bare * 1000:.2f} ms for read + create + write alone), Python start {start:.3f} s: "
        f"{floor:.3f} s for {len(files)} files on {cores} cores"
    )
    if gdcm is not None and gdcm.ok:
        budget = (gdcm.median_s or gdcm.wall_s) / SERIES_TARGET
        line += f"; {SERIES_TARGET}x gdcmanon needs {budget:.3f} s ({floor / budget:.2f}x of it)"
    print(line, flush=True)


def _print_file_floor(source: Path, cp: Run | None) -> None:
    """What the 1 GB file costs before its pixels are copied, against the 1.5x-cp budget: the
    Python start, and the header's rewrite and leak check in a fresh process (a run of the CLI has
    no memory of an earlier file), timed apart (best of 3). Their sum plus cp's own copy is this
    design's floor: the copy cannot start before the new header's length is known."""
    path = source if source.is_file() else next(p for p in source.rglob("*.dcm") if p.is_file())
    probe = (
        "import os, sys, time\n"
        "from dicomflow.deid.keys import LocalKey\n"
        "from dicomflow.deid.policy import Deidentifier\n"
        "from dicomflow.deid.stream import prepare\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY); size = os.fstat(fd).st_size\n"
        "started = time.perf_counter()\n"
        "prepare(lambda a, b: os.pread(fd, b - a, a), size, Deidentifier(LocalKey(b'k' * 32)))\n"
        "print(time.perf_counter() - started)\n"
    )
    header_s = min(
        float(
            subprocess.run(
                [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(3)
    )
    start = _python_start()
    line = f"  floor before the copy: Python start {start:.3f} s + header {header_s:.3f} s"
    if cp is not None and cp.ok:
        copy = cp.median_s or cp.wall_s
        floor = start + header_s + copy
        budget = FILE_TARGET * copy
        line += (
            f" + cp's copy {copy:.3f} s = {floor:.3f} s; {FILE_TARGET}x cp is {budget:.3f} s "
            f"({floor / budget:.2f}x of it, before any hashing)"
        )
    print(line, flush=True)


# -- printing --------------------------------------------------------------------------------------


def _print_run(run: Run, files: int, size: int) -> None:
    if run.status.startswith("skipped"):
        print(f"  {run.tool:17s} {run.status}", flush=True)
        return
    rate = files / run.wall_s if run.wall_s else 0.0
    mbps = size / 1e6 / run.wall_s if run.wall_s else 0.0
    mark = "" if run.ok else f"  [{run.status}]"
    median = f" [{run.median_s:5.2f}]" if run.repeats > 1 else " " * 8
    print(
        f"  {run.tool:17s} {run.wall_s:8.2f} s{median} {rate:9.1f} files/s {mbps:8.1f} MB/s "
        f"{run.peak_rss_mb:7.1f} MB peak RSS ({run.tree_rss_mb:7.1f} MB tree) "
        f"{run.files_out:4d} files out{mark}",
        flush=True,
    )


def _print_ratios(runs: list[Run]) -> None:
    ours = _find(runs, DICOMFLOW)
    if ours is None or not ours.ok:
        print("  ratios: dicomflow did not complete", flush=True)
        return
    for run in runs:
        if run.tool == DICOMFLOW or run.status.startswith("skipped"):
            continue
        if run.status == "timeout":
            print(
                f"  dicomflow vs {run.tool:17s} peer timed out after {TIMEOUT_S:.0f} s; dicomflow "
                f"took {ours.wall_s:.2f} s",
                flush=True,
            )
            continue
        speed = run.wall_s / ours.wall_s if ours.wall_s else float("inf")
        memory = ours.tree_rss_mb / run.tree_rss_mb if run.tree_rss_mb else float("inf")
        note = "" if run.ok else f" (peer {run.status})"
        medians = ""
        if run.repeats > 1 and ours.repeats > 1 and ours.median_s:
            medians = f" [medians {run.median_s / ours.median_s:5.2f}x]"
        print(
            f"  dicomflow vs {run.tool:17s} speed {speed:6.2f}x (peer time / ours){medians}   "
            f"RSS (tree) {memory:6.2f}x (ours / peer){note}",
            flush=True,
        )


def _find(runs: list[Run], tool: str) -> Run | None:
    return next((r for r in runs if r.tool == tool), None)


#: Issue 16's targets: files/s on the series against gdcmanon's, wall on the 1 GB file against cp's.
SERIES_TARGET = 1.2
FILE_TARGET = 1.5
RSS_TARGET_MB = 100.0
SERIES_ROW = "de-identify a 300-slice CT series (files/s, full profile + leak check + pixel proof)"
SERIES_DT_ROW = "de-identify the same series, each slice with its own Acquisition DateTime"
FILE_ROW = "de-identify one 1 GB enhanced multi-frame file (wall, peak RSS)"


def _others(runs: list[Run], ours: Run) -> str:
    """The slow peers against ours, for the record (they are not the target)."""
    parts = []
    for run in runs:
        if run.tool in FAST_TOOLS or run.status.startswith("skipped"):
            continue
        slower = "timeout" if run.status == "timeout" else f"{run.wall_s / ours.wall_s:.0f}x slower"
        parts.append(f"{run.tool} {slower}")
    return "; ".join(parts)


def _print_targets(results: dict[str, tuple[Case, int, int, list[Run]]]) -> None:
    """Print issue 16's targets, met or not (met: the median ratio reaches it, so one lucky round
    does not), and record the rows of the README's table (not for the quick inputs)."""
    print("\n-- targets (issue 16)", flush=True)
    load = f"load {os.getloadavg()[0]:.1f}"
    for case, files, _, runs in results.values():
        if case.multiframe:
            continue
        ours, gdcm = _find(runs, DICOMFLOW), _find(runs, "gdcmanon")
        name = "series (own date-times)" if case.acquired_apart else "series"
        if ours is None or not ours.ok:
            print(f"  {name}: dicomflow did not complete: NOT MET")
            continue
        if gdcm is None or not gdcm.ok:
            print(f"  {name}: not measured (gdcmanon {gdcm.status if gdcm else 'absent'})")
            continue
        a, b = files / ours.wall_s, files / gdcm.wall_s
        am, bm = files / (ours.median_s or ours.wall_s), files / (gdcm.median_s or gdcm.wall_s)
        met = am >= SERIES_TARGET * bm
        goal = f">= {SERIES_TARGET}x gdcmanon files/s"
        print(
            f"  {name}: dicomflow files/s {goal}: best {a:.0f} vs {b:.0f} ({a / b:.2f}x); median {am:.0f} "
            f"vs {bm:.0f} ({am / bm:.2f}x) -> {'MET' if met else 'NOT MET'} (on the median) [{load}]"
        )
        if QUICK:
            continue
        others = _others(runs, ours)
        record(
            SERIES_DT_ROW if case.acquired_apart else SERIES_ROW,
            ours=f"{ours.wall_s:.2f} s, {a:.0f} files/s (median {ours.median_s:.2f} s)"
            + (f"; {others}" if others else ""),
            peer=f"gdcmanon {gdcm.wall_s:.2f} s, {b:.0f} files/s (median {gdcm.median_s:.2f} s)",
            ratio=f"{am / bm:.2f}x gdcmanon files/s (median of {ours.repeats}; best {a / b:.2f}x)",
            target="none (shows the de-identifier's memory serves such a series)"
            if case.acquired_apart
            else goal,
            met=None if case.acquired_apart else met,
        )
    big = next((v for v in results.values() if v[0].multiframe), None)
    if big is not None:
        _, _, _, runs = big
        ours, cp = _find(runs, DICOMFLOW), _find(runs, "cp")
        if ours is None or not ours.ok or cp is None or not cp.ok:
            print("  1 GB file: not measured (dicomflow or cp did not complete): NOT MET")
        else:
            best, median = (
                ours.wall_s / cp.wall_s,
                (ours.median_s or ours.wall_s) / (cp.median_s or cp.wall_s),
            )
            peak = max(ours.peak_rss_mb, ours.tree_rss_mb)
            met = median <= FILE_TARGET and peak <= RSS_TARGET_MB
            print(
                f"  1 GB file: dicomflow wall <= {FILE_TARGET}x cp: best {ours.wall_s:.2f} s vs "
                f"{cp.wall_s:.2f} s ({best:.2f}x); median {ours.median_s:.2f} s vs {cp.median_s:.2f} s "
                f"({median:.2f}x); peak RSS {peak:.0f} MB (<= {RSS_TARGET_MB:.0f}) -> "
                f"{'MET' if met else 'NOT MET'} (on the median) [{load}]"
            )
            if not QUICK:
                gdcm = _find(runs, "gdcmanon")
                others = [_others(runs, ours)]
                if gdcm is not None and gdcm.ok:
                    others.insert(0, f"gdcmanon {gdcm.wall_s:.1f} s / {gdcm.tree_rss_mb:.0f} MB")
                record(
                    FILE_ROW,
                    ours=f"{ours.wall_s:.2f} s (median {ours.median_s:.2f} s), {peak:.0f} MB peak"
                    + "".join(f"; {o}" for o in others if o),
                    peer=f"cp {cp.wall_s:.2f} s (median {cp.median_s:.2f} s)",
                    ratio=f"{median:.2f}x cp wall (median of {ours.repeats}; best {best:.2f}x)",
                    target=f"<= {FILE_TARGET}x cp, RSS <= {RSS_TARGET_MB:.0f} MB",
                    met=met,
                )
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
