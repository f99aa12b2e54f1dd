"""map_in_workers: results in job order from worker processes; a job's exception ends the run saying
where (not its message); a worker that dies loses only jobs it had not finished, which come back
through on_lost with the reason, while the run goes on. Forked workers (Linux), and spawned ones
(macOS, Windows: tested here by asking for them)."""

from __future__ import annotations

import os
import signal

import pytest

from dicomflow.cli.workers import WorkerError, map_in_workers


def _square(n: int) -> tuple[int, int]:
    return n * n, os.getpid()


def _lost(n: int, reason: str) -> tuple[int, int]:
    return -n, 0


def test_results_come_back_in_job_order_from_several_workers() -> None:
    results = map_in_workers(_square, list(range(200)), workers=2, on_lost=_lost, chunk=3)
    assert [r for r, _ in results] == [n * n for n in range(200)]
    pids = {pid for _, pid in results}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # forked workers (one may take all)


def test_one_worker_or_one_job_runs_here() -> None:
    assert map_in_workers(_square, [3], workers=4, on_lost=_lost) == [(9, os.getpid())]
    assert [r for r, _ in map_in_workers(_square, [1, 2], workers=1, on_lost=_lost)] == [1, 4]


def _fails_on_seven(n: int) -> int:
    if n == 7:
        raise ValueError("seven is not allowed")
    return n


def test_an_exception_in_a_job_ends_the_run_saying_where_but_not_its_message() -> None:
    with pytest.raises(WorkerError, match=r"ValueError raised in a worker at .*_fails_on_seven") as info:
        map_in_workers(_fails_on_seven, list(range(20)), workers=2, on_lost=lambda n, r: n)
    # the message might quote a value read from a file: it stays in the worker
    assert "seven is not allowed" not in str(info.value)


def _dies_on_five(n: int) -> int:
    if n == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return n


class _Lost:
    """on_lost that records the reasons (the result of a lost job: -1)."""

    def __init__(self) -> None:
        self.reasons: dict[int, str] = {}

    def __call__(self, n: int, reason: str) -> int:
        self.reasons[n] = reason
        return -1


def test_a_worker_that_dies_loses_only_its_unfinished_jobs_and_says_why() -> None:
    on_lost = _Lost()
    lost = on_lost.reasons
    # chunks of 4: the worker that claims 4..7 dies on 5; 4 is done, 5, 6 and 7 are lost
    results = map_in_workers(_dies_on_five, list(range(40)), workers=2, on_lost=on_lost, chunk=4)
    assert 5 in lost and "signal 9" in lost[5]
    assert set(lost) <= {5, 6, 7} | set(range(8, 40))
    # every job that was not lost has its own result, in order
    assert all(results[n] == n for n in range(40) if n not in lost)
    assert results[4] == 4
    # the surviving worker went on: most jobs still finished
    assert len(lost) < 20


def test_first_here_runs_the_first_job_in_this_process_and_the_rest_in_workers() -> None:
    results = map_in_workers(_square, list(range(30)), workers=2, on_lost=_lost, chunk=2, first_here=True)
    assert [r for r, _ in results] == [n * n for n in range(30)]
    assert results[0][1] == os.getpid()
    assert all(pid != os.getpid() for _, pid in results[1:])


# -- spawned workers (where there is no fork) ------------------------------------------------------

_READY: list[str] = []


def _get_ready(word: str) -> None:
    _READY.append(word)


def _square_when_ready(n: int) -> tuple[int, int, list[str]]:
    return n * n, os.getpid(), list(_READY)


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomflow.cli import workers

    monkeypatch.setattr(workers, "FORK", False)


@pytest.mark.usefixtures("spawned")
def test_spawned_workers_are_made_ready_and_give_results_in_job_order() -> None:
    results = map_in_workers(
        _square_when_ready, list(range(60)), workers=2, on_lost=_lost, chunk=4,
        first_here=True, initializer=_get_ready, initargs=("ready",),
    )  # fmt: skip
    assert [r for r, _, _ in results] == [n * n for n in range(60)]
    # every job ran in a worker made ready by the initializer, none here (first_here needs a fork)
    assert all(pid != os.getpid() and ready == ["ready"] for _, pid, ready in results)
    assert _READY == []


@pytest.mark.usefixtures("spawned")
def test_a_spawned_jobs_exception_ends_the_run_saying_where_but_not_its_message() -> None:
    with pytest.raises(WorkerError, match=r"ValueError raised in a worker at .*_fails_on_seven") as info:
        map_in_workers(_fails_on_seven, list(range(20)), workers=2, on_lost=lambda n, r: n)
    assert "seven is not allowed" not in str(info.value)


@pytest.mark.usefixtures("spawned")
def test_a_spawned_worker_that_dies_loses_the_jobs_in_flight_and_the_run_goes_on() -> None:
    on_lost = _Lost()
    lost = on_lost.reasons
    results = map_in_workers(_dies_on_five, list(range(40)), workers=2, on_lost=on_lost, chunk=1)
    # the job that killed its worker is lost, with the reason; so may be those then running in the
    # other worker (at most two chunks per worker are in flight)
    assert 5 in lost and "ended" in lost[5]
    assert len(lost) <= 4
    # every other job has its own result, in order: a new pool went on with them
    assert all(results[n] == n for n in range(40) if n not in lost)
    assert all(results[n] == -1 for n in lost)
