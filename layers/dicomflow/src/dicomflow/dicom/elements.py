"""Data elements as bytes: read and write little-endian DICOM headers without pydicom.

pydicom builds an object per element and decodes what it is asked for; for a de-identifier that
touches a few dozen values of a CT slice's header and passes the rest through, that is most of the
work (about 10 ms a file, plus 0.3 s to import pydicom in every process). This module reads a
header into plain :class:`Element` records (tag, VR, value bytes, items for sequences) and writes
them back, and nothing else: it never decodes a value, never guesses.

It reads what a well-formed file of the common kind holds: a preamble, ``DICM``, an Explicit VR
Little Endian file meta, and a data set in Implicit or Explicit VR Little Endian (native or
encapsulated pixels). Anything else -- big endian, deflated, no file meta, a VR it does not know,
an undefined length outside a sequence, a UN element that pydicom would re-read with the
dictionary's VR, a length running past the end -- raises :class:`Unsupported`: the caller then hands
the file to pydicom, which reads more kinds of damage and says precisely what is wrong.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from dicomflow.dicom.dictionary import dictionary_vr
from dicomflow.dicom.errors import PixelDataError

#: Explicit VRs whose element header has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
#: Every VR of PS3.5 Table 6.2-1.
KNOWN_VRS = LONG_VRS | frozenset(
    {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH", "SL", "SS"}
    | {"ST", "TM", "UI", "UL", "US"}
)
UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
#: Tags at which a header ends (as pydicom's ``stop_before_pixels``): (Float/Double Float) Pixel Data.
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
#: Deepest nesting of sequences read (real objects nest a handful of levels, SR trees a dozen or
#: two): every reader and walker of a data set recurses once per level, so deeper is refused.
MAX_SEQUENCE_DEPTH = 64
#: Most elements and items a header may hold (the bound on the time a hostile header costs, in
#: this reader and in pydicom's, which reads about 30 000 a second; a 2000-frame enhanced CT
#: phantom holds about 40 000).
MAX_HEADER_ELEMENTS = 100_000
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
#: Transfer syntaxes this module reads: the two native little-endian ones and the encapsulated ones
#: (Explicit VR Little Endian data sets); big endian and deflated are pydicom's.
LITTLE_ENDIAN_SYNTAXES = frozenset(
    {IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.1.98", "1.2.840.10008.1.2.5"}
    | {f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 57, 70, 80, 81, 90, 91, 92, 93, 94, 95)}
    | {f"1.2.840.10008.1.2.4.{n}" for n in (100, 101, 102, 103, 104, 105, 106, 107, 108)}
    | {f"1.2.840.10008.1.2.4.{n}" for n in (110, 111, 112, 201, 202, 203)}
)

#: Bytes per value of the binary VRs (PS3.5 6.2): a length that is not a multiple is malformed.
_VALUE_SIZE = {"US": 2, "SS": 2, "US or SS": 2, "US or SS or OW": 2, "OW": 2, "UL": 4, "SL": 4, "FL": 4}
_VALUE_SIZE |= {"AT": 4, "OF": 4, "OL": 4, "FD": 8, "OD": 8, "SV": 8, "UV": 8, "OV": 8}
_TAG_LENGTH = struct.Struct("<HHL")  # implicit VR element header; also item and delimiter headers
_TAG_VR_SHORT = struct.Struct("<HH2sH")  # explicit VR, 2-byte length
_unpack_implicit = _TAG_LENGTH.unpack_from
_unpack_explicit = _TAG_VR_SHORT.unpack_from
_VR_OF = {vr.encode("ascii"): vr for vr in KNOWN_VRS}
_LENGTH = struct.Struct("<L")
_PACK_SHORT = struct.Struct("<HH2sH").pack
_PACK_LONG = struct.Struct("<HH2s2xL").pack
_PACK_IMPLICIT = struct.Struct("<HHL").pack
_SEQUENCE_END = _PACK_IMPLICIT(0xFFFE, 0xE0DD, 0)
_ITEM_START = _PACK_IMPLICIT(0xFFFE, 0xE000, UNDEFINED)
_ITEM_END = _PACK_IMPLICIT(0xFFFE, 0xE00D, 0)


class Unsupported(Exception):
    """This module does not read (or write) that file; pydicom may. The message says why and
    never quotes a value."""


class Element:
    """One data element: ``value`` holds its bytes as read (empty for a sequence), ``items`` a
    sequence's items, each a list of elements.

    ``raw`` (a sequence read by :func:`read_elements`): the bytes of its items as read, delimiters
    included, which identify it whole (a series repeats most of its sequences byte for byte).
    ``encoded``: the element as :func:`encode_elements` last wrote it, remembered there when it
    is asked to (an element kept from one file to the next is not encoded again)."""

    __slots__ = ("encoded", "items", "raw", "tag", "text", "value", "vr")

    def __init__(
        self, tag: int, vr: str, value: bytes = b"", items: list[list[Element]] | None = None
    ) -> None:
        self.tag = tag
        self.vr = vr
        self.value = value
        self.items = items
        self.text: list[str] | None = None  # the values decoded, once (see dicomflow.deid.rewrite)
        self.raw: bytes | None = None
        self.encoded: bytes | None = None

    def __repr__(self) -> str:  # tags and sizes only: values may be patient data
        size = f"{len(self.items)} items" if self.items is not None else f"{len(self.value)} bytes"
        return f"Element(({self.tag >> 16:04X},{self.tag & 0xFFFF:04X}) {self.vr}, {size})"


class Buffer:
    """Bytes of a file addressed by offset: all of them (``bytes``, ``mmap``), or a prefix that
    ``read_range(start, end)`` extends on demand in doubling blocks (an object store)."""

    def __init__(
        self,
        data: bytes | bytearray | memoryview | None,
        size: int,
        read_range: Callable[[int, int], bytes] | None = None,
        initial: int = 64 * 1024,
    ) -> None:
        self.size = size
        self._read_range = read_range
        self._block = initial
        self.data: bytes | bytearray | memoryview = data if data is not None else bytearray()
        self.complete = data is not None
        #: A Specific Character Set inside a sequence item was read (its text is in another charset).
        self.nested_character_set = False
        #: Elements and items read so far (bounded by MAX_HEADER_ELEMENTS).
        self.headers = 0

    def need(self, end: int) -> None:
        """Make ``[0, end)`` addressable; :class:`Unsupported` if the file is shorter."""
        if end > self.size:
            raise Unsupported("an element runs past the end of the file")
        if self.complete or end <= len(self.data):
            return
        assert self._read_range is not None and isinstance(self.data, bytearray)
        start = len(self.data)
        stop = min(self.size, max(end, start + self._block))
        chunk = self._read_range(start, stop)
        if len(chunk) != stop - start:
            raise Unsupported("the object is shorter than its reported size")
        self.data += chunk
        self._block *= 2

    def read(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)``: from the prefix if it holds them, else one ranged read (the
        prefix is not extended over pixels)."""
        if stop > self.size:
            raise Unsupported("an element runs past the end of the file")
        if self.complete or stop <= len(self.data):
            return bytes(self.data[start:stop])
        assert self._read_range is not None
        data = self._read_range(start, stop)
        if len(data) != stop - start:
            raise Unsupported("the object is shorter than its reported size")
        return data

    @property
    def bytes_read(self) -> int:
        return self.size if self.complete else len(self.data)


