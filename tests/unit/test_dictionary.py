"""dicomflow.dicom.dictionary answers exactly as pydicom's dictionaries do, without importing pydicom."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom._dicom_dict import RepeatersDictionary
from pydicom.datadict import DicomDictionary, dictionary_keyword, dictionary_VR
from pydicom.uid import UID_dictionary, generate_uid

from dicomflow.dicom.dictionary import dictionary_vr, edition, is_registry_uid, keyword

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "layers/dicomflow/src/dicomflow/dicom/data/dictionary.json"
SCRIPT = ROOT / "scripts/make_dicom_dictionary.py"


def pydicom_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def pydicom_keyword(tag: int) -> str | None:
    try:
        return dictionary_keyword(tag)
    except KeyError:
        return None


def groups_for(mask: str) -> set[int]:
    """Concrete group numbers to try for a repeater mask: its ends, a few inside, the neighbours."""
    low, high = int(mask[:4].replace("x", "0"), 16), int(mask[:4].replace("x", "F"), 16)
    candidates = (low, low + 1, low + 2, low + 0x1E, high - 1, high, low - 2, high + 1)
    return {g for g in candidates if 0 <= g <= 0xFFFF}


def elements_for(mask: str) -> set[int]:
    low, high = int(mask[4:].replace("x", "0"), 16), int(mask[4:].replace("x", "F"), 16)
    return {e for e in (low, low + 0x10, high, low ^ 0x1, high + 1, low - 1) if 0 <= e <= 0xFFFF}


def test_every_main_dictionary_tag_matches_pydicom() -> None:
    # Given every tag of pydicom's main dictionary
    tags = list(DicomDictionary)
    assert len(tags) > 5000

    # When each is looked up in ours, Then VR and keyword are pydicom's, character for character
    mismatches = [
        (f"{t:08X}", dictionary_vr(t), dictionary_VR(t))
        for t in tags
        if dictionary_vr(t) != dictionary_VR(t) or keyword(t) != dictionary_keyword(t)
    ]
    assert mismatches == []


def test_every_repeater_mask_matches_pydicom_on_concrete_and_neighbouring_tags() -> None:
    # Given, for every mask of RepeatersDictionary, concrete tags inside it (several groups such as
    # 0x6000, 0x6002, 0x601E, 0x60FE) and neighbours just outside it (odd groups, 0x5FFE, 0x6100)
    tags = {
        group << 16 | element
        for mask in RepeatersDictionary
        for group in groups_for(mask)
        for element in elements_for(mask)
    }
    assert len(RepeatersDictionary) == 88 and len(tags) > 1000

    # When each is looked up, Then ours and pydicom's agree, None where pydicom raises KeyError
    disagreements = [
        f"{t:08X}"
        for t in sorted(tags)
        if (dictionary_vr(t), keyword(t)) != (pydicom_vr(t), pydicom_keyword(t))
    ]
    assert disagreements == []
    # and the set exercises both outcomes
    assert sum(pydicom_vr(t) is None for t in tags) > 100
    assert sum(pydicom_vr(t) is not None and t not in DicomDictionary for t in tags) > 300


@pytest.mark.parametrize(
    ("tag", "vr", "kw"),
    [
        (0x60003000, "OB or OW", "OverlayData"),
        (0x60023000, "OB or OW", "OverlayData"),
        (0x601E3000, "OB or OW", "OverlayData"),
        (0x60FE0010, "US", "OverlayRows"),
        (0x50000005, "US", "CurveDimensions"),
        (0x501E200C, "OB or OW", "AudioSampleData"),
        (0x7F020010, "OB or OW", "VariablePixelData"),
        (0x7F1E0020, "OW", "VariableCoefficientsSDVN"),
        (0x10000011, "US", "RunLengthTriplet"),
        (0x101012AB, "US", "ZonalMap"),
        (0x002031FE, "CS", "SourceImageIDs"),
        (0x00280410, "US", "RowsForNthOrderCoefficients"),
    ],
)
def test_repeating_group_tags(tag: int, vr: str, kw: str) -> None:
    # Given a tag of a repeating group, When looked up, Then the repeater's entry, as pydicom has it
    assert (dictionary_vr(tag), keyword(tag)) == (vr, kw) == (pydicom_vr(tag), pydicom_keyword(tag))


@pytest.mark.parametrize(
    "tag",
    [
        0x60013000,  # odd group: private, never the Overlay Data repeater
        0x601F3000,
        0x50010005,
        0x61003000,  # just past 60xx
        0x5FFE3000,  # just before 60xx
        0x60003001,  # element not in any 60xx entry
        0x7F010010,
        0x00280400,  # 002804x0 with x = 0: a repeater hit despite the zero
        0x00090010,  # private creator
        0x00091001,  # private element
        0x00291010,
        0x7FE10010,
        0x00080000,  # group length pydicom does not list
        0x00100000,
        0xFFFEE000,  # Item (pydicom lists it) and an unlisted neighbour
        0xFFFEE001,
        0x00080001,
        0xFFFFFFFF,
        0x00000000,
    ],
)
def test_private_unknown_and_neighbouring_tags_agree_with_pydicom(tag: int) -> None:
    # Given private, unknown and edge tags, When looked up, Then pydicom's answer, None for KeyError
    assert dictionary_vr(tag) == pydicom_vr(tag)
    assert keyword(tag) == pydicom_keyword(tag)


def test_private_tags_have_no_dictionary_vr() -> None:
    # Given private tags in odd groups, including groups that are repeaters when even
    for tag in (0x00090010, 0x00191001, 0x60013000, 0x50FF0005, 0x7FE10010, 0x10011001):
        # Then none has a VR or keyword
        assert dictionary_vr(tag) is None and keyword(tag) is None


def test_tags_outside_32_bits_are_unknown() -> None:
    # Given integers that are not tags (pydicom's Tag() refuses them), Then no VR, no exception
    for tag in (-1, 1 << 32, (1 << 32) | 0x60003000, -0x60003000):
        assert dictionary_vr(tag) is None and keyword(tag) is None


def test_every_registry_uid_is_known_padded_or_not() -> None:
    # Given every UID of pydicom's registry
    assert len(UID_dictionary) > 400
    # Then each is a registry UID, bare or with its NUL / space pad
    assert [u for u in UID_dictionary if not is_registry_uid(u)] == []
    assert [u for u in UID_dictionary if not is_registry_uid(u + "\0")] == []
    assert [u for u in UID_dictionary if not is_registry_uid(u + " ")] == []


@pytest.mark.parametrize(
    "uid",
    [
        "",
        "\0",
        "1.2.840.10008",  # a prefix of the registry root, not a registry entry
        "1.2.840.10008.5.1.4.1.1.2.",  # CT Image Storage with a trailing dot
        "1.2.840.10008.5.1.4.1.1.2.1.99",
        "1.2.840.113619.2.55.3.604688119.969.1268071029.320",  # a vendor instance UID
        "2.25.302952496012573414358917117340437463329",
        "1.2.840.10008.1.2.1x",
        "1.2.840.10008.1.2.1\0\0",  # two NULs is still padding
    ],
)
def test_uids_outside_the_registry_agree_with_pydicom(uid: str) -> None:
    # Given a UID, When checked, Then ours agrees with membership of pydicom's UID_dictionary
    assert is_registry_uid(uid) == (uid.strip("\0 ") in UID_dictionary)


def test_generated_uids_are_not_registry_uids() -> None:
    # Given instance UIDs as a device would make them
    uids = [generate_uid() for _ in range(200)]
    # Then none is taken for a registry UID (which the de-identifier would keep as not PHI)
    assert not any(is_registry_uid(u) for u in uids)


def test_data_file_records_its_sources_and_is_what_the_script_generates(tmp_path: Path) -> None:
    # Given the shipped data file
    shipped = DATA.read_text()
    document = json.loads(shipped)
    # Then it records the pydicom version and DICOM edition it came from
    assert document["pydicom"] == pydicom.__version__
    assert document["dicom_edition"] == pydicom.__dicom_version__
    assert edition() == (pydicom.__version__, pydicom.__dicom_version__)
    # When the generator runs again with the installed pydicom, twice
    out = tmp_path / "dictionary.json"
    for _ in range(2):
        subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, capture_output=True)
        # Then it writes the same bytes as shipped (idempotent, and the shipped file is current)
        assert out.read_text() == shipped


def test_lookups_do_not_import_pydicom() -> None:
    # Given a fresh interpreter
    code = (
        "import sys\n"
        "import dicomflow.dicom.dictionary as d\n"
        "assert d.dictionary_vr(0x00100010) == 'PN'\n"
        "assert d.dictionary_vr(0x60023000) == 'OB or OW'\n"
        "assert d.keyword(0x0020000D) == 'StudyInstanceUID'\n"
        "assert d.is_registry_uid('1.2.840.10008.1.2.1')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'pydicom', 'numpy'}))\n"
    )
    # When it imports the dictionary and looks things up
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    # Then neither pydicom nor numpy was imported
    assert result.stdout.strip() == "[]"
