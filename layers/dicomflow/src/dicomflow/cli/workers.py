"""A function over many jobs in worker processes, the results in job order.

On Linux the workers are forked (:func:`map_in_workers`). Why not
``concurrent.futures.ProcessPoolExecutor`` there: importing and starting it (with multiprocessing
and logging) costs a run 20-40 ms, this module about 10, when de-identifying a 300-slice series
takes 0.35 s; and a worker that dies (killed, out of memory, a fault) breaks the whole pool and
loses every result. Here a worker that dies loses only the jobs it had claimed and not finished:
they come back through ``on_lost`` with the reason, and the other workers go on.

How: the workers are forked after the caller has loaded what they need (a de-identifier, its
tables), so they inherit it. They claim chunks of jobs from one pipe (4-byte chunk numbers: pipe
reads and writes that small are atomic, so no chunk is claimed twice) and send each result back,
pickled and framed, on a pipe of their own.

Elsewhere (macOS, where forking a process that has loaded system frameworks, as numpy may, is
unsafe; Windows, which cannot fork) the workers are *spawned*: fresh interpreters, made ready by
the caller's ``initializer``, through ``ProcessPoolExecutor``. A worker that dies there breaks the
pool, and takes the jobs then running in the other workers with it: those come back through
``on_lost``, and a new pool goes on with the jobs not yet started. One worker, or one job: the
jobs run in this process, one after the other.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import selectors
import signal
import struct
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

J = TypeVar("J")
R = TypeVar("R")

#: Whether workers are forked (else spawned): on Linux only (see above).
FORK = sys.platform == "linux" and hasattr(os, "fork")
_CHUNK_NUMBER = struct.Struct("<I")
_FRAME = struct.Struct("<IQ")  # job index, length of the pickled result that follows


class WorkerError(Exception):
    """A job raised in a worker: the exception's type and where it was raised (file, line and
    function of each frame). Not its message, which might quote a value read from a file."""


def map_in_workers(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    workers: int,
    on_lost: Callable[[J, str], R],
    chunk: int = 1,
    first_here: bool = False,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
) -> list[R]:
    """``[fn(job) for job in jobs]`` on ``workers`` processes (forked on Linux, else spawned).

    ``on_lost(job, reason)`` gives the result of a job whose worker died before finishing it.
    An exception raised by ``fn`` ends the run with :class:`WorkerError` (as ``map`` would).
    ``first_here``: run the first job in this process before forking, so that whatever it warms
    (caches, what ``fn`` remembers from job to job) is inherited by every worker instead of being
    warmed by each. ``initializer(*initargs)`` readies a spawned worker (a forked one inherits
    what this process made ready): ``fn``, ``initializer`` and the jobs must then pickle.
    """
    if workers <= 1 or len(jobs) <= 1:
        return [fn(job) for job in jobs]
    if not FORK:
        return _map_spawned(fn, jobs, workers, on_lost, chunk, initializer, initargs)
    if first_here:
        first = fn(jobs[0])
        return [first, *map_in_workers(fn, jobs[1:], workers, on_lost, chunk)]
    chunks = (len(jobs) + chunk - 1) // chunk
    workers = min(workers, chunks)
    claim_r, claim_w = os.pipe()
    children: dict[int, int] = {}  # pid -> read end of its result pipe
    feeder: threading.Thread | None = None
    results: dict[int, R] = {}
    # What the parent loaded is shared with the workers page by page until written to; a garbage
    # collection in a worker would write to every object (and copy every page): keep them out of it.
    gc.freeze()
    try:
        for _ in range(workers):
            result_r, result_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker: never returns
                os.close(claim_w)
                os.close(result_r)
                for other in children.values():
                    os.close(other)
                _work(fn, jobs, chunk, claim_r, result_w)
            os.close(result_w)
            children[pid] = result_r
        os.close(claim_r)
        claim_r = -1
        # Chunk numbers are fed from a thread: more than a pipe holds would block this one.
        feeder = threading.Thread(target=_feed, args=(claim_w, chunks), daemon=True)
        feeder.start()
        failure = _collect(children, results)
    except BaseException:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise
    finally:
        deaths = {pid: os.waitpid(pid, 0)[1] for pid in children}
        if feeder is not None:
            feeder.join()
        else:  # failed before feeding (fork refused): close what the feeder would have
            os.close(claim_w)
            if claim_r >= 0:
                os.close(claim_r)
        gc.unfreeze()
    if failure is not None:
        raise WorkerError(failure)
    out: list[R] = []
    for index, job in enumerate(jobs):
        if index in results:
            out.append(results[index])
        else:
            out.append(on_lost(job, _death_reason(deaths)))
    return out


def _map_spawned(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    workers: int,
    on_lost: Callable[[J, str], R],
    chunk: int,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
) -> list[R]:
    """:func:`map_in_workers` on spawned workers: at most two chunks per worker in flight, so that
    a pool that breaks takes only those with it; a new pool goes on with the rest."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    waiting = deque(range(start, min(len(jobs), start + chunk)) for start in range(0, len(jobs), chunk))
    results: dict[int, R] = {}
    while waiting:
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=initializer, initargs=initargs
        ) as pool:
            running: dict[Future[list[R | WorkerError]], range] = {}
            broken = False
            while (waiting and not broken) or running:
                while waiting and not broken and len(running) < 2 * workers:
                    span = waiting.popleft()
                    try:
                        running[pool.submit(_run_chunk, fn, [jobs[i] for i in span])] = span
                    except BrokenProcessPool:
                        # The pool broke after the last wait (a worker died meanwhile): this chunk
                        # was never sent, so it is not lost; the next pool takes it.
                        waiting.appendleft(span)
                        broken = True
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    span = running.pop(future)
                    try:
                        outcome = future.result()
                    except BrokenProcessPool:
                        broken = True
                        for index in span:
                            results[index] = on_lost(jobs[index], _BROKEN)
                        continue
                    for index, result in zip(span, outcome, strict=False):  # short after a job's exception
                        if isinstance(result, WorkerError):
                            raise result
                        results[index] = result
    return [results[index] for index in range(len(jobs))]


