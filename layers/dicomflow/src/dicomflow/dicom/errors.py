"""What is wrong with a DICOM file, as exceptions whose messages never quote a value from it.

Standard library only: the byte-level reader (:mod:`dicomflow.dicom.elements`) raises these without
importing pydicom; :mod:`dicomflow.dicom.header` (pydicom) raises the same classes.
"""

from __future__ import annotations

from dicomflow.errors import InvalidInputError


class DicomFormatError(InvalidInputError):
    """The bytes are not a DICOM file this reader can parse; the message says why."""


class NotDicomError(DicomFormatError):
    """Neither a preamble + ``DICM`` prefix nor a parseable data set at the start of the file."""


class TruncatedHeaderError(DicomFormatError):
    """The file ends inside the header (an element's declared length runs past the end)."""


class MalformedHeaderError(DicomFormatError):
    """An element of the header cannot be parsed (bad length, bad VR, inconsistent encoding)."""


class UnsupportedTransferSyntaxError(DicomFormatError):
    """The transfer syntax cannot be read header-only (e.g. a deflated file over the size limit)."""


class PixelDataError(DicomFormatError):
    """The encapsulated Pixel Data's items cannot be walked to their end (a malformed file)."""


class NonConformantError(DicomFormatError):
    """The object lacks what a DICOM file must carry (SOP Class and Instance UIDs)."""
