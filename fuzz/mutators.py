"""Damage to DICOM files: each mutator takes a random generator and a file's bytes and returns new
bytes and a short description of what it did.

Byte-level mutators (truncation, bit flips, interesting values, splices) know nothing of DICOM;
element-level ones find the elements first (:func:`layout`, a tolerant scan of the top level) and
damage one of them the way a broken writer would: an absurd length, a wrong VR, a transfer syntax
that does not match the encoding, garbage values. Generators add what no seed holds: undefined-length
sequences nested very deep, huge element and item counts, deflate bombs (a deflated data set of a
few MB that inflates to GBs).

:func:`make_input` makes input ``index`` of a campaign from ``(seed, index)`` alone: a campaign is
reproducible input by input, whatever the order its workers ran them in.
"""

from __future__ import annotations

import hashlib
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from fuzz.seeds import Seed

Mutator = Callable[[random.Random, bytes, "Context"], tuple[bytes, str]]

_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_ALL_VRS = sorted(
    _LONG_VRS
    | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH"}
    | {b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
_BAD_VRS = [b"\x00\x00", b"zz", b"OX", b"  ", b"\xff\xff", b"sq", b"S Q"[:2]]
_INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFE, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]
_SYNTAXES = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.5",
    "1.2.3.4",
    "1.2.840.10008.1.2.01",
    "not a uid",
    "",
]
#: Public sequence tags by group, to nest with (their dictionary VR is SQ, in implicit VR too).
_SEQUENCE_TAGS = [0x00081032, 0x00081115, 0x00081140, 0x00082112, 0x00400275, 0x00540016, 0x00209222]
_CHARSETS = [b"ISO_IR 192", b"ISO 2022 IR 87", b"GB18030", b"ISO_IR 100\\ISO_IR 144", b"bogus", b"\xff\xfe"]
_ITEM = struct.pack("<HHL", 0xFFFE, 0xE000, _UNDEFINED)
_ITEM_END = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
_SEQ_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
_ZEROS_BLOCK = 16 * 1024 * 1024


# -- where the elements are ----------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """One top-level element: where it starts, where its length field is, where it ends."""

    tag: int
    start: int
    vr_at: int | None  # offset of the explicit VR, None if implicit
    length_at: int
    length_size: int  # 2 or 4
    value_at: int
    end: int  # the offset after its value (after the sequence delimiter of an undefined length)


@dataclass(frozen=True)
class Layout:
    meta: list[Span]
    body: list[Span]
    body_start: int  # offset of the first data set element
    pixel_at: int  # offset of the pixel element (or where the scan stopped)
    implicit: bool
    little: bool
    syntax: str


def layout(data: bytes) -> Layout | None:
    """The top-level elements of ``data`` as far as they can be found (``None`` if none can)."""
    pos = 132 if data[128:132] == b"DICM" else 0
    meta, pos = _scan(data, pos, implicit=False, little=True, group=0x0002)
    syntax = ""
    for span in meta:
        if span.tag == 0x00020010:
            syntax = data[span.value_at : span.end].rstrip(b"\0 ").decode("ascii", "replace")
    implicit = syntax == "1.2.840.10008.1.2" or (not syntax and _looks_implicit(data, pos))
    little = syntax != "1.2.840.10008.1.2.2"
    if syntax == "1.2.840.10008.1.2.1.99":
        return Layout(meta, [], pos, len(data), False, True, syntax)
    body, end = _scan(data, pos, implicit=implicit, little=little, group=None)
    if not meta and not body:
        return None
    return Layout(meta, body, pos, end, implicit, little, syntax)


def _looks_implicit(data: bytes, pos: int) -> bool:
    return data[pos + 4 : pos + 6] not in _ALL_VRS


