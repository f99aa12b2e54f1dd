"""The files a campaign mutates: pydicom's test files (the kinds of DICOM it reads) and phantoms."""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

#: pydicom test files, by name: every encoding the engines meet (implicit, explicit, big endian,
#: deflated, encapsulated, no preamble, no file meta, private and nested sequences, already damaged).
#: Named, not globbed: ``get_testdata_files`` also tries to download, and this machine has no network.
PYDICOM_FILES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_padded.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_truncated.dcm",
    "ExplVR_BigEnd.dcm",
    "ExplVR_LitEndNoMeta.dcm",
    "ExplVR_BigEndNoMeta.dcm",
    "no_meta_group_length.dcm",
    "meta_missing_tsyntax.dcm",
    "empty_charset_LEI.dcm",
    "image_dfl.dcm",
    "JPEG2000.dcm",
    "JPEG2000-embedded-sequence-delimiter.dcm",
    "SC_rgb.dcm",
    "SC_rgb_rle_2frame.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
    "rtplan.dcm",
    "rtplan_truncated.dcm",
    "rtdose.dcm",
    "rtstruct.dcm",
    "nested_priv_SQ.dcm",
    "priv_SQ.dcm",
    "UN_sequence.dcm",
    "badVR.dcm",
    "reportsi.dcm",
    "test-SR.dcm",
    "liver_1frame.dcm",
    "emri_small.dcm",
)


@dataclass(frozen=True)
class Seed:
    name: str  # a short name for reports (a pydicom file name, or "phantom-...")
    data: bytes


def load_seeds() -> list[Seed]:
    """pydicom's files listed above that are present, then four small phantom files."""
    from pydicom.data import get_testdata_file

    seeds = []
    for name in PYDICOM_FILES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = get_testdata_file(name, download=False)
        if isinstance(path, str):
            seeds.append(Seed(name.removesuffix(".dcm"), Path(path).read_bytes()))
    return seeds + _phantom_seeds()


def _phantom_seeds() -> list[Seed]:
    from dicomflow.phantom import generate_phantom

    seeds = []
    with tempfile.TemporaryDirectory(prefix="dicomflow-fuzz-seeds-") as tmp:
        generate_phantom(Path(tmp, "single"), phases=1, slices=2, size=16, seed=3, workers=1)
        generate_phantom(Path(tmp, "multi"), phases=1, slices=3, size=16, multiframe=True, seed=4, workers=1)
        for i, path in enumerate(sorted(Path(tmp, "single").rglob("*.dcm"))):
            seeds.append(Seed(f"phantom-slice{i}", path.read_bytes()))
        for path in sorted(Path(tmp, "multi").rglob("*.dcm")):
            seeds.append(Seed("phantom-enhanced", path.read_bytes()))
    return seeds