def vr_for_implicit(tag: int) -> str:
    """The VR an implicit-VR element is read with: the dictionary's (ambiguous ones as the
    dictionary spells them, "US or SS"), LO for private creators, UN for anything else."""
    group, element = tag >> 16, tag & 0xFFFF
    if group & 1:
        return "LO" if 0x0010 <= element <= 0x00FF else "UN"
    return dictionary_vr(tag) or "UN"


def read_elements(
    buf: Buffer,
    pos: int,
    end: int | None,
    *,
    implicit: bool,
    top: bool,
    depth: int = 0,
    starts: list[int] | None = None,
) -> tuple[list[Element], int]:
    """Elements from ``pos`` up to ``end`` (``None``: to an item delimiter, or at the top level
    to the pixel element or the end of the file). Returns them and the offset where reading stopped
    (at the top level: the pixel element's tag, or the end of the file). ``depth``: how many
    sequences hold these elements. ``starts``, if given, gets the offset of each element read."""
    # The loop every element of a header goes through (80 000 in a 2000-frame one): one unpack
    # per element header, and the buffer is asked for more only when it runs short.
    out: list[Element] = []
    append = out.append
    size = buf.size
    limit = size if end is None else end
    data = buf.data
    have = size if buf.complete else len(data)
    while pos < limit:
        if pos + 12 > have:
            buf.need(min(pos + 12, size))
            data = buf.data
            have = size if buf.complete else len(data)
            if pos + 8 > have:
                raise Unsupported("an element runs past the end of the file")
        if starts is not None:
            starts.append(pos)
        if implicit:
            group, elem, length = _unpack_implicit(data, pos)
            vr_bytes = b""
        else:
            group, elem, vr_bytes, length = _unpack_explicit(data, pos)
        tag = group << 16 | elem
        if top and tag in PIXEL_TAGS:
            if starts is not None:
                starts.pop()
            return out, pos
        if group == 0xFFFE:
            if tag == ITEM_DELIMITER and end is None and not top:
                return out, pos + 8
            raise Unsupported("an item or delimiter tag where a data element belongs")
        if implicit:
            vr = vr_for_implicit(tag)
            pos += 8
        else:
            vr = _VR_OF.get(vr_bytes)  # type: ignore[assignment]
            if vr is None:
                raise Unsupported("an element has a VR this reader does not know")
            if vr in LONG_VRS:
                if pos + 12 > have:
                    raise Unsupported("an element runs past the end of the file")
                (length,) = _LENGTH.unpack_from(data, pos + 8)
                pos += 12
            else:
                pos += 8
            if vr == "UN" and not group & 1 and dictionary_vr(tag) is not None:
                # pydicom re-reads a public UN element with the dictionary's VR: leave it to pydicom
                raise Unsupported("a public element is encoded as UN")
        if tag == 0x00080005 and not top:
            buf.nested_character_set = True
        buf.headers += 1
        if buf.headers > MAX_HEADER_ELEMENTS:
            raise Unsupported(f"the header holds more than {MAX_HEADER_ELEMENTS} elements and items")
        if vr == "SQ":
            start = pos
            if depth >= MAX_SEQUENCE_DEPTH:
                raise Unsupported(f"sequences nested more than {MAX_SEQUENCE_DEPTH} levels deep")
            items, pos = _read_sequence(buf, pos, length, implicit=implicit, depth=depth + 1)
            data = buf.data
            have = size if buf.complete else len(data)
            sequence = Element(tag, "SQ", b"", items)
            sequence.raw = bytes(data[start:pos])
            append(sequence)
            continue
        if length == UNDEFINED:
            raise Unsupported("an undefined length outside a sequence")
        if length % _VALUE_SIZE.get(vr, 1):
            raise Unsupported("a binary value's length is not a multiple of its VR's size")
        stop = pos + length
        if stop > have:
            buf.need(stop)
            data = buf.data
            have = size if buf.complete else len(data)
        append(Element(tag, vr, bytes(data[pos:stop])))
        pos = stop
    if end is not None and pos != end:
        raise Unsupported("an item's elements overrun its length")
    if end is None and not top:
        raise Unsupported("an item has no delimiter")
    return out, pos


