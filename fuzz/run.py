"""Run a fuzz campaign: ``make fuzz`` (``SEED=0 N=10000``), or ``python -m fuzz.run --seed 0 --n 10000``.

Inputs run in worker processes (two: both cores) under a memory limit (``RLIMIT_AS``, 1 GiB) and a
watchdog: an engine call (header reader, validator, either de-identifier engine) taking more than
``--timeout`` seconds (5) is a failure, and a worker still busy with one input after four times
that (every engine's share) is killed and replaced, the input counted as a failure. Each worker
makes its inputs itself from ``(seed, index)``, so nothing large crosses a pipe and any input can
be made again (``--only 4711 --save out/fuzz``). Every failing input is written to ``--crashers``
(``out/fuzz/crashers``) as ``<sha256 prefix>-<what was done>.dcm``; the files kept under
``tests/fuzz_corpus/`` run again with every campaign.

The last line reads ``N inputs, M unhandled; slowest input ... s (...), slowest engine call ... s;
peak RSS ... MiB``; the exit status is 1 if M > 0.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import multiprocessing
import re
import resource
import shutil
import sys
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from fuzz import mutators
from fuzz.seeds import Seed, load_seeds

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "fuzz_corpus"
CRASHERS = REPO / "out" / "fuzz" / "crashers"
TIMEOUT = 5.0
#: Engine calls per input (header, validate, deid raw, deid pydicom): the watchdog's multiple.
CALLS = 4
MEMORY_MB = 1024

#: A job: ("gen", index) makes input ``index`` of the campaign; ("file", path) reads a corpus file.
Job = tuple[str, Any]
#: What runs one input: (input file, work folder, seconds per engine to fill) -> problems.
Check = Callable[[Path, Path, dict[str, float]], list[str]]


@dataclass
class Result:
    key: str  # "#4711" or the corpus file's name
    description: str
    sha256: str
    size: int
    problems: list[str]
    seconds: float  # the whole input, every engine
    rss_kb: int = 0
    slowest_call: tuple[str, float] = ("", 0.0)  # the engine that took longest, and its time


@dataclass
class Summary:
    inputs: int = 0
    failures: list[Result] = field(default_factory=list)
    slowest: Result | None = None
    slowest_call: Result | None = None
    peak_rss_kb: int = 0
    wall_seconds: float = 0.0

    def line(self) -> str:
        slow, call = self.slowest, self.slowest_call
        slowest = f"slowest input {slow.seconds:.2f} s ({slow.key} {slow.description})" if slow else ""
        if call is not None:
            engine, seconds = call.slowest_call
            slowest += f", slowest engine call {seconds:.2f} s ({engine}, {call.key})"
        return (
            f"{self.inputs} inputs, {len(self.failures)} unhandled; {slowest}; "
            f"peak RSS {self.peak_rss_kb // 1024} MiB"
        )


def campaign(
    seed: int,
    n: int,
    *,
    corpus: Sequence[Path] = (),
    only: Sequence[int] | None = None,
    workers: int = 2,
    timeout: float = TIMEOUT,
    memory_mb: int = MEMORY_MB,
    crashers: Path | None = None,
    progress: Callable[[str], None] | None = None,
    check: Check | None = None,
) -> Summary:
    """Run inputs ``0 .. n-1`` of campaign ``seed`` (or the ``only`` ones) and every ``corpus`` file.

    ``check`` replaces :func:`fuzz.targets.check_file` (the tests give the watchdog a hang)."""
    started = time.monotonic()
    seeds = load_seeds()
    mutators.prepare()  # the deflate bomb's blocks, made once here and shared by the forked workers
    indices = list(only) if only is not None else list(range(n))
    jobs: deque[Job] = deque([("gen", i) for i in indices] + [("file", str(p)) for p in corpus])
    total = len(jobs)
    summary = Summary()
    context = multiprocessing.get_context("fork")  # workers inherit the seeds: nothing to pickle
    root = Path(tempfile.mkdtemp(prefix="dicomflow-fuzz-"))
    slots = [_Slot(context, seed, seeds, memory_mb, timeout, root / f"w{i}", check) for i in range(workers)]
    try:
        while jobs or any(s.job is not None for s in slots):
            for slot in slots:
                if slot.job is None and jobs:
                    slot.give(jobs.popleft())
            busy = [s for s in slots if s.job is not None]
            now = time.monotonic()
            left = min(s.deadline(timeout * CALLS) for s in busy) - now
            ready = wait([s.conn for s in busy], timeout=max(0.0, left))
            for slot in busy:
                result: Result | None = None
                if slot.conn in ready:
                    try:
                        result = slot.conn.recv()
                    except EOFError:
                        code = slot.process.exitcode
                        result = _failed(slot, seed, seeds, f"the worker died (exit code {code})", timeout)
                        slot.restart()
                elif time.monotonic() > slot.deadline(timeout * CALLS):
                    problem = f"took more than {timeout * CALLS:g} s (killed)"
                    result = _failed(slot, seed, seeds, problem, timeout * CALLS)
                    slot.restart()
                if result is None:
                    continue
                slot.job = None
                _record(summary, result, seed, seeds, crashers)
                if progress and summary.inputs % 1000 == 0:
                    progress(
                        f"  {summary.inputs}/{total} inputs, {len(summary.failures)} unhandled "
                        f"({time.monotonic() - started:.0f} s)"
                    )
    finally:
        for slot in slots:
            slot.stop()
        shutil.rmtree(root, ignore_errors=True)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # killed workers included
    summary.peak_rss_kb = max(summary.peak_rss_kb, children)
    summary.wall_seconds = time.monotonic() - started
    return summary


def _record(summary: Summary, result: Result, seed: int, seeds: list[Seed], crashers: Path | None) -> None:
    summary.inputs += 1
    summary.peak_rss_kb = max(summary.peak_rss_kb, result.rss_kb)
    if summary.slowest is None or result.seconds > summary.slowest.seconds:
        summary.slowest = result
    if summary.slowest_call is None or result.slowest_call[1] > summary.slowest_call.slowest_call[1]:
        summary.slowest_call = result
    if result.problems:
        summary.failures.append(result)
        if crashers is not None:
            save(result, seed, seeds, crashers)


def save(result: Result, seed: int, seeds: list[Seed], folder: Path) -> Path:
    """Write a failing input as ``<sha256 prefix>-<description>.dcm`` (made again from its index)."""
    folder.mkdir(parents=True, exist_ok=True)
    if result.key.startswith("#"):
        data = mutators.make_input(seed, int(result.key[1:]), seeds).data
    else:
        data = (CORPUS / result.key).read_bytes() if (CORPUS / result.key).exists() else b""
    path = folder / file_name(hashlib.sha256(data).hexdigest(), result.description)
    path.write_bytes(data)
    return path


def file_name(sha256: str, description: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9+_-]+", "_", description)[:60]
    return f"{sha256[:12]}-{slug}.dcm"


def _failed(slot: _Slot, seed: int, seeds: list[Seed], problem: str, timeout: float) -> Result:
    assert slot.job is not None
    kind, value = slot.job
    if kind == "gen":
        made = mutators.make_input(seed, value, seeds)
        key, description, data = f"#{value}", made.description, made.data
    else:
        key, description, data = Path(value).name, "corpus", Path(value).read_bytes()
    seconds = timeout if "killed" in problem else time.monotonic() - slot.started
    return Result(key, description, hashlib.sha256(data).hexdigest(), len(data), [problem], seconds)


class _Slot:
    """One worker process and the job it runs."""

    def __init__(
        self,
        context: Any,
        seed: int,
        seeds: list[Seed],
        memory_mb: int,
        timeout: float,
        work: Path,
        check: Check | None,
    ) -> None:
        self._args = (seed, seeds, memory_mb, timeout, work, check)
        self._context = context
        self.job: Job | None = None
        self.started = 0.0
        self._start()

    def _start(self) -> None:
        self.conn, child = self._context.Pipe()
        self.process = self._context.Process(target=_work, args=(child, *self._args), daemon=True)
        self.process.start()
        child.close()

    def give(self, job: Job) -> None:
        self.job, self.started = job, time.monotonic()
        self.conn.send(job)

    def deadline(self, timeout: float) -> float:
        return self.started + timeout

    def restart(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()
        self._start()

    def stop(self) -> None:
        with contextlib.suppress(OSError):  # a worker that died already
            self.conn.send(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _work(
    conn: Connection,
    seed: int,
    seeds: list[Seed],
    memory_mb: int,
    timeout: float,
    work: Path,
    check: Check | None,
) -> None:
    """A worker: under the memory limit, make each input, run it through every engine, reply."""
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    warnings.simplefilter("ignore")  # pydicom's about damaged input: the verdicts say it
    if check is None:
        from fuzz.targets import check_file

        check = check_file
    work.mkdir(parents=True, exist_ok=True)
    path = work / "input.dcm"
    while True:
        job = conn.recv()
        if job is None:
            return
        kind, value = job
        if kind == "gen":
            made = mutators.make_input(seed, value, seeds)
            key, description, data = f"#{value}", made.description, made.data
            path.write_bytes(data)
            target = path
        else:
            target = Path(value)
            key, description, data = target.name, "corpus", target.read_bytes()
        began = time.perf_counter()
        calls: dict[str, float] = {}
        try:
            problems = check(target, work / "out", calls)
        except Exception as exc:  # noqa: BLE001 - a harness failure is reported as the input's
            problems = [f"the harness raised {type(exc).__name__}"]
        seconds = time.perf_counter() - began
        slowest = max(calls.items(), key=lambda kv: kv[1], default=("", 0.0))
        problems += [
            f"{name} took {s:.2f} s (more than {timeout:g} s)" for name, s in calls.items() if s > timeout
        ]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        digest = hashlib.sha256(data).hexdigest()
        conn.send(Result(key, description, digest, len(data), problems, seconds, rss, slowest))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    parser.add_argument("--n", type=int, default=10_000, help="inputs to make (default 10000)")
    parser.add_argument("--only", type=int, nargs="+", help="run only these inputs (indices)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds per input (default 5)")
    parser.add_argument("--memory-mb", type=int, default=MEMORY_MB, help="RLIMIT_AS per worker")
    parser.add_argument("--crashers", type=Path, default=CRASHERS, help="where failing inputs go")
    parser.add_argument("--no-corpus", action="store_true", help=f"skip the files of {CORPUS}")
    parser.add_argument("--save", type=Path, help="write the --only inputs here and stop")
    args = parser.parse_args(argv)
    if args.save is not None:
        seeds = load_seeds()
        for index in args.only or []:
            made = mutators.make_input(args.seed, index, seeds)
            args.save.mkdir(parents=True, exist_ok=True)
            out = args.save / file_name(made.sha256, made.description)
            out.write_bytes(made.data)
            print(out)
        return 0
    corpus = [] if args.no_corpus else sorted(CORPUS.glob("*.dcm"))
    what = f"inputs {args.only}" if args.only else f"{args.n} inputs"
    print(
        f"fuzz: seed {args.seed}, {what} + {len(corpus)} corpus files, {args.workers} workers, "
        f"{args.timeout:g} s and {args.memory_mb} MiB per input",
        flush=True,
    )
    summary = campaign(
        args.seed,
        args.n,
        corpus=corpus,
        only=args.only,
        workers=args.workers,
        timeout=args.timeout,
        memory_mb=args.memory_mb,
        crashers=args.crashers,
        progress=lambda line: print(line, flush=True),
    )
    for failure in summary.failures:
        print(f"UNHANDLED {failure.key} {failure.description} sha256 {failure.sha256[:12]}:")
        for problem in failure.problems[:4]:
            print(f"    {problem}")
    if summary.failures:
        print(f"failing inputs written to {args.crashers}")
    print(f"({summary.wall_seconds:.0f} s wall)")
    print(summary.line())
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
