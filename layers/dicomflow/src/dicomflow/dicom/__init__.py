"""DICOM file handling that pydicom leaves to the caller: header-only reads over byte ranges.

:mod:`dicomflow.dicom.header` parses everything before the Pixel Data element from ranged reads
(a local file or an object store), so validation and de-identification never load pixel bytes.
:mod:`dicomflow.dicom.dictionary` answers data dictionary and UID registry questions without pydicom.

The names below are imported on first use (PEP 562), so that importing a pydicom-free submodule
such as :mod:`dicomflow.dicom.dictionary` does not import pydicom through this package.
"""

from __future__ import annotations

# Not typing.TYPE_CHECKING: importing typing would cost this package more than everything else in
# a pydicom-free process (mypy and ruff honour a module-level TYPE_CHECKING = False the same way).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from dicomflow.dicom.header import (
        DicomFormatError,
        DicomHeader,
        MalformedHeaderError,
        NotDicomError,
        TruncatedHeaderError,
        UnsupportedTransferSyntaxError,
        read_header,
        read_header_from_path,
        read_header_from_store,
    )

__all__ = [
    "DicomFormatError",
    "DicomHeader",
    "MalformedHeaderError",
    "NotDicomError",
    "TruncatedHeaderError",
    "UnsupportedTransferSyntaxError",
    "read_header",
    "read_header_from_path",
    "read_header_from_store",
]


def __getattr__(name: str) -> object:
    if name in __all__:
        from dicomflow.dicom import header

        value = getattr(header, name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
