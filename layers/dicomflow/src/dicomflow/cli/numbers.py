"""argparse ``type=`` functions for numeric flags: a bad number is refused while parsing, in one
line that names the flag and the range, before anything is read or written.

Examples
--------
>>> int_range(1, 8)("4")
4
>>> int_range(1, 8)("0")
Traceback (most recent call last):
    ...
argparse.ArgumentTypeError: must be a whole number from 1 to 8, not 0
>>> positive_int("-2")
Traceback (most recent call last):
    ...
argparse.ArgumentTypeError: must be a whole number >= 1, not -2
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

#: An upper bound for process counts (--workers, --jobs): far above any core count, low enough that
#: a typo does not fork thousands of processes.
MAX_PROCESSES = 512


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """A ``type=`` that accepts whole numbers from ``low`` to ``high`` (no upper bound if None)."""
    wanted = f"a whole number >= {low}" if high is None else f"a whole number from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {value}")
        return value

    parse.__name__ = "whole number"  # what argparse names in its own messages
    return parse


positive_int = int_range(1)
non_negative_int = int_range(0)
processes = int_range(1, MAX_PROCESSES)
