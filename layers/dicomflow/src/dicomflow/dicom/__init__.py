"""DICOM file handling that pydicom leaves to the caller: header-only reads over byte ranges.

:mod:`dicomflow.dicom.header` parses everything before the Pixel Data element from ranged reads
(a local file or an object store), so validation and de-identification never load pixel bytes.
"""

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