def _read_sequence(
    buf: Buffer, pos: int, length: int, *, implicit: bool, depth: int
) -> tuple[list[list[Element]], int]:
    items: list[list[Element]] = []
    end = None if length == UNDEFINED else pos + length
    while end is None or pos < end:
        buf.need(pos + 8)
        group, elem, item_length = _TAG_LENGTH.unpack_from(buf.data, pos)
        tag = group << 16 | elem
        pos += 8
        if tag == SEQUENCE_DELIMITER and end is None:
            return items, pos
        if tag != ITEM:
            raise Unsupported("a sequence holds something other than items")
        buf.headers += 1
        if item_length == UNDEFINED:
            elements, pos = read_elements(buf, pos, None, implicit=implicit, top=False, depth=depth)
        else:
            elements, pos = read_elements(
                buf, pos, pos + item_length, implicit=implicit, top=False, depth=depth
            )
        items.append(elements)
    if pos != end:
        raise Unsupported("a sequence's items overrun its length")
    return items, pos


@dataclass(frozen=True)
class RawHeader:
    """A file's header as elements, and where its pixels are (offsets into the file)."""

    file_meta: list[Element]
    dataset: list[Element]
    transfer_syntax: str
    implicit: bool
    header_end: int  # offset of the pixel element's tag (file size if there is none)
    pixel_tag: int | None
    pixel_value_offset: int | None
    pixel_length: int | None  # None: undefined (encapsulated) or no pixels
    file_size: int
    bytes_read: int  # how much of the file the header parse needed
    #: Where the elements lie in the bytes they were read from, for :func:`read_raw_header`'s
    #: ``like`` (None if the bytes read stop before the pixel element's value).
    layout: Layout | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Layout:
    """A header's bytes up to its pixel element's value, and where each top-level element of its
    data set starts in them (the last offset is where the data set ends)."""

    head: bytes
    meta_end: int
    starts: tuple[int, ...]
    nested_character_set: bool
    #: Elements and items the data set holds (as :attr:`Buffer.headers` counts them).
    headers: int


