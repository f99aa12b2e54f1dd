"""Generate ``dicomflow/dicom/data/dictionary.json``: the DICOM data dictionary without pydicom.

The byte-level header rewriter runs without importing pydicom (the import alone costs about 0.3 s
per process), yet needs two of pydicom's lookups: the dictionary VR of a tag (repeating groups
included) and membership of the DICOM UID registry. This script copies both from the installed
pydicom, so :mod:`dicomflow.dicom.dictionary` answers exactly as pydicom does:

* ``tags``: ``"GGGGEEEE": [VR, keyword]`` for every entry of ``pydicom._dicom_dict.DicomDictionary``;
* ``repeaters``: ``[mask, VR, keyword]`` for every entry of ``RepeatersDictionary``, in pydicom's
  order (``pydicom.datadict.mask_match`` returns the first mask that matches);
* ``uids``: every UID of ``pydicom.uid.UID_dictionary``, sorted.

The pydicom version and the DICOM edition its dictionaries come from (``pydicom.__dicom_version__``)
are recorded in the output. Running the script twice gives the same bytes. Re-run it when pydicom
is upgraded; ``tests/unit/test_dictionary.py`` fails until then.

Usage::

    python scripts/make_dicom_dictionary.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pydicom
from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary
from pydicom.uid import UID_dictionary

OUT = Path(__file__).resolve().parents[1] / "layers/dicomflow/src/dicomflow/dicom/data/dictionary.json"


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def render() -> str:
    """The JSON text: compact values, one entry per line so that a pydicom upgrade diffs legibly."""
    header = {
        "source": f"pydicom {pydicom.__version__}: pydicom._dicom_dict.DicomDictionary, "
        "RepeatersDictionary and pydicom.uid.UID_dictionary",
        "pydicom": pydicom.__version__,
        "dicom_edition": getattr(pydicom, "__dicom_version__", ""),
        "format": {
            "tags": "tag as 8 hex digits -> [VR, keyword], VR exactly as pydicom.datadict.dictionary_VR",
            "repeaters": "[mask with x for any hex digit, VR, keyword], first match wins (mask_match)",
            "uids": "DICOM registry UIDs (pydicom.uid.UID_dictionary keys)",
        },
    }
    lines = ["{"]
    lines += [f"{_dumps(key)}:{_dumps(value)}," for key, value in header.items()]
    lines.append('"tags":{')
    tags = [
        f"{_dumps(f'{tag:08X}')}:{_dumps([entry[0], entry[4]])}"
        for tag, entry in sorted(DicomDictionary.items())
    ]
    lines.append(",\n".join(tags))
    lines.append("},")
    lines.append('"repeaters":[')
    lines.append(
        ",\n".join(_dumps([mask, entry[0], entry[4]]) for mask, entry in RepeatersDictionary.items())
    )
    lines.append("],")
    lines.append('"uids":[')
    lines.append(",\n".join(_dumps(uid) for uid in sorted(UID_dictionary)))
    lines.append("]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    text = render()
    json.loads(text)  # never ship a file the runtime cannot parse
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.exists() and args.out.read_text() == text:
        print(f"{args.out} is up to date (pydicom {pydicom.__version__})")
        return 0
    args.out.write_text(text)
    print(
        f"{len(DicomDictionary)} tags, {len(RepeatersDictionary)} repeaters, {len(UID_dictionary)} UIDs "
        f"(pydicom {pydicom.__version__}, DICOM {getattr(pydicom, '__dicom_version__', '?')}), "
        f"{len(text.encode())} bytes written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
