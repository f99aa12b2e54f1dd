"""Table E.1-1 on a header's bytes: the fast engine, without pydicom.

The header is read into :class:`~dicomflow.dicom.elements.Element` records
(:mod:`dicomflow.dicom.elements`), every decision is asked of :mod:`dicomflow.deid.policy` with the
same (tag, VR, text values) pydicom would give it, and the new header is written back as bytes. An
element that is kept is written as it was read, byte for byte; only the values the profile changes
are encoded anew (in the file's character set, padded as PS3.5 says).

Taken: preamble + ``DICM``, Implicit or Explicit VR Little Endian data sets (native or encapsulated
pixels), Specific Character Set absent, ISO_IR 6, ISO_IR 100 (Latin-1) or ISO_IR 192 (UTF-8), nothing
after the pixel element. Anything else raises :class:`~dicomflow.dicom.elements.Unsupported` and the
caller hands the file to :mod:`dicomflow.deid.pydicom_engine`, which reads big endian, deflated,
other character sets and damaged files, and says what is wrong with those it refuses. The two
engines' outputs are compared on every file pydicom ships (``tests/unit/test_deid_engines.py``).

A de-identifier remembers what this engine decided for each element (:class:`_Memo`): the files of
a series repeat almost all of their elements, and only those that differ are decided anew. The
output is the same byte for byte as a fresh de-identifier's (``tests/unit/test_deid_memo.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from weakref import WeakKeyDictionary

from dicomflow.deid.burned_in import burned_in_reasons_for
from dicomflow.deid.leakcheck import LeakReport, LeakSearch, ValueChecks
from dicomflow.deid.policy import (
    DECODE_VRS,
    DICOMFLOW_IMPLEMENTATION_UID,
    DICOMFLOW_IMPLEMENTATION_VERSION,
    STRING_VRS,
    Change,
    Contribution,
    Deidentifier,
    Policy,
    Recorded,
    contributions,
    finds_the_same,
    normalise,
    passes_through,
)
from dicomflow.deid.prepared import Prepared
from dicomflow.deid.uids import remap_uid
from dicomflow.dicom.elements import (
    Buffer,
    Element,
    RawHeader,
    Unsupported,
    encode_elements,
    encode_file_meta,
    pixel_end,
    read_elements,
    read_raw_header,
)

#: Specific Character Set values this engine decodes (pydicom's codecs for them).
_CODECS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
#: Single-valued text VRs: a backslash in them is text, not a value separator.
_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})
_ZERO = {
    "US": b"\x00\x00",
    "SS": b"\x00\x00",
    "UL": b"\x00" * 4,
    "SL": b"\x00" * 4,
    "FL": b"\x00" * 4,
    "AT": b"\x00" * 4,
    "FD": b"\x00" * 8,
    "UV": b"\x00" * 8,
    "SV": b"\x00" * 8,
}
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_SPECIFIC_CHARACTER_SET = 0x00080005
_TRAILING_PADDING = 0xFFFCFFFC
_MAX_TRAILING_PADDING = 1024 * 1024
_PATIENT_NAME, _PATIENT_ID = 0x00100010, 0x00100020
_SOP_CLASS, _SOP_INSTANCE = 0x00080016, 0x00080018


class _Text:
    """Element values as text, decoded as pydicom decodes them (the policy sees the same strings)."""

    def __init__(self, codec: str) -> None:
        self.codec = codec

    def values(self, e: Element) -> list[str]:
        if e.text is not None:
            return e.text
        if not e.value:
            return []
        try:
            text = e.value.decode("ascii" if e.vr == "UI" else self.codec)
        except UnicodeDecodeError as exc:
            raise Unsupported("a text value is not valid in the declared character set") from exc
        parts = [text] if e.vr in _SINGLE_VALUED else text.split("\\")
        e.text = [p.rstrip("\0 ") for p in parts]
        return e.text

    def encode(self, vr: str, values: tuple[str, ...] | list[str]) -> bytes:
        try:
            data = "\\".join(values).encode("ascii" if vr == "UI" else self.codec)
        except UnicodeEncodeError as exc:
            raise Unsupported("a new value cannot be encoded in the declared character set") from exc
        if len(data) % 2:
            data += b"\x00" if vr == "UI" else b" "
        return data


def _top(elements: list[Element], tag: int) -> Element | None:
    for e in elements:
        if e.tag == tag:
            return e
    return None


#: What became of one element (a sequence: of all it holds): the element written (None: removed);
#: what deciding it added to the pass, the actions taken, the UID mappings used and the searches
#: of the identifying text (slices of :attr:`Policy.done`, :attr:`Policy.uid_log` and
#: :attr:`Policy.searches`); and the identifying text it was decided with. Replayed for the same
#: element in a later file of the same context if its searches find the same terms there.
_Outcome = tuple[
    Element | None,
    tuple[str, ...],
    tuple[tuple[str, str], ...],
    tuple[tuple[str, frozenset[str]], ...],
    frozenset[str],
]


class _Memo:
    """What the engine learnt from earlier files, for the later ones: the files of a series
    repeat almost every element byte for byte (a CT slice differs from the next in four).

    An element is known by its tag, VR and bytes (a sequence by the bytes of all its items), and
    what becomes of it depends on nothing else within a *context* (the character set, the VR
    encoding and the patient's date shift) but on what its decision found when it searched the
    patient's identifying text (descriptors are cleaned of it). That text can differ from file to
    file of one series (slices that each carry their own Acquisition DateTime), so an outcome is
    kept with its searches and reused where each finds the same terms (:meth:`_RawRun._holds`).
    An outcome that depended on the file's own original UIDs (a descriptor quoting one) is not
    remembered. The answer for a remembered element is the one the policy gave the first time, so
    a file comes out the same byte for byte as without the memo (tested), only sooner. Bounded: it
    is emptied when it holds too much.
    """

    #: Bounds: entries (a 2000-frame header makes about 14 000), bytes charged (about 4x what
    #: the elements read take: the outcomes hold their new elements too), and contexts (patients:
    #: the files of a scan come together, so only the last few are worth keeping).
    MAX_ENTRIES = 1 << 15
    MAX_BYTES = 48 << 20
    MAX_CONTEXTS = 4
    #: Terms by which a file's identifying text may differ from its patient's base text for the
    #: remembered leak-check searches to be tried (each costs a substring test per text searched).
    MAX_TEXT_CHANGE = 16

    def __init__(self) -> None:
        self.collected: dict[tuple[object, ...], tuple[Contribution, ...]] = {}
        self.walked: dict[tuple[object, ...], dict[tuple[object, ...], _Outcome]] = {}
        self.recorded: dict[tuple[str, bool, Recorded], list[Element]] = {}
        #: Leak-check searches, per patient (our own words for the patient: pseudonyms and all).
        self.searched: dict[frozenset[str], _Searches] = {}
        #: The last header this engine de-identified whose layout was kept (the bytes read
        #: reached its pixels' value): the next file is read against it (``like``).
        self.last_header: RawHeader | None = None
        self._entries = 0
        self._bytes = 0

    def walked_in(self, context: tuple[object, ...]) -> dict[tuple[object, ...], _Outcome]:
        """The outcomes remembered in a context (a new context pushes out the oldest)."""
        walked = self.walked.get(context)
        if walked is None:
            while len(self.walked) >= self.MAX_CONTEXTS:
                del self.walked[next(iter(self.walked))]
            walked = self.walked[context] = {}
        return walked

    def recorded_elements(self, run: _RawRun, recorded: Recorded) -> list[Element]:
        """The elements recording what was done (the same for every file of a patient; kept per
        encoding, as each remembers how it was written)."""
        key = (run.text.codec, run.implicit, recorded)
        elements = self.recorded.get(key)
        if elements is None:
            elements = self.recorded[key] = run.recorded_elements(recorded)
            self.charge(0)
        return elements

    def leak_check(
        self, run: _RawRun, recorded: Recorded, new: list[Element], meta: list[Element], new_header: bytes
    ) -> LeakReport:
        """:mod:`dicomflow.deid.leakcheck` on the output: each element's search for the identifying
        text is remembered (an element recurring in a series is searched once per patient), the
        lookup of this file's original UIDs and the search of the header's bytes are done anew.

        A search is remembered with the identifying text it was made for (the patient's *base*)
        and serves a file whose text differs from it by a few terms (each slice's own Acquisition
        DateTime) when it provably gives the same answer (:func:`finds_the_same`); else the
        element is searched again for this file's text."""
        own = recorded.own_text
        text = frozenset(run.identifying.text)
        base = self.searched.get(own)
        if base is None or len(text ^ base.text) > self.MAX_TEXT_CHANGE:
            while own not in self.searched and len(self.searched) >= self.MAX_CONTEXTS:
                del self.searched[next(iter(self.searched))]
            base = self.searched[own] = _Searches(text, own)
        added = text - base.text
        search = base.search if text == base.text else LeakSearch(text, own)
        codec = run.text
        checks = [search.checks(_text_triples(meta, codec))]
        known = base.elements
        other_text = search is not base.search
        for e in new:
            entry = known.get(e)
            if entry is None:
                entry = known[e] = base.search.search(_text_triples([e], codec))
                self.charge(0)
            check, terms, searched = entry
            # (an element without text, most of them, is checked alike for any identifying text)
            if other_text and searched and not finds_the_same(terms, searched, text, added):
                check = search.checks(_text_triples([e], codec))
            checks.append(check)
        new_uids = set(run.uid_map.values()) | {DICOMFLOW_IMPLEMENTATION_UID}
        return search.report(run.identifying, checks, new_header, new_uids)

    def charge(self, size: int) -> None:
        """Account for one new entry of about ``size`` bytes; empty everything past the bounds."""
        self._entries += 1
        self._bytes += 4 * size + 300
        if self._entries > self.MAX_ENTRIES or self._bytes > self.MAX_BYTES:
            self.collected.clear()
            self.walked.clear()
            self.recorded.clear()
            self.searched.clear()
            self._entries = self._bytes = 0


class _Searches:
    """The leak-check searches of output elements made for one identifying text (a patient's
    base): each element's checks, the terms they found and the texts they searched."""

    __slots__ = ("elements", "search", "text")

    def __init__(self, text: frozenset[str], own: frozenset[str]) -> None:
        self.text = text
        self.search = LeakSearch(text, own)
        self.elements: dict[Element, tuple[ValueChecks, frozenset[str], tuple[str, ...]]] = {}


_MEMOS: WeakKeyDictionary[Deidentifier, _Memo] = WeakKeyDictionary()


def _memo_of(deid: Deidentifier) -> _Memo:
    memo = _MEMOS.get(deid)
    if memo is None:
        memo = _MEMOS[deid] = _Memo()
    return memo


def _key(e: Element) -> tuple[object, ...]:
    return (e.tag, e.raw) if e.items is not None else (e.tag, e.vr, e.value)


def _size(e: Element) -> int:
    return len(e.raw) if e.raw is not None else len(e.value)


class _RawRun(Policy):
    """The policy's pass over raw elements."""

    def __init__(self, deid: Deidentifier, patient: str, text: _Text, implicit: bool, memo: _Memo) -> None:
        super().__init__(deid, patient, None)
        self.text = text
        self.implicit = implicit
        self.memo = memo
        self._collected = memo.collected
        self._walked: dict[tuple[object, ...], _Outcome] = {}
        self._identifying_text: frozenset[str] = frozenset()
        self._added: dict[frozenset[str], frozenset[str]] = {}

    def collect(self, elements: list[Element]) -> None:
        """Gather the identifying values (:meth:`Policy.collects`), nested ones included."""
        self.identifying.extend(self._gather(elements))

    def _gather(self, elements: list[Element]) -> list[Contribution]:
        found: list[Contribution] = []
        # What a value adds depends on how it decodes; a sequence's bytes, on how they parse.
        prefix = (self.text.codec, self.implicit)
        for e in elements:
            if e.tag >> 16 & 1 or passes_through(e.vr):
                continue
            if e.items is None and not self.collects(e.tag, e.vr):
                continue
            key = prefix + _key(e)
            known = self._collected.get(key)
            if known is None:
                if e.items is not None:
                    known = tuple(c for item in e.items for c in self._gather(item))
                else:
                    known = contributions(e.vr, e.text if e.text is not None else self.text.values(e))
                self._collected[key] = known
                self.memo.charge(_size(e))
            found.extend(known)
        return found

    def start_walk(self) -> None:
        """Choose the remembered outcomes of this file's context (call after :meth:`collect`)."""
        self._walked = self.memo.walked_in((self.text.codec, self.implicit, self.shift))
        self._identifying_text = frozenset(self.identifying.text)

    def _decided(self, e: Element) -> Element | None:
        """A public element as the policy decides it, remembered for the files after this one
        (and the same object returned for them: its encoding and leak checks are remembered too)."""
        key = _key(e)
        outcome = self._walked.get(key)
        if outcome is not None and (not outcome[3] or self._holds(outcome[3], outcome[4])):
            element, actions, uids, searches, _ = outcome
            self.done.extend(actions)
            if uids:
                self.uid_map.update(uids)
                self.uid_log.extend(uids)
            if searches:
                self.searches.extend(searches)  # a sequence holding this element depends on them too
            return element
        done, uid_log, searched, outer = self.done, self.uid_log, self.searches, self.uid_dependent
        mark, uid_mark, search_mark = len(done), len(uid_log), len(searched)
        self.uid_dependent = False
        try:
            out = self._decide_public(e)
        finally:
            inner = self.uid_dependent
            self.uid_dependent = outer or inner
        if not inner:
            self._walked[key] = (
                out,
                tuple(done[mark:]),
                tuple(uid_log[uid_mark:]),
                tuple(searched[search_mark:]),
                self._identifying_text,
            )
            self.memo.charge(_size(e))
        return out

    def _holds(self, searches: tuple[tuple[str, frozenset[str]], ...], made_with: frozenset[str]) -> bool:
        """Whether searches made with the identifying text ``made_with`` find the same terms with
        this file's (:func:`finds_the_same`)."""
        text = self._identifying_text
        if made_with is text or made_with == text:
            return True
        added = self._added.get(made_with)
        if added is None:
            added = self._added[made_with] = text - made_with
        return all(finds_the_same(found, (searched,), text, added) for searched, found in searches)

    def _decide_public(self, e: Element) -> Element | None:
        vr = e.vr
        if passes_through(vr):  # numbers, codes: kept as read unless the profile names them
            action = self.profile.action(e.tag)
            if action is None or action == "K":
                self.done.append("K" if action else "kept_unlisted")
                return e
            values: list[str] = []
        elif e.items is None and vr in DECODE_VRS and vr != "UN":
            values = e.text if e.text is not None else self.text.values(e)
        else:
            values = []
        return self._apply_change(e, self.decide(e.tag, vr, values))

    def walk(self, elements: list[Element]) -> list[Element]:
        new: list[Element] = []
        creators: dict[int, Element] = {}  # (group << 8 | block) -> private creator element
        kept_blocks: set[int] = set()
        count = self.done.append
        decided = self._decided
        for e in elements:
            tag = e.tag
            group, element = tag >> 16, tag & 0xFFFF
            if group in (0x0000, 0x0002) or element == 0x0000:
                count("X_structural")
                continue
            if group & 1:
                if 0x0010 <= element <= 0x00FF:
                    creators[group << 8 | element] = e
                    continue
                if element < 0x1000:
                    # (gggg,0001-000F): no private creator can own these; pydicom removes them too
                    count("X_private")
                    continue
                creator = creators.get(group << 8 | element >> 8)
                name = self.text.values(creator)[0] if creator is not None and creator.value else ""
                change = self.decide_private(name, tag, e.vr)
                if change.kind != "remove" and self.implicit:
                    # pydicom reads a kept private element with its private dictionary's VR (a
                    # sequence, perhaps, to be walked); without that dictionary, leave it to pydicom
                    raise Unsupported("a safelisted private element in an implicit VR data set")
                out = self._apply_change(e, change)
                if out is not None:
                    new.append(out)
                    kept_blocks.add(group << 8 | element >> 8)
                continue
            out = decided(e)
            if out is not None:
                new.append(out)
        for block in kept_blocks:
            creator = creators.get(block)
            if creator is not None:
                new.append(creator)
        if kept_blocks:
            new.sort(key=_tag_of)
        return new

    def _apply_change(self, e: Element, change: Change) -> Element | None:
        kind = change.kind
        if kind == "keep":
            return e
        if kind == "remove":
            return None
        if kind == "walk":
            return Element(e.tag, "SQ", b"", [self.walk(item) for item in e.items or []])
        if kind == "empty":
            return Element(e.tag, e.vr, b"", [] if e.vr == "SQ" else None)
        if kind == "zero":
            return Element(e.tag, e.vr, _ZERO.get(e.vr, b"\x00\x00"))
        return Element(e.tag, e.vr, self.text.encode(e.vr, change.values))

    def recorded_elements(self, recorded: Recorded) -> list[Element]:
        enc = self.text.encode
        items = [
            [
                Element(0x00080100, "SH", enc("SH", [value])),
                Element(0x00080102, "SH", enc("SH", ["DCM"])),
                Element(0x00080104, "LO", enc("LO", [meaning])),
            ]
            for value, meaning in recorded.codes
        ]
        return [
            Element(_PATIENT_NAME, "PN", enc("PN", [recorded.patient_name])),
            Element(_PATIENT_ID, "LO", enc("LO", [recorded.patient_id])),
            Element(0x00120062, "CS", enc("CS", ["YES"])),
            Element(0x00120063, "LO", enc("LO", [recorded.method])),
            Element(0x00120064, "SQ", b"", items),
            Element(0x00280303, "CS", enc("CS", [recorded.longitudinal])),
        ]


def _tag_of(e: Element) -> int:
    return e.tag


def _patient_identity(dataset: list[Element], text: _Text) -> str:
    """As :func:`dicomflow.deid.actions.patient_identity`: Patient ID, else Name, else Study UID."""
    for tag in (_PATIENT_ID, _PATIENT_NAME, 0x0020000D):
        e = _top(dataset, tag)
        if e is not None and e.items is None:
            values = text.values(e)
            value = values[0] if len(values) == 1 else (str(values) if values else "")
            if value:
                return normalise(value)
    return ""


def _single(e: Element | None, text: _Text) -> str:
    if e is None or e.items is not None:
        return ""
    return "\\".join(text.values(e))


def prepare_raw(
    buf: Buffer, deid: Deidentifier, on_pixels: Callable[[int, int], None] | None = None
) -> Prepared:
    """De-identify a header read from ``buf`` and leak-check the result.

    ``on_pixels(start, end)`` is called as soon as the pixel range is known, before the header is
    rewritten: the caller may start hashing the source's pixels meanwhile.

    Raises
    ------
    Unsupported
        The file is not one this engine takes (the message says why); use the pydicom engine.
    """
    memo = _memo_of(deid)
    header = read_raw_header(buf, like=memo.last_header)
    dataset = header.dataset
    if not dataset:
        raise Unsupported("the data set is empty")
    if not all(dataset[i].tag < dataset[i + 1].tag for i in range(len(dataset) - 1)):
        raise Unsupported("the data set's elements are not in ascending tag order")
    text = _Text(_codec(dataset, buf))
    for tag, meta_tag in ((_SOP_CLASS, 0x00020002), (_SOP_INSTANCE, 0x00020003)):
        value = _single(_top(dataset, tag), text) or _single(_top(header.file_meta, meta_tag), text)
        if not value or len(value) > 64 or not _UID.match(value):
            raise Unsupported("a SOP Class or Instance UID is missing or invalid")
    end = pixel_end(
        header.pixel_value_offset,
        header.pixel_length,
        header.header_end,
        header.file_size,
        buf.read,
    )
    trailing_note = None
    if end != header.file_size:
        # Data Set Trailing Padding alone is dropped (meaningless by definition), as the pydicom
        # engine does; anything else after the pixels is that engine's to de-identify.
        if header.file_size - end > _MAX_TRAILING_PADDING:
            raise Unsupported("more than 1 MiB follows the pixel data")
        tail = buf.read(end, header.file_size)
        trailing, _ = read_elements(
            Buffer(tail, len(tail)), 0, len(tail), implicit=header.implicit, top=False
        )
        if [e.tag for e in trailing] != [_TRAILING_PADDING]:
            raise Unsupported("elements other than trailing padding follow the pixel data")
        trailing_note = "Data Set Trailing Padding dropped"
    if on_pixels is not None and end > header.header_end:
        on_pixels(header.header_end, end)

    run = _RawRun(deid, _patient_identity(dataset, text), text, header.implicit, memo)
    run.collect(dataset)
    run.start_walk()
    new = run.walk(dataset)
    original_name = (
        text.values(e) if (e := _top(dataset, _PATIENT_NAME)) is not None and e.items is None else None
    )
    original_id = (
        text.values(e) if (e := _top(dataset, _PATIENT_ID)) is not None and e.items is None else None
    )
    recorded = run.record(original_name, original_id)
    replaced = {e.tag: e for e in run.memo.recorded_elements(run, recorded)}
    new = sorted([e for e in new if e.tag not in replaced] + list(replaced.values()), key=_tag_of)
    meta = _file_meta(deid, header, new, text)
    # remember=True: an element carried over from an earlier file of this context (same syntax)
    # keeps its encoding
    body = encode_elements(new, implicit=header.implicit, remember=True)
    new_header = b"\x00" * 128 + b"DICM" + encode_file_meta(meta) + body

    held = burned_in_reasons_for(
        _single(_top(dataset, 0x00280301), text),
        _single(_top(dataset, _SOP_CLASS), text),
        _single(_top(dataset, 0x00080060), text),
    )
    leak = run.memo.leak_check(run, recorded, new, meta, new_header)
    sop_instance = _single(_top(new, _SOP_INSTANCE), text) or None
    if header.layout is not None:
        memo.last_header = header  # the next slice of the series is read against this one
    return Prepared(
        new_header=new_header,
        pixel_start=header.header_end,
        pixel_end=end,
        new_trailing=b"",
        trailing_note=trailing_note,
        leak=leak,
        held=held,
        transfer_syntax=header.transfer_syntax,
        sop_instance_uid=sop_instance,
        actions=dict(run.actions),
        header_bytes_read=header.bytes_read,
        engine="raw",
    )


def _codec(dataset: list[Element], buf: Buffer) -> str:
    charset = _top(dataset, _SPECIFIC_CHARACTER_SET)
    if buf.nested_character_set:
        raise Unsupported("a Specific Character Set inside a sequence item")
    if charset is None:
        return "latin-1"
    names = charset.value.decode("ascii", "replace").rstrip("\0 ").split("\\")
    if len(names) != 1 or names[0].strip() not in _CODECS:
        raise Unsupported("a Specific Character Set this engine does not decode")
    return _CODECS[names[0].strip()]


def _file_meta(deid: Deidentifier, header: RawHeader, new: list[Element], text: _Text) -> list[Element]:
    """As :func:`dicomflow.deid.actions._file_meta`: only what a file meta must say; AE titles and
    private information are not carried over."""
    sop_class = _single(_top(new, _SOP_CLASS), text) or _single(_top(header.file_meta, 0x00020002), text)
    sop_instance = _single(_top(new, _SOP_INSTANCE), text)
    if not sop_instance:
        original = _single(_top(header.file_meta, 0x00020003), text)
        sop_instance = remap_uid(deid.key, original) if original else ""
    meta = [Element(0x00020001, "OB", b"\x00\x01")]
    if sop_class:
        meta.append(Element(0x00020002, "UI", text.encode("UI", [sop_class])))
    if sop_instance:
        meta.append(Element(0x00020003, "UI", text.encode("UI", [sop_instance])))
    meta.append(Element(0x00020010, "UI", text.encode("UI", [header.transfer_syntax])))
    meta.append(Element(0x00020012, "UI", text.encode("UI", [DICOMFLOW_IMPLEMENTATION_UID])))
    meta.append(Element(0x00020013, "SH", text.encode("SH", [DICOMFLOW_IMPLEMENTATION_VERSION])))
    return meta


def _text_triples(elements: list[Element], text: _Text) -> list[tuple[int, str, str]]:
    """(tag, VR, value) of every text value of the output, nested ones included, for the leak check."""
    out: list[tuple[int, str, str]] = []
    stack = [elements]
    while stack:
        for e in stack.pop():
            if e.items is not None:
                stack.extend(e.items)
            elif e.value and e.vr in STRING_VRS:
                tag, vr = e.tag, e.vr
                for value in e.text if e.text is not None else text.values(e):
                    out.append((tag, vr, value))
    return out