#: :func:`read_raw_header`'s ``like`` is not tried when more than this share of the data set's
#: elements differ (not a file of the same series: parsing it whole costs no more).
_MOST_CHANGED = 0.25


def read_raw_header(buf: Buffer, like: RawHeader | None = None) -> RawHeader:
    """Parse preamble, file meta and data set up to the pixels; :class:`Unsupported` otherwise.

    ``like``: a header read before (the previous slice of a series). Where this file's bytes
    repeat it element for element -- same size, same offsets, only a few values changed (the SOP
    Instance UID, Instance Number, the position) -- only the elements whose bytes differ are
    parsed; the others are ``like``'s own :class:`Element` objects, which hold exactly what parsing
    these bytes again would give. The result is the same as without ``like`` (tested).

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    >>> header = read_raw_header(Buffer(data, len(data)))
    >>> header.transfer_syntax, header.pixel_length, len(header.dataset) > 50
    ('1.2.840.10008.1.2.1', 32768, True)
    >>> read_raw_header(Buffer(data, len(data)), like=header).dataset[0] is header.dataset[0]
    True
    """
    buf.need(132)
    if bytes(buf.data[128:132]) != b"DICM":
        raise Unsupported("no preamble and DICM prefix")
    meta: list[Element] = []
    pos = 132
    while pos + 8 <= buf.size:
        buf.need(pos + 8)
        group = _TAG_LENGTH.unpack_from(buf.data, pos)[0]
        if group != 0x0002:
            break
        element, pos = _read_meta_element(buf, pos)
        meta.append(element)
    syntax = next((e for e in meta if e.tag == 0x00020010), None)
    if syntax is None:
        raise Unsupported("the file meta has no Transfer Syntax UID")
    transfer_syntax = syntax.value.decode("ascii", "replace").rstrip("\0 ")
    if transfer_syntax not in LITTLE_ENDIAN_SYNTAXES:
        raise Unsupported("the transfer syntax is not a little-endian one this reader handles")
    implicit = transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
    if like is not None:
        again = _reread(buf, like, meta, pos, transfer_syntax)
        if again is not None:
            return again
    starts: list[int] = []
    dataset, header_end = read_elements(buf, pos, None, implicit=implicit, top=True, starts=starts)
    pixel_tag = value_offset = length = None
    if header_end < buf.size:
        pixel_tag, offset, length = pixel_element_header(_peek(buf, header_end), implicit)
        value_offset = header_end + offset
        if length is not None and value_offset + length > buf.size:
            raise Unsupported("the pixel element's length runs past the end of the file")
    layout = None
    head_end = value_offset if value_offset is not None else header_end
    if len(buf.data) >= head_end:  # (a prefix read holds the pixel element's header too, mostly)
        starts.append(header_end)
        layout = Layout(bytes(buf.data[:head_end]), pos, tuple(starts), buf.nested_character_set, buf.headers)
    return RawHeader(
        meta,
        dataset,
        transfer_syntax,
        implicit,
        header_end,
        pixel_tag,
        value_offset,
        length,
        buf.size,
        # Bytes the parse needed: what was fetched, or (a file read whole for its pixels too) how far
        # the parse went: the pixel element's header.
        buf.bytes_read if not buf.complete else min(buf.size, header_end + 12),
        layout,
    )


