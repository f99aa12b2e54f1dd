"""Multipart arithmetic shared by the device and the API: part sizes, counts and byte ranges.

S3's rules: every part but the last is 5 MiB to 5 GiB, at most 10,000 parts, a single PUT holds at
most 5 GiB. The device and the API choose part sizes with the same function, so a device can hash
its parts while it builds the manifest, before the API has answered. Standard library only.
"""

from __future__ import annotations

MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
MAX_SINGLE_PUT = 5 * GiB
DEFAULT_PART_SIZE = 64 * MiB


def part_size_is_valid(file_size: int, part_size: int) -> bool:
    """True when ``part_size`` is a legal S3 part size for a file of ``file_size`` bytes.

    Examples
    --------
    >>> part_size_is_valid(100 * MiB, 5 * MiB)
    True
    >>> part_size_is_valid(100 * GiB, 5 * MiB)  # 20,480 parts: over 10,000
    False
    """
    if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
        return False
    return part_count(file_size, part_size) <= MAX_PARTS


def choose_part_size(file_size: int, preferred: int = DEFAULT_PART_SIZE) -> int:
    """The part size for a file: ``preferred`` clamped to S3's limits, raised (in whole MiB) when
    the file would otherwise need more than 10,000 parts.

    Examples
    --------
    >>> choose_part_size(1 * GiB) // MiB
    64
    >>> choose_part_size(1 * GiB, preferred=1) // MiB  # below S3's minimum
    5
    >>> choose_part_size(1000 * GiB, preferred=5 * MiB) // MiB  # 10,000 parts of 103 MiB
    103
    """
    size = max(MIN_PART_SIZE, min(int(preferred), MAX_PART_SIZE))
    floor = -(-file_size // MAX_PARTS)  # ceil: the smallest size that fits in 10,000 parts
    if size < floor:
        size = -(-floor // MiB) * MiB
    return min(size, MAX_PART_SIZE)


def is_single_put(file_size: int, part_size: int) -> bool:
    """A file that fits in one part goes up in one presigned PUT (no multipart upload)."""
    return file_size <= part_size and file_size <= MAX_SINGLE_PUT


def part_count(file_size: int, part_size: int) -> int:
    """Number of parts (at least 1).

    Examples
    --------
    >>> part_count(11 * MiB, 5 * MiB)
    3
    """
    return max(1, -(-file_size // part_size))


def part_range(file_size: int, part_size: int, part_number: int) -> tuple[int, int]:
    """Byte range ``[start, end)`` of 1-based ``part_number``.

    Examples
    --------
    >>> part_range(11 * MiB, 5 * MiB, 3) == (10 * MiB, 11 * MiB)
    True
    """
    if not 1 <= part_number <= part_count(file_size, part_size):
        raise ValueError(f"part {part_number} is outside 1..{part_count(file_size, part_size)}")
    start = (part_number - 1) * part_size
    return start, min(start + part_size, file_size)
