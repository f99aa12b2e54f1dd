"""Read a DICOM file's header (everything before Pixel Data) from byte ranges, never its pixels.

pydicom's ``dcmread(stop_before_pixels=True)`` already stops at the Pixel Data tag; what it cannot
do on its own is fetch only the bytes it needs from S3. :func:`read_header` hands pydicom a
read-only file object whose bytes come from ``read_range(start, end)`` calls in growing blocks
(64 KiB, then doubling), so a 1 GB scan costs one or two small ranged reads. It also reports where
the header ends and where the Pixel Data value starts, which the de-identifier needs to copy the
pixel bytes byte for byte (``header_end`` up to the end of the file).

Malformed input raises a :class:`DicomFormatError` subclass whose message names what is wrong
(never a value from the file): the validator turns it into a rejection reason.

Deflated Explicit VR Little Endian is the exception to "ranged": its data set is one deflate
stream, so the whole file is read and inflated in memory (bounded by ``max_deflated_size`` before
and ``max_inflated_size`` after inflation: a few MB of deflate can inflate to GBs) and the byte
offsets (``header_end``, ``pixel_data_value_offset``) do not apply to it.

Sequences nested deeper than :data:`~dicomflow.dicom.elements.MAX_SEQUENCE_DEPTH` are refused:
every reader and walker of a data set recurses once per level.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.values import converters

from dicomflow.dicom.dictionary import dictionary_vr
from dicomflow.dicom.elements import (
    MAX_HEADER_ELEMENTS,
    MAX_SEQUENCE_DEPTH,
    PIXEL_TAGS,
    Unsupported,
    pixel_element_header,
)
from dicomflow.dicom.errors import (
    DicomFormatError,
    MalformedHeaderError,
    NotDicomError,
    TruncatedHeaderError,
    UnsupportedTransferSyntaxError,
)
from dicomflow.errors import DicomflowError

if TYPE_CHECKING:
    from dicomflow.storage.base import ObjectStore

# The error classes live in the pydicom-free dicomflow.dicom.errors; they are importable from here too.
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

#: First ranged read; most headers (a CT slice's is 2-10 KiB) fit in it.
INITIAL_READ = 64 * 1024
#: Deflated files are inflated in memory: refuse anything larger than this (compressed size).
MAX_DEFLATED_SIZE = 256 * 1024 * 1024
#: ... and anything that inflates to more than this (a deflate bomb: 128 KiB inflate to 128 MiB).
#: The de-identifier holds a few copies of the inflated data set, so this bounds its memory.
MAX_INFLATED_SIZE = 128 * 1024 * 1024

_UNDEFINED = 0xFFFFFFFF
#: Bytes per value of the binary VRs (a length that is not a multiple is malformed: PS3.5 6.2).
_VALUE_SIZE = {"US": 2, "SS": 2, "US or SS": 2, "US or SS or OW": 2, "OW": 2, "UL": 4, "SL": 4, "FL": 4}
_VALUE_SIZE |= {"AT": 4, "OF": 4, "OL": 4, "FD": 8, "OD": 8, "SV": 8, "UV": 8, "OV": 8}


@dataclass(frozen=True)
class DicomHeader:
    """What precedes the pixels of a DICOM file, and where the pixels are.

    Attributes
    ----------
    has_preamble : bool
        The 128-byte preamble and the ``DICM`` prefix are present.
    file_meta : FileMetaDataset
        Group 0002 (empty if the file has none).
    dataset : Dataset
        Every element before (7FE0,0010) / (7FE0,0008) / (7FE0,0009), ``stop_before_pixels`` style.
    transfer_syntax : UID or None
        (0002,0010) as declared; ``None`` if the file meta lacks it.
    is_implicit_vr, is_little_endian : bool
        The encoding the data set was actually read with (declared, or inferred when undeclared).
    header_end : int
        Offset of the first byte of the pixel element's tag (``file_size`` if there is none): where
        a byte-for-byte copy of the pixel data starts.
    pixel_data_tag : int or None
        Which pixel element follows the header (0x7FE00010 for Pixel Data), ``None`` if none.
    pixel_data_value_offset : int or None
        Offset of the first byte of the pixel element's value.
    pixel_data_length : int or None
        Its declared length; ``None`` if undefined (encapsulated) or absent.
    file_size : int
        Size of the whole file in bytes.
    deflated : bool
        Deflated transfer syntax: the data set was inflated in memory, offsets do not apply
        (``header_end == file_size``, ``pixel_data_value_offset is None``).
    bytes_read : int
        How many bytes were fetched to parse the header (proof that pixels were not read).
    """

    has_preamble: bool
    file_meta: FileMetaDataset
    dataset: Dataset
    transfer_syntax: UID | None
    is_implicit_vr: bool
    is_little_endian: bool
    header_end: int
    pixel_data_tag: int | None
    pixel_data_value_offset: int | None
    pixel_data_length: int | None
    file_size: int
    deflated: bool = False
    bytes_read: int = 0

    @property
    def has_pixel_data(self) -> bool:
        return self.pixel_data_tag is not None


class _RangeFile(io.RawIOBase):
    """A read-only, seekable file over ``read_range``, fetched as one growing prefix of the file.

    pydicom reads a header sequentially from offset 0, so one contiguous cached prefix, extended in
    doubling blocks, serves every read with a handful of ranged requests.
    """

    def __init__(self, read_range: Callable[[int, int], bytes], size: int, initial: int) -> None:
        self._read_range = read_range
        self._size = size
        self._buf = bytearray()
        self._pos = 0
        self._next_block = initial
        self.cut_in_element_header = False
        self.headers = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:  # pragma: no cover - io contract
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError("negative seek position")
        self._pos = pos
        return pos

    def _ensure(self, end: int) -> None:
        end = min(end, self._size)
        while len(self._buf) < end:
            start = len(self._buf)
            stop = min(self._size, max(end, start + self._next_block))
            chunk = self._read_range(start, stop)
            if not chunk:
                raise TruncatedHeaderError("the object is shorter than its reported size")
            self._buf += chunk
            self._next_block *= 2

    def read(self, size: int | None = -1) -> bytes:
        # io.RawIOBase.read allocates ``size`` bytes before reading: an absurd declared length
        # (0xFFFFFFFE) would cost 4 GiB. Nothing past the end is ever returned, so none is allocated.
        if size == 8:  # an element's or item's header (or an 8-byte value): MAX_HEADER_ELEMENTS
            self.headers += 1
            if self.headers > MAX_HEADER_ELEMENTS:
                raise MalformedHeaderError(_TOO_MANY)
        left = max(0, self._size - self._pos)
        want = left if size is None or size < 0 else min(size, left)
        if size is not None and 0 < left < size <= 12:
            # pydicom takes a short element header read for a clean end of the file
            self.cut_in_element_header = True
        self._ensure(self._pos + want)
        data = bytes(self._buf[self._pos : self._pos + want])
        self._pos += len(data)
        if size == 8 and data[:2] in _ITEM_GROUP:
            # an item or delimiter header: pydicom makes a data set per item (twice an element's cost)
            self.headers += 1
        return data

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        want = len(b)
        if want <= 12 and self._pos < self._size < self._pos + want:
            # pydicom takes a short element header read for a clean end of the file
            self.cut_in_element_header = True
        self._ensure(self._pos + want)
        data = self._buf[self._pos : self._pos + want]
        n = len(data)
        b[:n] = data
        self._pos += n
        return n

    @property
    def bytes_read(self) -> int:
        return len(self._buf)


_TOO_MANY = f"the header holds more than {MAX_HEADER_ELEMENTS} elements and items"
_ITEM_GROUP = (b"\xfe\xff", b"\xff\xfe")  # (FFFE,eeee) little and big endian


class _CountedBytes(io.BytesIO):
    """An inflated data set, its element and item headers counted as :class:`_RangeFile` does."""

    headers = 0

    def read(self, size: int | None = -1) -> bytes:
        if size == 8:
            self.headers += 1
            if self.headers > MAX_HEADER_ELEMENTS:
                raise MalformedHeaderError(_TOO_MANY)
        data = super().read(size)
        if size == 8 and data[:2] in _ITEM_GROUP:
            self.headers += 1  # as _RangeFile counts them
        return data


def _pixel_element_header(raw: bytes, implicit: bool, little: bool) -> tuple[int, int, int | None]:
    """(tag, value offset from the tag, length or None) of the element header in ``raw``."""
    try:
        return pixel_element_header(raw, implicit, little)
    except Unsupported as exc:  # the only reason it gives: too few bytes
        raise TruncatedHeaderError("the file ends inside the Pixel Data element's header") from exc


def read_header(
    read_range: Callable[[int, int], bytes],
    file_size: int,
    *,
    initial_read: int = INITIAL_READ,
    max_deflated_size: int = MAX_DEFLATED_SIZE,
    max_inflated_size: int = MAX_INFLATED_SIZE,
) -> DicomHeader:
    """Parse the header of a DICOM file from ranged reads.

    Parameters
    ----------
    read_range : callable
        ``read_range(start, end)`` returns bytes ``[start, end)`` of the file (fewer at its end).
    file_size : int
        The file's size in bytes.
    initial_read : int, optional
        Size of the first read; later reads double.
    max_deflated_size : int, optional
        Largest deflated file that is inflated in memory.
    max_inflated_size : int, optional
        Largest data set a deflated file may inflate to.

    Returns
    -------
    DicomHeader

    Raises
    ------
    DicomFormatError
        A subclass saying what is wrong: :class:`NotDicomError`, :class:`TruncatedHeaderError`,
        :class:`MalformedHeaderError`, :class:`UnsupportedTransferSyntaxError`.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> path = get_testdata_file("CT_small.dcm")
    >>> data = open(path, "rb").read()
    >>> header = read_header(lambda start, end: data[start:end], len(data))
    >>> header.dataset.Modality, header.pixel_data_length
    ('CT', 32768)
    >>> data[header.pixel_data_value_offset - 12 : header.pixel_data_value_offset - 8]
    b'\\xe0\\x7f\\x10\\x00'
    """
    if file_size < 0:
        raise ValueError("file_size must be >= 0")
    if file_size == 0:
        raise NotDicomError("the file is empty")
    fp = _RangeFile(read_range, file_size, initial_read)
    try:
        with warnings.catch_warnings():
            # pydicom warns about oddities it tolerates; the validator reports those itself.
            warnings.simplefilter("ignore")
            inflated = _inflate_bounded(fp, file_size, max_deflated_size, max_inflated_size)
            parsed = _parse(fp, file_size, inflated)
    except DicomflowError:
        raise  # ours: a format error already, or the store's (retryable or not)
    except RecursionError as exc:
        raise MalformedHeaderError("sequences are nested too deeply to be read") from exc
    except InvalidDicomError as exc:
        raise NotDicomError("not a DICOM file: no 'DICM' prefix and no parseable data set") from exc
    except (EOFError, struct.error) as exc:
        raise TruncatedHeaderError("the file ends inside the header") from exc
    except Exception as exc:
        ours = _ours_inside(exc)
        if ours is not None:  # e.g. our bound, hit as pydicom read an item's tag (it re-raises OSError)
            raise ours from exc
        if _caused_by_recursion(exc):  # pydicom re-raises a RecursionError as OSError
            raise MalformedHeaderError("sequences are nested too deeply to be read") from exc
        # ValueError, KeyError, NotImplementedError (unknown VR), OSError ("No tag to read"),
        # zlib.error...: their messages can quote element values, so only the type is passed on.
        raise MalformedHeaderError(f"the header cannot be parsed ({type(exc).__name__} in pydicom)") from exc
    return parsed


def _ours_inside(exc: BaseException) -> DicomflowError | None:
    seen = exc.__cause__ or exc.__context__
    for _ in range(16):
        if seen is None or isinstance(seen, DicomflowError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _caused_by_recursion(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(16):
        if seen is None:
            return False
        if isinstance(seen, RecursionError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _inflate_bounded(
    fp: _RangeFile, file_size: int, max_deflated_size: int, max_inflated_size: int
) -> tuple[int, bytes] | None:
    """The inflated data set of a file whose file meta declares the deflated transfer syntax
    (``None`` for any other file), inflated at most to ``max_inflated_size`` + 1 bytes, before
    pydicom inflates it whole and unbounded."""
    start = _deflated_data_set_offset(fp, file_size)
    fp.seek(0)
    fp.cut_in_element_header, fp.headers = False, 0  # what this look ahead read does not count
    if start is None:
        return None
    if file_size > max_deflated_size:
        raise UnsupportedTransferSyntaxError(
            f"deflated file of {file_size} bytes exceeds the {max_deflated_size}-byte in-memory limit"
        )
    fp.seek(start)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(fp.read(file_size - start) or b"", max_inflated_size + 1)
    except zlib.error as exc:
        raise MalformedHeaderError("the deflated data set is not a valid deflate stream") from exc
    if len(inflated) > max_inflated_size:
        raise UnsupportedTransferSyntaxError(
            f"the deflated data set inflates to more than the {max_inflated_size}-byte in-memory limit"
        )
    if not inflater.eof:
        raise TruncatedHeaderError("the file ends inside the deflated data set's stream")
    fp.seek(0)
    return start, inflated


def _deflated_data_set_offset(fp: _RangeFile, file_size: int) -> int | None:
    """Where the data set starts if the file meta (Explicit VR Little Endian, after the preamble or,
    as pydicom reads it, at offset 0) declares Deflated Explicit VR Little Endian; else ``None``."""
    fp.seek(128)
    pos = 132 if fp.read(4) == b"DICM" else 0
    syntax = None
    while pos + 8 <= file_size:
        fp.seek(pos)
        head = fp.read(12) or b""
        if len(head) < 8:
            break
        group, _, vr, length = struct.unpack("<HH2sH", head[:8])
        if group != 0x0002:
            break
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            if len(head) < 12:
                break
            (length,) = struct.unpack("<L", head[8:12])
            value_at = pos + 12
        else:
            value_at = pos + 8
        if length == _UNDEFINED or value_at + length > file_size:
            return None  # not a file meta that pydicom reads either: its reading says what is wrong
        if head[:4] == b"\x02\x00\x10\x00":
            fp.seek(value_at)
            syntax = (fp.read(min(length, 64)) or b"").rstrip(b"\0 ")
        pos = value_at + length
    return pos if syntax == pydicom.uid.DeflatedExplicitVRLittleEndian.encode("ascii") else None


def _parse(fp: _RangeFile, file_size: int, inflated: tuple[int, bytes] | None) -> DicomHeader:
    if inflated is not None:
        return _parse_deflated(fp, file_size, *inflated)
    ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
    has_preamble = ds.preamble is not None
    file_meta = ds.file_meta if ds.file_meta is not None else FileMetaDataset()
    ts_value = file_meta.get("TransferSyntaxUID")
    transfer_syntax = UID(str(ts_value).rstrip("\0 ")) if ts_value else None
    if transfer_syntax is not None and not transfer_syntax.is_valid:
        # e.g. a corrupt length that swallowed the rest of the file into (0002,0010)
        raise MalformedHeaderError("the Transfer Syntax UID is not a valid UID")
    implicit = bool(ds.original_encoding[0])
    little = bool(ds.original_encoding[1])
    header_end = fp.tell()
    if fp.cut_in_element_header and transfer_syntax != pydicom.uid.DeflatedExplicitVRLittleEndian:
        raise TruncatedHeaderError("the file ends inside an element's header")
    if not has_preamble and len(ds) == 0 and len(file_meta) == 0:
        raise NotDicomError("not a DICOM file: no 'DICM' prefix and no parseable data set")
    if not has_preamble and len(file_meta) == 0:
        _check_plausible_start(fp, implicit, little)
    if transfer_syntax == pydicom.uid.DeflatedExplicitVRLittleEndian:
        # a file meta that only pydicom's reading found deflated: pydicom inflated it unbounded
        raise MalformedHeaderError("the file meta of the deflated file cannot be read")
    _check_lengths(ds, fp.headers, little)
    # Detach the parsed data set from pydicom's FileDataset (which holds our file object).
    dataset = Dataset(ds)
    dataset.set_original_encoding(implicit, little, ds.original_character_set)

    pixel_tag: int | None = None
    value_offset: int | None = None
    length: int | None = None
    if header_end < file_size:
        fp.seek(header_end)
        raw = fp.read(12) or b""
        tag, offset, length = _pixel_element_header(raw, implicit, little)
        if tag not in PIXEL_TAGS:
            raise MalformedHeaderError(
                f"parsing stopped at ({tag >> 16:04X},{tag & 0xFFFF:04X}), not at Pixel Data"
            )
        pixel_tag = tag
        value_offset = header_end + offset
        if length is not None and value_offset + length > file_size:
            raise TruncatedHeaderError(
                "the Pixel Data element's declared length runs past the end of the file"
            )
    return DicomHeader(
        has_preamble=has_preamble,
        file_meta=file_meta,
        dataset=dataset,
        transfer_syntax=transfer_syntax,
        is_implicit_vr=implicit,
        is_little_endian=little,
        header_end=header_end,
        pixel_data_tag=pixel_tag,
        pixel_data_value_offset=value_offset,
        pixel_data_length=length,
        file_size=file_size,
        bytes_read=fp.bytes_read,
    )


def _check_lengths(ds: Dataset, headers: int, little: bool) -> None:
    """Refuse what pydicom reads without complaint but cannot use: a value cut short by the end of
    the file, a sequence that does not parse (pydicom parses one of defined length only when it is
    first used), sequences nested deeper than ``MAX_SEQUENCE_DEPTH``, a VR that is not DICOM's, more
    than ``MAX_HEADER_ELEMENTS`` elements and items (``headers``: those the reading counted; a
    sequence's items are counted in its bytes before pydicom parses them, which costs 60 us each).
    Walked level by level, without recursion."""
    item_tag = b"\xfe\xff\x00\xe0" if little else b"\xff\xfe\xe0\x00"
    stack = [(ds, 0)]
    while stack:
        current, depth = stack.pop()
        for tag, elem in list(current._dict.items()):
            vr = elem.VR
            if vr is not None and vr not in converters:
                raise MalformedHeaderError("an element's VR is not one of DICOM's")
            length = getattr(elem, "length", _UNDEFINED)
            value = elem.value
            if isinstance(value, bytes) and length != _UNDEFINED and len(value) < length:
                raise TruncatedHeaderError(
                    "the file ends inside the header (a declared length runs past the end)"
                )
            # pydicom reads any group length (gggg,0000) as UL, in groups the dictionary lacks too
            known = vr or dictionary_vr(int(tag)) or ("UL" if tag & 0xFFFF == 0 else None)
            size = _VALUE_SIZE.get(known or "")
            if size and isinstance(value, bytes) and len(value) % size:
                raise MalformedHeaderError(f"a {known} value's length is not a multiple of {size} bytes")
            # (UN: pydicom may read it as the sequence the dictionary says it is, or of undefined length)
            if isinstance(elem, RawDataElement) and (known == "SQ" or vr == "UN"):
                headers += 2 * value.count(item_tag) if isinstance(value, bytes) else 0
                if headers > MAX_HEADER_ELEMENTS:
                    raise MalformedHeaderError(_TOO_MANY)
                try:
                    value = current[tag].value
                except RecursionError:
                    raise
                except (EOFError, struct.error) as exc:
                    raise TruncatedHeaderError("the file ends inside a sequence") from exc
                except Exception as exc:
                    raise MalformedHeaderError(
                        f"a sequence cannot be parsed ({type(exc).__name__} in pydicom)"
                    ) from exc
            if isinstance(value, pydicom.Sequence):
                if depth >= MAX_SEQUENCE_DEPTH:
                    raise MalformedHeaderError(
                        f"sequences are nested more than {MAX_SEQUENCE_DEPTH} levels deep"
                    )
                stack.extend((item, depth + 1) for item in value)


def _check_plausible_start(fp: _RangeFile, implicit: bool, little: bool) -> None:
    """Without preamble and file meta, pydicom guesses; refuse bytes that are not a data set.

    The first element of a bare data set has a small group number (0008 for most objects); random
    bytes read as implicit VR almost never do.
    """
    fp.seek(0)
    head = fp.read(4) or b""
    if len(head) < 4:
        raise NotDicomError("not a DICOM file: too short")
    (group,) = struct.unpack(("<" if little else ">") + "H", head[:2])
    if group == 0 or group > 0x0100 or (group % 2 == 1 and group < 0x0009):
        raise NotDicomError("not a DICOM file: no 'DICM' prefix and the first bytes are not a data element")


def _parse_deflated(fp: _RangeFile, file_size: int, start: int, inflated: bytes) -> DicomHeader:
    """A deflated file: its file meta read by pydicom from the bytes before the data set (nothing
    to inflate there), the data set read from the bytes :func:`_inflate_bounded` inflated."""
    fp.seek(0)
    meta = pydicom.dcmread(io.BytesIO(fp.read(start) or b""), force=True)
    file_meta = meta.file_meta if meta.file_meta is not None else FileMetaDataset()
    stream = _CountedBytes(inflated)
    body = read_dataset(stream, False, True, stop_when=_at_pixels)
    _check_lengths(body, stream.headers, True)
    dataset = Dataset(body)
    dataset.set_original_encoding(False, True, body._character_set)
    # The pixel element, if any, follows the header in the inflated data set.
    at = stream.tell()
    pixel_tag: int | None = None
    length: int | None = None
    if at < len(inflated):
        pixel_tag, offset, length = _pixel_element_header(inflated[at : at + 12], False, True)
        if pixel_tag not in PIXEL_TAGS:
            raise MalformedHeaderError("the deflated data set's parse stopped short of its end")
        if length is not None and at + offset + length > len(inflated):
            raise TruncatedHeaderError(
                "the Pixel Data element's declared length runs past the end of the inflated data set"
            )
    return DicomHeader(
        has_preamble=meta.preamble is not None,
        file_meta=file_meta,
        dataset=dataset,
        transfer_syntax=pydicom.uid.DeflatedExplicitVRLittleEndian,
        is_implicit_vr=False,
        is_little_endian=True,
        header_end=file_size,
        pixel_data_tag=pixel_tag,
        pixel_data_value_offset=None,
        pixel_data_length=length,
        file_size=file_size,
        deflated=True,
        bytes_read=fp.bytes_read,
    )


def _at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
    return int(tag) in PIXEL_TAGS


def read_header_from_path(path: str | os.PathLike[str], **kwargs: int) -> DicomHeader:
    """:func:`read_header` over a local file, with ``os.pread`` (no whole-file read).

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> read_header_from_path(get_testdata_file("MR_small.dcm")).dataset.Modality
    'MR'
    """
    fd = os.open(Path(path), os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotDicomError("not a regular file")
        size = st.st_size
        return read_header(lambda start, end: os.pread(fd, end - start, start), size, **kwargs)
    finally:
        os.close(fd)


def read_header_from_store(store: ObjectStore, key: str, **kwargs: int) -> DicomHeader:
    """:func:`read_header` over an object in an :class:`~dicomflow.storage.ObjectStore` (ranged GETs).

    Examples
    --------
    >>> import tempfile, shutil
    >>> from pydicom.data import get_testdata_file
    >>> from dicomflow.storage import LocalObjectStore
    >>> root = tempfile.mkdtemp()
    >>> _ = shutil.copy(get_testdata_file("CT_small.dcm"), f"{root}/ct.dcm")
    >>> read_header_from_store(LocalObjectStore(root), "ct.dcm").pixel_data_length
    32768
    """
    size = store.size(key)
    return read_header(lambda start, end: store.get_range(key, start, end), size, **kwargs)
