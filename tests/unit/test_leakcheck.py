"""The leak check's search of the raw header bytes: values folded as normalise() folds them,
our own new UIDs masked only where they are whole runs, original UIDs found only as whole runs."""

from __future__ import annotations

import pytest

from dicomflow.deid.leakcheck import LeakSearch
from dicomflow.deid.policy import IdentifyingValues

ORIGINAL_UID = "1.2.826.0.1.3680043.8.498.4242"
NEW_UID = "2.25.123456789012345678901234567890"


def _raw_hits(raw: bytes, name: str = "Müller^Hans", new_uids: set[str] | None = None) -> int:
    identifying = IdentifyingValues()
    identifying.add("PN", name)
    identifying.add("UI", ORIGINAL_UID)
    search = LeakSearch(frozenset(identifying.text), frozenset())
    return search.report(identifying, [], raw, new_uids or set()).raw_hits


@pytest.mark.parametrize(
    ("raw", "hits"),
    [
        (b"\x10\x00\x10\x00PN\x0c\x00M\xfcller^Hans ", 3),  # whole name, MÜLLER and HANS (Latin-1)
        (b"\x00\x00MUELLER HENS\x00", 0),  # neither term
        (b"ref M\xfcLLER=\x00\x00", 1),  # one component, padded and separated
        (b"unrelated \x01\x02 bytes", 0),
    ],
)
def test_the_raw_search_folds_case_separators_and_padding_like_values(raw: bytes, hits: int) -> None:
    assert _raw_hits(raw) == hits


def test_letters_without_a_one_byte_upper_case_are_folded_as_values_are() -> None:
    # "ß" upper-cases to "SS": a name written either way is found under its normalised form
    assert _raw_hits(b"STRA\xdfE^Anna", name="Straße^Anna") == 3
    assert _raw_hits(b"\xb5 strasse anna", name="Straße^Anna") == 3
    assert _raw_hits(b"\xb5\xff nothing here", name="Straße^Anna") == 0
    # "ÿ" upper-cases to "Ÿ", outside Latin-1: such a name is searched for as text
    assert _raw_hits(b"\x00\xffvonne^Smith\x00", name="ÿvonne^Smith") == 3
    assert _raw_hits(b"\x00YVONNE SMITH\x00", name="ÿvonne^Smith") == 1  # SMITH only


def test_original_uids_count_only_as_whole_runs_and_our_own_uids_are_masked() -> None:
    # an original UID as it is encoded (a whole run of digits and dots) is a hit
    assert _raw_hits(b"\x00" + ORIGINAL_UID.encode() + b"\x00") == 1
    # inside a longer run it is not that UID
    assert _raw_hits(b"\x00" + ORIGINAL_UID.encode() + b".7\x00") == 0
    # our own new UID is masked where it stands whole, so a number inside it is not "found"
    assert _raw_hits(b"\x00" + NEW_UID.encode() + b"\x00", name="12345678901234", new_uids={NEW_UID}) == 0
    assert _raw_hits(b"\x00" + NEW_UID.encode() + b"\x00", name="12345678901234") == 1
    # but not where it is only part of a longer run
    assert _raw_hits(b"\x00" + NEW_UID.encode() + b"9\x00", name="12345678901234", new_uids={NEW_UID}) == 1