def _reread(
    buf: Buffer, like: RawHeader, meta: list[Element], meta_end: int, transfer_syntax: str
) -> RawHeader | None:
    """:func:`read_raw_header` of a file that repeats ``like``'s layout, parsing only the elements
    whose bytes differ; None where it does not (the caller parses the whole header)."""
    layout = like.layout
    if (
        layout is None
        or buf.size != like.file_size
        or meta_end != layout.meta_end
        or transfer_syntax != like.transfer_syntax
    ):
        return None
    old = layout.head
    buf.need(len(old))  # (the whole parse reads that far too: the sizes are the same)
    head = bytes(buf.data[: len(old)])
    # The pixel element's header (tag, VR, length) must be the same bytes, so the same range.
    if head[like.header_end :] != old[like.header_end :]:
        return None
    starts = layout.starts
    dataset = list(like.dataset)
    changed = [
        i for i in range(len(dataset)) if head[starts[i] : starts[i + 1]] != old[starts[i] : starts[i + 1]]
    ]
    if len(changed) > _MOST_CHANGED * len(dataset):
        return None
    counted, nested = buf.headers, buf.nested_character_set
    try:
        for i in changed:
            if dataset[i].tag == 0x00080005:
                raise Unsupported("another character set: the values kept were decoded with the old one")
            parsed, stop = read_elements(buf, starts[i], starts[i + 1], implicit=like.implicit, top=True)
            if stop != starts[i + 1] or len(parsed) != 1 or parsed[0].tag != dataset[i].tag:
                raise Unsupported("the element is not one element of the same tag")
            dataset[i] = parsed[0]
        if layout.headers + buf.headers - counted > MAX_HEADER_ELEMENTS:
            raise Unsupported("near the bound on elements: counted exactly by the whole parse")
    except Unsupported:
        # Whatever the doubt, the whole parse decides (it may read a changed length differently).
        buf.headers, buf.nested_character_set = counted, nested
        return None
    buf.nested_character_set = nested or layout.nested_character_set or buf.nested_character_set
    return RawHeader(
        meta,
        dataset,
        transfer_syntax,
        like.implicit,
        like.header_end,
        like.pixel_tag,
        like.pixel_value_offset,
        like.pixel_length,
        buf.size,
        like.bytes_read if buf.complete else buf.bytes_read,
        Layout(head, meta_end, starts, buf.nested_character_set, layout.headers),
    )


def _peek(buf: Buffer, pos: int) -> bytes:
    end = min(buf.size, pos + 12)
    buf.need(end)
    return bytes(buf.data[pos:end])


def _read_meta_element(buf: Buffer, pos: int) -> tuple[Element, int]:
    """One file meta element (always Explicit VR Little Endian, never a sequence)."""
    buf.need(pos + 8)
    group, elem, vr_bytes, length = _unpack_explicit(buf.data, pos)
    vr = _VR_OF.get(vr_bytes)
    if vr is None or vr == "SQ":
        raise Unsupported("the file meta is not Explicit VR Little Endian")
    if vr in LONG_VRS:
        buf.need(pos + 12)
        (length,) = _LENGTH.unpack_from(buf.data, pos + 8)
        pos += 12
    else:
        pos += 8
    if length == UNDEFINED:
        raise Unsupported("an undefined length in the file meta")
    buf.need(pos + length)
    return Element(group << 16 | elem, vr, bytes(buf.data[pos : pos + length])), pos + length


def pixel_element_header(raw: bytes, implicit: bool, little: bool = True) -> tuple[int, int, int | None]:
    """(tag, value offset from the tag, length or None if undefined) of the element header in ``raw``."""
    endian = "<" if little else ">"
    if len(raw) < 8:
        raise Unsupported("the file ends inside the pixel element's header")
    group, elem = struct.unpack(endian + "HH", raw[:4])
    tag = group << 16 | elem
    # Some writers encode Pixel Data implicitly in an explicit-VR file (pydicom tolerates it too).
    if implicit or not (raw[4:6].isalpha() and raw[4:6].isupper()):
        (length,) = struct.unpack(endian + "L", raw[4:8])
        offset = 8
    elif raw[4:6].decode("ascii") in LONG_VRS:
        if len(raw) < 12:
            raise Unsupported("the file ends inside the pixel element's header")
        (length,) = struct.unpack(endian + "L", raw[8:12])
        offset = 12
    else:
        (length,) = struct.unpack(endian + "H", raw[6:8])
        offset = 8
    return tag, offset, None if length == UNDEFINED else length