def _scan(
    data: bytes, pos: int, *, implicit: bool, little: bool, group: int | None, depth: int = 0
) -> tuple[list[Span], int]:
    spans: list[Span] = []
    e = "<" if little else ">"
    while pos + 8 <= len(data):
        g, el = struct.unpack_from(e + "HH", data, pos)
        tag = g << 16 | el
        if group is not None and g != group:
            break
        if group is None and (g == 0x0002 or tag in (0x7FE00008, 0x7FE00009, 0x7FE00010) or g == 0xFFFE):
            break
        vr = None if implicit else data[pos + 4 : pos + 6]
        if vr is None:
            (length,) = struct.unpack_from(e + "L", data, pos + 4)
            vr_at, length_at, size, value_at = None, pos + 4, 4, pos + 8
        elif vr in _LONG_VRS:
            if pos + 12 > len(data):
                break
            (length,) = struct.unpack_from(e + "L", data, pos + 8)
            vr_at, length_at, size, value_at = pos + 4, pos + 8, 4, pos + 12
        elif vr in _ALL_VRS:
            (length,) = struct.unpack_from(e + "H", data, pos + 6)
            vr_at, length_at, size, value_at = pos + 4, pos + 6, 2, pos + 8
        else:
            break
        if length == _UNDEFINED:
            end = _undefined_end(data, value_at, implicit, little, depth)
            if end is None:
                break
        else:
            end = value_at + length
        if end > len(data):
            break
        spans.append(Span(tag, pos, vr_at, length_at, size, value_at, end))
        pos = end
    return spans, pos


def _undefined_end(data: bytes, pos: int, implicit: bool, little: bool, depth: int) -> int | None:
    """Past the sequence delimiter that closes the undefined-length sequence whose items start at
    ``pos`` (``None`` if it cannot be found, or nests too deep to bother)."""
    e = "<" if little else ">"
    while pos + 8 <= len(data) and depth < 100:
        g, el, length = struct.unpack_from(e + "HHL", data, pos)
        pos += 8
        if (g, el) == (0xFFFE, 0xE0DD):
            return pos
        if (g, el) != (0xFFFE, 0xE000):
            return None
        if length != _UNDEFINED:
            pos += length
            continue
        _, pos = _scan(data, pos, implicit=implicit, little=little, group=None, depth=depth + 1)
        if data[pos : pos + 4] != struct.pack(e + "HH", 0xFFFE, 0xE00D):
            return None
        pos += 8
    return None


# -- mutators ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    seeds: list[Seed]


def _header_point(rng: random.Random, data: bytes) -> int:
    """An offset, most often in the header (where the parsers are): the first 4 KiB or so."""
    if not data:
        return 0
    if rng.random() < 0.8:
        lay = layout(data)
        end = lay.pixel_at if lay is not None else min(len(data), 4096)
        return rng.randrange(0, max(1, min(end + 16, len(data))))
    return rng.randrange(0, len(data))


