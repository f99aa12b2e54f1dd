"""Helpers that keep patient data out of logs, traces, metrics, exception messages and events."""

from __future__ import annotations

import hashlib


def fingerprint(value: str | bytes, length: int = 12) -> str:
    """A short, stable, non-reversible reference to a value (an S3 key, a file name) for logs.

    Unkeyed SHA-256, truncated: enough to correlate log lines, not to recover the value. Values
    with little entropy (a birth date) must not be fingerprinted into logs at all.

    Examples
    --------
    >>> fingerprint("scans/abc/files/phase_00/slice_0001.dcm")
    'e49fb778776b'
    """
    data = value.encode("utf-8") if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()[:length]
