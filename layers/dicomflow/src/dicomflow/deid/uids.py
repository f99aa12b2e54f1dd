"""Keyed, deterministic UID remapping: ``2.25.<decimal of 128 bits of HMAC>``.

PS3.5 B.2 allows a UID under the ``2.25`` root made from a 128-bit integer (at most 39 digits, so
at most 44 characters, well under 64). The same key and original UID give the same new UID in
every file and every run, so references across a scan stay consistent.
"""

from __future__ import annotations

from dicomflow.deid.keys import PseudonymKey
from dicomflow.dicom.dictionary import is_registry_uid

_PREFIX = b"uid:"


def remap_uid(key: PseudonymKey, uid: str) -> str:
    """The de-identified UID for ``uid``.

    Examples
    --------
    >>> from dicomflow.deid.keys import LocalKey
    >>> new = remap_uid(LocalKey(b"k" * 32), "1.2.840.113619.2.55.3.1")
    >>> new.startswith("2.25.") and len(new) <= 64
    True
    """
    value = uid.strip("\0 ")
    if not value:
        return value
    number = int.from_bytes(key.mac(_PREFIX + value.encode("ascii", "replace"))[:16], "big")
    return f"2.25.{number or 1}"


def is_well_known(uid: str) -> bool:
    """A UID of the DICOM registry (SOP classes, transfer syntaxes, coding schemes): not PHI."""
    return is_registry_uid(uid)