def truncate(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    return data[: _header_point(rng, data)], "truncate"


def bit_flips(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    out = bytearray(data)
    if not out:
        return data, "bitflip-none"
    for _ in range(rng.choice([1, 1, 2, 4, 16])):
        at = min(_header_point(rng, data), len(out) - 1)
        out[at] ^= 1 << rng.randrange(8)
    return bytes(out), "bitflip"


def interesting_values(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    out = bytearray(data)
    for _ in range(rng.choice([1, 2, 3])):
        value = rng.choice(_INTERESTING)
        size = rng.choice([1, 2, 4])
        at = _header_point(rng, data)
        out[at : at + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, rng.choice(["little", "big"]))
    return bytes(out), "interesting"


def splice(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    other = rng.choice(ctx.seeds).data
    a, b = sorted(rng.randrange(0, len(other) + 1) for _ in range(2))
    b = min(b, a + 4096)
    at = _header_point(rng, data)
    cut = at + rng.choice([0, 0, rng.randrange(0, 256)])
    return data[:at] + other[a:b] + data[cut:], "splice"


def _element(rng: random.Random, data: bytes, meta: bool = False) -> tuple[Layout, Span] | None:
    lay = layout(data)
    if lay is None:
        return None
    spans = lay.meta if meta and lay.meta else lay.body or lay.meta
    if not spans:
        return None
    return lay, rng.choice(spans)


def absurd_length(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    found = _element(rng, data, meta=rng.random() < 0.2)
    if found is None:
        return interesting_values(rng, data, ctx)
    lay, span = found
    length = span.end - span.value_at
    if span.length_size == 4:
        choices = [_UNDEFINED, 0xFFFFFFFE, 0x7FFFFFFF, length + 1, max(0, length - 1), 0, len(data) * 2, 3]
    else:
        choices = [0xFFFF, 0xFFFE, length + 1, max(0, length - 1), 0, 0x8000, 1]
    new = rng.choice(choices)
    e = "<" if (lay.little or span in lay.meta) else ">"
    packed = struct.pack(e + ("L" if span.length_size == 4 else "H"), new)
    at = span.length_at
    return data[:at] + packed + data[at + span.length_size :], "length"


def wrong_vr(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    found = _element(rng, data, meta=rng.random() < 0.2)
    if found is None or found[1].vr_at is None:
        return bit_flips(rng, data, ctx)
    _, span = found
    vr = rng.choice(_ALL_VRS + _BAD_VRS)
    at = span.vr_at
    assert at is not None
    return data[:at] + vr + data[at + 2 :], "vr"


def wrong_syntax(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    """Another Transfer Syntax UID, of the same length (padded) or not (the group length then lies)."""
    lay = layout(data)
    span = next((s for s in lay.meta if s.tag == 0x00020010), None) if lay else None
    if span is None:
        return bit_flips(rng, data, ctx)
    uid = rng.choice(_SYNTAXES).encode("ascii")
    if len(uid) % 2:
        uid += b"\0"
    header = data[span.start : span.value_at]
    header = header[:6] + struct.pack("<H", len(uid))
    return data[: span.start] + header + uid + data[span.end :], "syntax"


def garbage_value(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    """A value replaced by text or bytes a writer should never produce (length kept consistent)."""
    found = _element(rng, data)
    if found is None:
        return bit_flips(rng, data, ctx)
    lay, span = found
    if span.vr_at is None and span.length_size == 4 and span.end - span.value_at > 0xFFFF:
        return absurd_length(rng, data, ctx)
    value = rng.choice(
        [
            b"1e999",
            b"-0\\nan\\inf",
            b"9" * rng.choice([17, 65, 300]),
            b"20231340",
            b"1..2.",
            b"\xff\xfe\xfd",
            b"\x00" * rng.choice([1, 3, 5, 7]),
            b"\\" * 40,
            bytes(rng.randrange(256) for _ in range(rng.choice([1, 2, 3, 4, 8, 64]))),
            b"^^^^=^^^^=^^^^",
            b"A" * 70000,
        ]
    )
    if span.length_size == 2 and len(value) > 0xFFFF:
        value = value[:0xFFFE]
    if span.vr_at is not None and data[span.vr_at : span.vr_at + 2] == b"SQ":
        return absurd_length(rng, data, ctx)
    e = "<" if lay.little or span in lay.meta else ">"
    packed = struct.pack(e + ("L" if span.length_size == 4 else "H"), len(value))
    return data[: span.length_at] + packed + value + data[span.end :], "value"


def shuffle_elements(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    """Two elements swapped, one duplicated or one dropped: the tag order a data set must keep."""
    lay = layout(data)
    if lay is None or len(lay.body) < 2:
        return bit_flips(rng, data, ctx)
    parts = [data[s.start : s.end] for s in lay.body]
    kind = rng.choice(["swap", "duplicate", "drop"])
    i, j = rng.randrange(len(parts)), rng.randrange(len(parts))
    if kind == "swap":
        parts[i], parts[j] = parts[j], parts[i]
    elif kind == "duplicate":
        parts.insert(j, parts[i])
    else:
        del parts[i]
    start, end = lay.body[0].start, lay.body[-1].end
    return data[:start] + b"".join(parts) + data[end:], kind


def strip_preamble(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    lay = layout(data)
    kind = rng.choice(["preamble", "meta", "dicm"])
    if kind == "preamble" and data[128:132] == b"DICM":
        return data[132:], "nopreamble"
    if kind == "meta" and lay is not None and lay.meta:
        return data[: lay.meta[0].start] + data[lay.meta[-1].end :], "nometa"
    return data[:128] + b"DICN" + data[132:], "nodicm"


def charset(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    """A Specific Character Set the engines may not decode, and a name that is not valid in it."""
    lay = layout(data)
    if lay is None or not lay.body:
        return bit_flips(rng, data, ctx)
    value = rng.choice(_CHARSETS)
    if len(value) % 2:
        value += b" "
    e = "<" if lay.little else ">"
    if lay.implicit:
        element = struct.pack(e + "HHL", 0x0008, 0x0005, len(value)) + value
    else:
        element = struct.pack(e + "HH2sH", 0x0008, 0x0005, b"CS", len(value)) + value
    old = next((s for s in lay.body if s.tag == 0x00080005), None)
    if old is not None:
        out = data[: old.start] + element + data[old.end :]
    else:
        at = next((s.start for s in lay.body if s.tag > 0x00080005), lay.pixel_at)
        out = data[:at] + element + data[at:]
    if rng.random() < 0.5:  # an ISO 2022 escape and bytes invalid in UTF-8 inside Patient's Name
        name_at = out.find(b"\x10\x00\x10\x00" if lay.little else b"\x00\x10\x00\x10")
        if name_at > 0:
            out = out[: name_at + 8] + b"\xff\x1b$B" + out[name_at + 12 :]
    return out, "charset"


def deep_nesting(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    """A sequence of undefined length nested ``depth`` levels deep, closed or not, inserted in
    tag order where the data set has room for it."""
    lay = layout(data)
    if lay is None or not lay.body or not lay.little:
        return bit_flips(rng, data, ctx)
    depth = rng.choice([8, 40, 63, 64, 65, 100, 300, 2000, 50000])
    tag = rng.choice(_SEQUENCE_TAGS)
    if lay.implicit:
        opener = struct.pack("<HHL", tag >> 16, tag & 0xFFFF, _UNDEFINED) + _ITEM
    else:
        opener = struct.pack("<HH2s2xL", tag >> 16, tag & 0xFFFF, b"SQ", _UNDEFINED) + _ITEM
    closer = _ITEM_END + _SEQ_END
    shape = rng.choice(["closed", "closed", "open", "half", "defined"])
    if shape == "defined":
        inner = b""
        for _ in range(min(depth, 2000)):
            inner = _defined_item(tag, inner, lay.implicit)
        nested = inner
    else:
        nested = opener * depth + closer * {"closed": depth, "open": 0, "half": depth // 2}[shape]
    at = next((s.start for s in lay.body if s.tag > tag), lay.pixel_at)
    return data[:at] + nested + data[at:], f"nest{depth}{shape}"


def _defined_item(tag: int, inner: bytes, implicit: bool) -> bytes:
    item = struct.pack("<HHL", 0xFFFE, 0xE000, len(inner)) + inner
    if implicit:
        return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(item)) + item
    return struct.pack("<HH2s2xL", tag >> 16, tag & 0xFFFF, b"SQ", len(item)) + item


def many_elements(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    """Huge counts: a sequence of many items, or many private elements before the pixels."""
    lay = layout(data)
    if lay is None or not lay.body or not lay.little:
        return bit_flips(rng, data, ctx)
    count = rng.choice([1000, 5000, 10000, 300000])  # the engines refuse more than 100 000
    if rng.random() < 0.5:
        tag = 0x00081140
        one = _ITEM + (b"" if rng.random() < 0.5 else _short(0x00081150, b"UI", b"1.2\0", lay.implicit))
        items = (one + _ITEM_END) * count
        if lay.implicit:
            seq = struct.pack("<HHL", 0x0008, 0x1140, _UNDEFINED) + items + _SEQ_END
        else:
            seq = struct.pack("<HH2s2xL", 0x0008, 0x1140, b"SQ", _UNDEFINED) + items + _SEQ_END
        at = next((s.start for s in lay.body if s.tag > tag), lay.pixel_at)
        return data[:at] + seq + data[at:], f"items{count}"
    # private blocks of groups 7001..7FDF (after every common public element, before the pixels)
    parts = []
    group, made = 0x7001, 0
    while made < count and group < 0x7FE0:
        parts.append(_short(group << 16 | 0x0010, b"LO", b"FUZZ", lay.implicit))
        for element in range(0x1000, 0x1100):
            parts.append(_short(group << 16 | element, b"SH", b"ab", lay.implicit))
            made += 1
            if made >= count:
                break
        group += 2
    at = lay.pixel_at
    if lay.body and lay.body[-1].tag >= 0x70010000:
        at = next(s.start for s in lay.body if s.tag >= 0x70010000)
    return data[:at] + b"".join(parts) + data[at:], f"elements{count}"


def _short(tag: int, vr: bytes, value: bytes, implicit: bool) -> bytes:
    if implicit:
        return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def trailing(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    """Bytes after the pixels: padding, elements, garbage, a lot of them."""
    kind = rng.choice(["padding", "element", "garbage", "big"])
    if kind == "padding":
        tail = struct.pack("<HH2s2xL", 0xFFFC, 0xFFFC, b"OB", 64) + b"\0" * 64
    elif kind == "element":
        tail = _short(0x7FE10010, b"LO", b"AFTER PIXELS", False)
    elif kind == "garbage":
        tail = bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 8, 13, 100])))
    else:
        tail = struct.pack("<HH2s2xL", 0xFFFC, 0xFFFC, b"OB", 3 << 20) + b"\0" * (3 << 20)
    return data + tail, f"trailing-{kind}"


def pixel_geometry(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    """Rows, Columns, Bits Allocated or Number of Frames that do not match the pixels."""
    lay = layout(data)
    if lay is None:
        return bit_flips(rng, data, ctx)
    spans = [s for s in lay.body if s.tag in (0x00280010, 0x00280011, 0x00280100, 0x00280008, 0x00280002)]
    if not spans:
        return absurd_length(rng, data, ctx)
    span = rng.choice(spans)
    e = "<" if lay.little else ">"
    if span.tag == 0x00280008:  # IS
        value = rng.choice([b"0 ", b"-1", b"999999999 ", b"abc ", b"1e3 ", b""])
        packed = struct.pack(e + ("L" if span.length_size == 4 else "H"), len(value))
        return data[: span.length_at] + packed + value + data[span.end :], "frames"
    value = struct.pack(e + "H", rng.choice([0, 1, 3, 0x7FFF, 0xFFFF]))
    return data[: span.value_at] + value + data[span.value_at + 2 :], "geometry"


_ZEROS: bytes | None = None


def _zeros_block() -> bytes:
    """16 MiB of zeros as raw deflate blocks ending on a byte boundary (sync flush): repeated, the
    blocks form one valid stream, so a bomb of any size costs no compression time."""
    global _ZEROS
    if _ZEROS is None:
        c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        _ZEROS = c.compress(b"\0" * _ZEROS_BLOCK) + c.flush(zlib.Z_SYNC_FLUSH)
    return _ZEROS


def deflate_bomb(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    """A deflated file (1.2.840.10008.1.2.1.99) whose tiny body inflates to 48 MiB .. 4 GiB: the
    zeros as a huge element before the pixels, as Pixel Data, or as the whole data set."""
    seed = next(s for s in ctx.seeds if s.name == "CT_small")
    lay = layout(seed.data)
    assert lay is not None and lay.body
    blocks = rng.choice([3, 12, 64, 255])  # x 16 MiB (255: just under 4 GiB, the largest length)
    size = blocks * _ZEROS_BLOCK
    body = seed.data[lay.body_start : lay.pixel_at]
    where = rng.choice(["pixels", "private", "bare"])
    if where == "pixels":
        prefix = body + struct.pack("<HH2s2xL", 0x7FE0, 0x0010, b"OB", size)
    elif where == "private":
        at = next(s.start for s in lay.body if s.tag > 0x00090010)
        prefix = body[: at - lay.body_start] + _short(0x00090010, b"LO", b"FUZZ", False)
        prefix += struct.pack("<HH2s2xL", 0x0009, 0x1000, b"OB", size)
    else:
        prefix = b""
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = c.compress(prefix) + c.flush(zlib.Z_SYNC_FLUSH) + _zeros_block() * blocks
    end = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream += end.flush()  # an empty final block
    meta = _meta(seed.data, lay, "1.2.840.10008.1.2.1.99")
    return seed.data[:132] + meta + stream, f"bomb{blocks * 16}M-{where}"


def deflate_damage(rng: random.Random, data: bytes, ctx: Context) -> tuple[bytes, str]:
    """A real deflated file with its compressed bytes damaged, or a plain file declared deflated."""
    seed = next(s for s in ctx.seeds if s.name == "image_dfl")
    lay = layout(seed.data)
    assert lay is not None
    if rng.random() < 0.6:
        out = bytearray(seed.data)
        for _ in range(rng.choice([1, 4, 32])):
            at = rng.randrange(lay.body_start, len(out))
            out[at] ^= 1 << rng.randrange(8)
        return bytes(out), "deflate-flip"
    if rng.random() < 0.5:
        return seed.data[: rng.randrange(lay.body_start, len(seed.data))], "deflate-truncate"
    plain = next(s for s in ctx.seeds if s.name == "CT_small")
    plain_lay = layout(plain.data)
    assert plain_lay is not None
    meta = _meta(plain.data, plain_lay, "1.2.840.10008.1.2.1.99")
    return plain.data[:132] + meta + plain.data[plain_lay.body_start :], "deflate-undeclared"


def _meta(data: bytes, lay: Layout, syntax: str) -> bytes:
    """The file meta of ``data`` with ``syntax`` as its Transfer Syntax UID and a true group length."""
    uid = syntax.encode("ascii")
    uid += b"\0" * (len(uid) % 2)
    parts = []
    for span in lay.meta:
        if span.tag == 0x00020000:
            continue
        if span.tag == 0x00020010:
            parts.append(struct.pack("<HH2sH", 0x0002, 0x0010, b"UI", len(uid)) + uid)
        else:
            parts.append(data[span.start : span.end])
    body = b"".join(parts)
    return struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body)) + body


#: (mutator, weight): the byte-level ones most often, the expensive generators rarely.
MUTATORS: list[tuple[Mutator, int]] = [
    (truncate, 10),
    (bit_flips, 16),
    (interesting_values, 10),
    (splice, 5),
    (absurd_length, 14),
    (wrong_vr, 10),
    (wrong_syntax, 6),
    (garbage_value, 10),
    (shuffle_elements, 5),
    (strip_preamble, 4),
    (charset, 4),
    (deep_nesting, 5),
    (many_elements, 2),
    (trailing, 4),
    (pixel_geometry, 5),
    (deflate_bomb, 1),
    (deflate_damage, 2),
]
_GENERATORS = {deflate_bomb, deflate_damage}


@dataclass(frozen=True)
class Input:
    index: int
    data: bytes
    description: str  # seed name and mutations, e.g. "CT_small+length+bitflip"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def make_input(seed: int, index: int, seeds: list[Seed]) -> Input:
    """Input ``index`` of campaign ``seed``: a seed file and one to three mutations, all drawn from
    a generator seeded with ``(seed, index)`` only."""
    rng = random.Random(f"dicomflow-fuzz:{seed}:{index}")
    ctx = Context(seeds)
    base = rng.choice(seeds)
    data, names = base.data, [base.name]
    functions = [m for m, _ in MUTATORS]
    weights = [w for _, w in MUTATORS]
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        mutator = rng.choices(functions, weights)[0]
        if mutator in _GENERATORS:
            names = []  # they make a file of their own
        data, what = mutator(rng, data, ctx)
        names.append(what)
    return Input(index, data, "+".join(names))


def prepare() -> None:
    """Make what generators share (the bomb's compressed zeros) before workers are forked."""
    _zeros_block()
