"""Scan status moves forward only, along the documented lifecycle."""

from __future__ import annotations

import itertools

import pytest

from dicomflow.errors import InvalidTransitionError
from dicomflow.status import ScanStatus, allowed_next, can_transition, check_transition

HAPPY_PATH = ["UPLOADING", "UPLOADED", "VALIDATING", "DEIDENTIFYING", "ANALYZING", "COMPLETED"]


def test_the_happy_path_is_allowed_step_by_step():
    for current, new in itertools.pairwise(HAPPY_PATH):
        assert check_transition(ScanStatus(current), ScanStatus(new)) is ScanStatus(new)


@pytest.mark.parametrize("status", ["UPLOADING", "UPLOADED", "VALIDATING", "DEIDENTIFYING", "ANALYZING"])
def test_every_running_status_can_fail(status):
    assert can_transition(ScanStatus(status), ScanStatus.FAILED)


def test_only_validation_and_deidentification_can_reject():
    rejecting = {s for s in ScanStatus if can_transition(s, ScanStatus.REJECTED)}
    assert rejecting == {ScanStatus.VALIDATING, ScanStatus.DEIDENTIFYING}


@pytest.mark.parametrize("terminal", ["COMPLETED", "REJECTED", "FAILED"])
def test_terminal_statuses_go_nowhere(terminal):
    status = ScanStatus(terminal)
    assert status.is_terminal and not allowed_next(status)
    with pytest.raises(InvalidTransitionError, match=f"from {terminal} to UPLOADING.*terminal"):
        check_transition(status, ScanStatus.UPLOADING)


def test_no_skipping_and_no_going_back():
    # Every pair not on the documented graph is refused with a message naming both ends.
    allowed = (
        {(a, b) for a, b in itertools.pairwise(HAPPY_PATH)}
        | {(s, "FAILED") for s in HAPPY_PATH[:-1]}
        | {("VALIDATING", "REJECTED"), ("DEIDENTIFYING", "REJECTED")}
    )
    for a, b in itertools.product(ScanStatus, ScanStatus):
        if (a.value, b.value) in allowed:
            continue
        with pytest.raises(InvalidTransitionError, match=f"cannot go from {a.value} to {b.value}"):
            check_transition(a, b)


def test_status_parses_from_stored_strings():
    assert can_transition("UPLOADING", "UPLOADED")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ScanStatus("DONE")