def pixel_end(
    value_offset: int | None,
    length: int | None,
    header_end: int,
    file_size: int,
    read_range: Callable[[int, int], bytes],
    little: bool = True,
) -> int:
    """Offset just past the pixel element (its sequence delimiter when encapsulated)."""
    if value_offset is None:
        return header_end
    if length is not None:
        return value_offset + length
    endian = "<" if little else ">"
    delimiter = struct.pack(endian + "HHL", 0xFFFE, 0xE0DD, 0)
    if file_size - value_offset >= 8 and read_range(file_size - 8, file_size) == delimiter:
        return file_size  # the common case: nothing after the pixels, no need to walk the items
    pos = value_offset
    while pos + 8 <= file_size:
        group, elem, item_length = struct.unpack(endian + "HHL", read_range(pos, pos + 8))
        if (group, elem) == (0xFFFE, 0xE0DD):
            return pos + 8
        if (group, elem) != (0xFFFE, 0xE000) or item_length == UNDEFINED:
            raise PixelDataError("encapsulated Pixel Data holds something other than items")
        pos += 8 + item_length
    raise PixelDataError("encapsulated Pixel Data has no sequence delimiter before the end of the file")


# -- writing ------------------------------------------------------------------------------------------


def encode_elements(elements: list[Element], *, implicit: bool, remember: bool = False) -> bytes:
    """The elements (sorted by tag by the caller) in Implicit or Explicit VR Little Endian;
    sequences and items with undefined lengths.

    ``remember``: keep each element's encoding in its ``encoded`` and use one found there (the
    caller vouches that every element with one was encoded in this same syntax)."""
    parts: list[bytes] = []
    if not remember:
        _encode_into(parts, elements, implicit)
        return b"".join(parts)
    for e in elements:
        if e.encoded is None:
            mark = len(parts)
            _encode_into(parts, [e], implicit)
            e.encoded = b"".join(parts[mark:])
            del parts[mark:]
        parts.append(e.encoded)
    return b"".join(parts)


def _encode_into(parts: list[bytes], elements: list[Element], implicit: bool) -> None:
    append = parts.append
    for e in elements:
        tag = e.tag
        if e.items is not None:
            if implicit:
                append(_PACK_IMPLICIT(tag >> 16, tag & 0xFFFF, UNDEFINED))
            else:
                append(_PACK_LONG(tag >> 16, tag & 0xFFFF, b"SQ", UNDEFINED))
            for item in e.items:
                append(_ITEM_START)
                _encode_into(parts, item, implicit)
                append(_ITEM_END)
            append(_SEQUENCE_END)
            continue
        value = e.value
        if implicit:
            append(_PACK_IMPLICIT(tag >> 16, tag & 0xFFFF, len(value)))
        elif e.vr in LONG_VRS:
            append(_PACK_LONG(tag >> 16, tag & 0xFFFF, e.vr.encode("ascii"), len(value)))
        else:
            if len(value) > 0xFFFF:
                raise Unsupported("a value too long for its VR's 2-byte length")
            append(_PACK_SHORT(tag >> 16, tag & 0xFFFF, e.vr.encode("ascii"), len(value)))
        append(value)


def encode_file_meta(elements: list[Element]) -> bytes:
    """Group 0002 (sorted, without a group length) with its File Meta Information Group Length,
    in Explicit VR Little Endian as PS3.10 requires."""
    body = encode_elements(elements, implicit=False)
    return _PACK_SHORT(0x0002, 0x0000, b"UL", 4) + struct.pack("<L", len(body)) + body


def walk(elements: list[Element]) -> Iterator[Element]:
    """Every element, depth first, sequences' items included (the sequence element first)."""
    for e in elements:
        yield e
        if e.items is not None:
            for item in e.items:
                yield from walk(item)
