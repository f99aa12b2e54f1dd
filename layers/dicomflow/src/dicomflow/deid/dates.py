"""Keyed per-patient date shift (Retain Longitudinal Temporal Information with Modified Dates).

Every DA and DT of one patient moves back by the same number of whole days, derived from the key and
the patient's original identity, so intervals (between phases, studies, series) survive and the true
dates do not. Times of day are kept: a whole-day shift leaves TM unchanged, and DT keeps its time
and UTC offset (``&ZZXX``). Ranges (``A-B``) and partial precision (``YYYY``, ``YYYYMM``) are
shifted part by part at their own precision.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache

from dicomflow.deid.keys import PseudonymKey

#: Shifts lie in [MIN_SHIFT_DAYS, MAX_SHIFT_DAYS] days into the past.
MIN_SHIFT_DAYS = 365
MAX_SHIFT_DAYS = 3650
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(.*)$")
_DT_PART = r"\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?(?:[+-]\d{4})?"
_DT_SINGLE = re.compile(_DT_PART)
_DT_RANGE = re.compile(rf"^({_DT_PART})?-({_DT_PART})?$")


def shift_days(key: PseudonymKey, patient: str) -> int:
    """Days to subtract for this patient (same key and patient: same shift).

    Examples
    --------
    >>> from dicomflow.deid.keys import LocalKey
    >>> MIN_SHIFT_DAYS <= shift_days(LocalKey(b"k" * 32), "PAT-1") <= MAX_SHIFT_DAYS
    True
    """
    mac = key.mac(b"date-shift:" + patient.encode("utf-8"))
    return MIN_SHIFT_DAYS + int.from_bytes(mac[:8], "big") % (MAX_SHIFT_DAYS - MIN_SHIFT_DAYS + 1)


def _shift_one(value: str, days: int, *, is_dt: bool) -> str:
    match = _DT.match(value)
    if not match:
        return ""  # not a date we can shift: never pass it through
    year, month, day, rest = match.groups()
    if not is_dt and rest:
        return ""
    try:
        if day is not None and month is not None:
            moved = dt.date(int(year), int(month), int(day)) - dt.timedelta(days=days)
            return f"{moved:%Y%m%d}" + rest
        if month is not None:
            # month precision: shift the first of the month, keep month precision
            moved = dt.date(int(year), int(month), 15) - dt.timedelta(days=days)
            return f"{moved:%Y%m}" + rest
        moved = dt.date(int(year), 7, 1) - dt.timedelta(days=days)
        return f"{moved:%Y}" + rest
    except (ValueError, OverflowError):
        return ""


@lru_cache(maxsize=4096)
def shift_value(value: str, days: int, vr: str) -> str:
    """Shift one DA or DT value (a single date, a range ``A-B``, ``-B`` or ``A-``).

    Unparseable input comes back empty (removed), never unchanged.

    Examples
    --------
    >>> shift_value("20240301", 366, "DA")
    '20230301'
    >>> shift_value("20240301-20240305", 1, "DA")
    '20240229-20240304'
    >>> shift_value("20240301101530.5-0500", 1, "DT")
    '20240229101530.5-0500'
    >>> shift_value("202403011015-20240302", 1, "DT")
    '202402291015-20240301'
    """
    text = value.strip()
    if not text:
        return text
    is_dt = vr == "DT"
    # A DT's UTC offset may be "-0500": only a "-" between two parts marks a range.
    if is_dt:
        single = _DT_SINGLE.fullmatch(text)
        ranged = None if single else _DT_RANGE.match(text)
        parts = [text] if single or not ranged else [ranged.group(1) or "", ranged.group(2) or ""]
    else:
        parts = text.split("-")
    if len(parts) == 1:
        return _shift_one(text, days, is_dt=is_dt)
    shifted = [_shift_one(p, days, is_dt=is_dt) if p else "" for p in parts]
    if any(p and not s for p, s in zip(parts, shifted, strict=True)):
        return ""
    return "-".join(shifted)
