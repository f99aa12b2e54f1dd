"""The DICOM data dictionary and UID registry without pydicom: VR and keyword by tag, registry UIDs.

Importing pydicom costs about 0.3 s per process, too much for a header rewriter that handles one
small file in a few milliseconds. This module answers the two questions that rewriter asks of
pydicom's dictionaries, from a JSON copy generated from the installed pydicom by
``scripts/make_dicom_dictionary.py`` (``data/dictionary.json``, which records the pydicom version
and the DICOM edition). It uses the standard library only, and loads the JSON once, on first use.

Answers are pydicom's to the letter (``tests/unit/test_dictionary.py`` compares every entry):
:func:`dictionary_vr` is ``pydicom.datadict.dictionary_VR`` (``None`` where pydicom raises
``KeyError``), repeating groups (``50xx``, ``60xx``, ``7Fxx``, ``1000xxx0``...) included with
pydicom's matching rules; :func:`is_registry_uid` is membership of ``pydicom.uid.UID_dictionary``.
"""

from __future__ import annotations

import functools
import json
import os

__all__ = ["dictionary_vr", "edition", "is_registry_uid", "keyword"]

# Next to this module, in the package (and so in the Lambda layer). A plain path rather than
# importlib.resources, whose import alone costs more than loading the file.
_DATA = os.path.join(os.path.dirname(__file__), "data", "dictionary.json")


class _Dictionary:
    """The loaded data file, in the shapes the look-ups want."""

    __slots__ = ("edition", "pydicom", "repeaters", "tags", "uids")

    def __init__(
        self,
        tags: dict[str, list[str]],
        repeaters: list[list[str]],
        uids: list[str],
        pydicom: str,
        edition: str,
    ) -> None:
        #: tag -> [VR, keyword] of the main dictionary (the JSON lists as they come: no copies).
        self.tags = {int(tag, 16): entry for tag, entry in tags.items()}
        #: (value, care mask, VR, keyword) per repeater, in pydicom's order: first match wins.
        self.repeaters = tuple(_repeater(mask, vr, kw) for mask, vr, kw in repeaters)
        self.uids = frozenset(uids)
        self.pydicom = pydicom
        self.edition = edition


def _repeater(mask_x: str, vr: str, kw: str) -> tuple[int, int, str, str]:
    """``"60xx4000"`` -> (0x60004000, 0xFF00FFFF, vr, kw): a tag matches if ``(tag ^ value) & care == 0``."""
    value = int(mask_x.replace("x", "0"), 16)
    care = int("".join("0" if ch == "x" else "F" for ch in mask_x), 16)
    return value, care, vr, kw


@functools.cache
def _dictionary() -> _Dictionary:
    with open(_DATA, "rb") as file:
        document = json.loads(file.read())
    return _Dictionary(
        document["tags"],
        document["repeaters"],
        document["uids"],
        document["pydicom"],
        document["dicom_edition"],
    )


@functools.lru_cache(maxsize=4096)
def _entry(tag: int) -> tuple[str, str] | None:
    """The (VR, keyword) of a public ``tag``, repeating groups included; ``None`` if unknown."""
    dictionary = _dictionary()
    entry = dictionary.tags.get(tag)
    if entry is not None:
        return entry[0], entry[1]
    # As pydicom's get_entry: private (odd) groups are never repeaters, and a tag out of the
    # 32-bit range is no tag at all (pydicom's Tag() raises on it).
    if not 0 <= tag <= 0xFFFFFFFF or (tag >> 16) & 1:
        return None
    for value, care, vr, kw in dictionary.repeaters:
        if (tag ^ value) & care == 0:
            return vr, kw
    return None


def dictionary_vr(tag: int) -> str | None:
    """The VR of ``tag`` in the DICOM data dictionary, exactly as pydicom's ``dictionary_VR`` gives it.

    Parameters
    ----------
    tag : int
        The tag as ``group << 16 | element``.

    Returns
    -------
    str or None
        The VR, possibly ambiguous as in PS3.6 (``"US or SS"``, ``"OB or OW"``); ``None`` for
        private tags, group lengths pydicom does not list, and tags not in the dictionary.

    Examples
    --------
    >>> dictionary_vr(0x00100010)
    'PN'
    >>> dictionary_vr(0x00280106)
    'US or SS'
    >>> dictionary_vr(0x60023000)  # Overlay Data, repeating group 60xx
    'OB or OW'
    >>> dictionary_vr(0x00091001) is None  # private
    True
    """
    if (listed := _dictionary().tags.get(tag)) is not None:  # the common case, without the LRU
        return listed[0]
    entry = _entry(tag)
    return None if entry is None else entry[0]


def keyword(tag: int) -> str | None:
    """The keyword of ``tag`` (pydicom's ``dictionary_keyword``), for report text and debugging.

    Parameters
    ----------
    tag : int
        The tag as ``group << 16 | element``.

    Returns
    -------
    str or None
        The keyword (``""`` for the few retired entries without one, as in pydicom); ``None`` where
        :func:`dictionary_vr` is ``None``.

    Examples
    --------
    >>> keyword(0x0020000D)
    'StudyInstanceUID'
    >>> keyword(0x50100005)
    'CurveDimensions'
    >>> keyword(0x00111010) is None
    True
    """
    entry = _entry(tag)
    return None if entry is None else entry[1]


def is_registry_uid(uid: str) -> bool:
    """Whether ``uid`` is in the DICOM UID registry (SOP classes, transfer syntaxes, coding schemes).

    Such UIDs name standard things, never a patient or a study, so they are not PHI. Padding is
    ignored: NULs and spaces at either end are stripped first.

    Parameters
    ----------
    uid : str
        The UID, possibly with its trailing NUL pad.

    Returns
    -------
    bool
        ``True`` if the UID is a key of pydicom's ``UID_dictionary``.

    Examples
    --------
    >>> is_registry_uid("1.2.840.10008.5.1.4.1.1.2")  # CT Image Storage
    True
    >>> is_registry_uid("1.2.840.10008.1.2.1\\0")  # Explicit VR Little Endian, NUL-padded
    True
    >>> is_registry_uid("1.2.826.0.1.3680043.8.498.1")
    False
    """
    return uid.strip("\0 ") in _dictionary().uids


def edition() -> tuple[str, str]:
    """The (pydicom version, DICOM edition) the dictionary was generated from.

    Examples
    --------
    >>> pydicom_version, dicom_edition = edition()
    >>> len(dicom_edition) == 5 and dicom_edition[:4].isdigit()
    True
    """
    dictionary = _dictionary()
    return dictionary.pydicom, dictionary.edition