_BROKEN = "a worker process ended (killed, out of memory or a fault) before this file was finished"


def _run_chunk(fn: Callable[[J], R], jobs: list[J]) -> list[R | WorkerError]:
    """In a spawned worker: ``fn`` over ``jobs``; an exception comes back as its type and where
    it was raised (its message might quote a value read from a file)."""
    out: list[R | WorkerError] = []
    for job in jobs:
        try:
            out.append(fn(job))
        except Exception as exc:  # noqa: BLE001 - sent to the parent, which raises it
            out.append(WorkerError(_where(exc)))
            break
    return out


def _work(fn: Callable[[J], R], jobs: Sequence[J], chunk: int, claim_r: int, result_w: int) -> None:
    status = 0
    try:
        while True:
            claimed = os.read(claim_r, _CHUNK_NUMBER.size)
            if len(claimed) < _CHUNK_NUMBER.size:
                break  # no chunks left
            (number,) = _CHUNK_NUMBER.unpack(claimed)
            for index in range(number * chunk, min(len(jobs), (number + 1) * chunk)):
                try:
                    payload = pickle.dumps(fn(jobs[index]), protocol=pickle.HIGHEST_PROTOCOL)
                except Exception as exc:  # noqa: BLE001 - sent to the parent, which raises it
                    payload = pickle.dumps(WorkerError(_where(exc)))
                _write_all(result_w, _FRAME.pack(index, len(payload)) + payload)
    except BaseException:  # noqa: BLE001 - a worker must never return into the caller's code
        status = 1
    finally:
        os._exit(status)


def _feed(claim_w: int, chunks: int) -> None:
    try:
        for number in range(chunks):
            os.write(claim_w, _CHUNK_NUMBER.pack(number))
    except OSError:
        pass  # every worker is gone: the jobs left are reported lost
    finally:
        os.close(claim_w)


def _collect(children: dict[int, int], results: dict[int, Any]) -> str | None:
    """Read every worker's results until all have closed their pipes; the first job error, if any."""
    failure: str | None = None
    buffers = {fd: bytearray() for fd in children.values()}
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        while buffers:
            for key, _ in selector.select():
                fd = int(key.fd)
                data = os.read(fd, 1 << 20)
                if not data:
                    selector.unregister(fd)
                    os.close(fd)
                    del buffers[fd]
                    continue
                buffer = buffers[fd]
                buffer += data
                while len(buffer) >= _FRAME.size:
                    index, length = _FRAME.unpack_from(buffer)
                    if len(buffer) < _FRAME.size + length:
                        break
                    result = pickle.loads(buffer[_FRAME.size : _FRAME.size + length])
                    del buffer[: _FRAME.size + length]
                    if isinstance(result, WorkerError):
                        failure = failure or str(result)
                    else:
                        results[index] = result
    return failure


def _death_reason(deaths: dict[int, int]) -> str:
    for status in deaths.values():
        if os.WIFSIGNALED(status):
            return f"the worker process was killed by signal {os.WTERMSIG(status)} before finishing this file"
    return "the worker process ended before finishing this file"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _where(exc: BaseException) -> str:
    import traceback  # 3 ms to import: only on a failure

    frames = traceback.extract_tb(exc.__traceback__)
    trail = " <- ".join(f"{f.filename}:{f.lineno} {f.name}" for f in reversed(frames))
    return f"{type(exc).__name__} raised in a worker at {trail}"
