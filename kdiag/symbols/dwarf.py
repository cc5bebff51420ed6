"""A compact DWARF 2-5 reader: line tables and function/inline ranges, nothing else.

pyelftools parses every DIE into objects, which is exact but costs tens of microseconds per DIE;
building an address index only needs a few attributes of ``DW_TAG_subprogram`` and
``DW_TAG_inlined_subroutine`` and the rows of ``.debug_line``. This module walks the raw
section bytes with per-abbreviation skip plans (DWARF 5, 7.5.3-7.5.6 attribute forms) and runs
the line-number state machine directly (DWARF 5, 6.2). The ELF container (sections, SHF_COMPRESSED
decompression) is :mod:`kdiag.symbols.elffile`.

Output (:class:`DwarfTables`):

- ``seqs``: line-table sequences ``(addresses, file_ids, lines, end_address)``, rows at one
  address collapsed to the last one (binutils' addr2line rule, PR ld/4986);
- ``files``: file paths, joined with ``DW_AT_comp_dir`` and the include directory the way
  binutils' ``addr2line`` joins them;
- ``funcs``: :class:`FuncNode` per subprogram / inlined subroutine with code ranges, the name
  (``DW_AT_linkage_name`` else ``DW_AT_name``, through ``DW_AT_abstract_origin`` and
  ``DW_AT_specification``), the enclosing node and, for inlined code, the call site.

Malformed input raises :class:`DwarfError` (the caller turns it into ``InputError``).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["DwarfError", "DwarfSections", "DwarfTables", "FuncNode", "read_dwarf"]


class DwarfError(Exception):
    """The DWARF bytes do not parse (truncated section, unknown form, bad header)."""


# -- forms (DWARF 5, 7.5.6; GNU extensions) ---------------------------------------------------
F_ADDR, F_BLOCK2, F_BLOCK4, F_DATA2, F_DATA4, F_DATA8, F_STRING, F_BLOCK = 0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09
F_BLOCK1, F_DATA1, F_FLAG, F_SDATA, F_STRP, F_UDATA, F_REF_ADDR = 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x10
F_REF1, F_REF2, F_REF4, F_REF8, F_REF_UDATA, F_INDIRECT, F_SEC_OFFSET = 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17
F_EXPRLOC, F_FLAG_PRESENT, F_STRX, F_ADDRX, F_REF_SUP4, F_STRP_SUP, F_DATA16 = 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x1E
F_LINE_STRP, F_REF_SIG8, F_IMPLICIT_CONST, F_LOCLISTX, F_RNGLISTX, F_REF_SUP8 = 0x1F, 0x20, 0x21, 0x22, 0x23, 0x24
F_STRX1, F_STRX2, F_STRX3, F_STRX4, F_ADDRX1, F_ADDRX2, F_ADDRX3, F_ADDRX4 = range(0x25, 0x2D)
F_GNU_ADDR_INDEX, F_GNU_STR_INDEX, F_GNU_REF_ALT, F_GNU_STRP_ALT = 0x1F01, 0x1F02, 0x1F20, 0x1F21

# attributes
AT_NAME, AT_STMT_LIST, AT_LOW_PC, AT_HIGH_PC, AT_COMP_DIR = 0x03, 0x10, 0x11, 0x12, 0x1B
AT_ABSTRACT_ORIGIN, AT_SPECIFICATION, AT_RANGES, AT_CALL_FILE, AT_CALL_LINE = 0x31, 0x47, 0x55, 0x58, 0x59
AT_LINKAGE_NAME, AT_MIPS_LINKAGE_NAME = 0x6E, 0x2007
AT_STR_OFFSETS_BASE, AT_ADDR_BASE, AT_RNGLISTS_BASE = 0x72, 0x73, 0x74
AT_GNU_RANGES_BASE, AT_GNU_ADDR_BASE = 0x2132, 0x2133

# tags
TAG_COMPILE_UNIT, TAG_PARTIAL_UNIT, TAG_SUBPROGRAM, TAG_INLINED = 0x11, 0x3C, 0x2E, 0x1D
TAG_SKELETON_UNIT = 0x4A
INTERESTING = frozenset({TAG_SUBPROGRAM, TAG_INLINED})
FUNC_ATTRS = frozenset({AT_NAME, AT_LINKAGE_NAME, AT_MIPS_LINKAGE_NAME, AT_LOW_PC, AT_HIGH_PC,
                        AT_RANGES, AT_ABSTRACT_ORIGIN, AT_SPECIFICATION, AT_CALL_FILE,
                        AT_CALL_LINE, 0x01, 0x3C})  # + DW_AT_sibling, DW_AT_declaration
UNIT_TAGS = frozenset({TAG_COMPILE_UNIT, TAG_PARTIAL_UNIT, TAG_SKELETON_UNIT})
AT_SIBLING, AT_LANGUAGE, AT_DECLARATION = 0x01, 0x13, 0x3C
CODE_ATTRS = frozenset({AT_LOW_PC, AT_HIGH_PC, AT_RANGES})
NAME_ATTRS = frozenset({AT_NAME, AT_LINKAGE_NAME, AT_MIPS_LINKAGE_NAME, AT_ABSTRACT_ORIGIN,
                        AT_SPECIFICATION})
# what read_dwarf uses of a unit's top DIE (the rest, e.g. DW_AT_producer, is skipped)
UNIT_ATTRS = frozenset({AT_STR_OFFSETS_BASE, AT_ADDR_BASE, AT_GNU_ADDR_BASE, AT_RNGLISTS_BASE,
                        AT_LANGUAGE, AT_LOW_PC, AT_COMP_DIR, AT_STMT_LIST})
# DIEs whose children can never hold a subprogram or an inlined call, so the walk may jump
# over them by their DW_AT_sibling: call sites (parameters), enumerations (enumerators),
# function types (parameters), arrays (subranges); in C also structures and unions (members;
# in C++ they hold member-function declarations whose names definitions refer to).
SKIP_CHILDREN = frozenset({0x48, 0x4109, 0x04, 0x15, 0x01})
SKIP_CHILDREN_C = SKIP_CHILDREN | {0x13, 0x17}
C_LANGUAGES = frozenset({0x01, 0x02, 0x0C, 0x1D, 0x2C})  # DW_LANG_C89, C, C99, C11, C17

_FIXED = {F_DATA1: 1, F_REF1: 1, F_FLAG: 1, F_STRX1: 1, F_ADDRX1: 1,
          F_DATA2: 2, F_REF2: 2, F_STRX2: 2, F_ADDRX2: 2,
          F_STRX3: 3, F_ADDRX3: 3,
          F_DATA4: 4, F_REF4: 4, F_REF_SUP4: 4, F_STRX4: 4, F_ADDRX4: 4,
          F_DATA8: 8, F_REF8: 8, F_REF_SIG8: 8, F_REF_SUP8: 8,
          F_DATA16: 16, F_FLAG_PRESENT: 0, F_IMPLICIT_CONST: 0}
_OFFSET_SIZED = frozenset({F_STRP, F_SEC_OFFSET, F_LINE_STRP, F_STRP_SUP, F_GNU_REF_ALT,
                           F_GNU_STRP_ALT})
_ULEB_FORMS = frozenset({F_UDATA, F_REF_UDATA, F_STRX, F_ADDRX, F_LOCLISTX, F_RNGLISTX,
                         F_GNU_ADDR_INDEX, F_GNU_STR_INDEX})
_STRX_FORMS = frozenset({F_STRX, F_STRX1, F_STRX2, F_STRX3, F_STRX4, F_GNU_STR_INDEX})
_ADDRX_FORMS = frozenset({F_ADDRX, F_ADDRX1, F_ADDRX2, F_ADDRX3, F_ADDRX4, F_GNU_ADDR_INDEX})
_REF_CU_FORMS = frozenset({F_REF1, F_REF2, F_REF4, F_REF8, F_REF_UDATA})

# line program (DWARF 5, 6.2.5)
DW_LNS_copy, DW_LNS_advance_pc, DW_LNS_advance_line, DW_LNS_set_file = 1, 2, 3, 4
DW_LNS_const_add_pc, DW_LNS_fixed_advance_pc = 8, 9
DW_LNE_end_sequence, DW_LNE_set_address = 1, 2
DW_LNCT_path, DW_LNCT_directory_index = 1, 2


class DwarfSections:
    """Raw (decompressed) bytes of the DWARF sections; absent sections are empty."""

    __slots__ = ("info", "abbrev", "line", "str", "line_str", "str_offsets", "addr", "ranges",
                 "rnglists", "little_endian")

    def __init__(self, info: bytes = b"", abbrev: bytes = b"", line: bytes = b"",
                 str: bytes = b"", line_str: bytes = b"", str_offsets: bytes = b"",  # noqa: A002
                 addr: bytes = b"", ranges: bytes = b"", rnglists: bytes = b"",
                 little_endian: bool = True) -> None:
        self.info = info
        self.abbrev = abbrev
        self.line = line
        self.str = str
        self.line_str = line_str
        self.str_offsets = str_offsets
        self.addr = addr
        self.ranges = ranges
        self.rnglists = rnglists
        self.little_endian = little_endian


class FuncNode:
    """A subprogram or inlined subroutine with code. ``parent`` is an index into ``funcs``.

    (This module's value classes are plain slotted classes, not dataclasses: importing
    dataclasses is a few milliseconds of every cold build.)"""

    __slots__ = ("ranges", "name_ref", "name", "parent", "inlined", "call_file", "call_line",
                 "depth")

    def __init__(self, ranges: list[tuple[int, int]], name_ref: int, name: str | None,
                 parent: int, inlined: bool, call_file: int, call_line: int,
                 depth: int) -> None:
        self.ranges = ranges
        self.name_ref = name_ref  # DIE offset whose name (or origin's name) this node carries
        self.name = name
        self.parent = parent
        self.inlined = inlined
        self.call_file = call_file  # file id (index into DwarfTables.files), -1 when none
        self.call_line = call_line
        self.depth = depth

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"FuncNode({inner})"


class DwarfTables:
    __slots__ = ("seqs", "files", "funcs")

    def __init__(self) -> None:
        self.seqs: list[tuple[list[int], list[int], list[int], int]] = []
        self.files: list[str] = []
        self.funcs: list[FuncNode] = []


# -- primitive readers ------------------------------------------------------------------------
def _uleb(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _sleb(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if b & 0x40:
                result -= 1 << shift
            return result, pos


def _cstr(buf: bytes, pos: int) -> tuple[bytes, int]:
    end = buf.index(b"\0", pos)
    return buf[pos:end], end + 1


def _uint(buf: bytes, pos: int, size: int) -> int:
    return int.from_bytes(buf[pos:pos + size], "little")


class _Abbrev:
    __slots__ = ("tag", "children", "specs", "consts")

    def __init__(self, tag: int, children: bool, specs: list[tuple[int, int]],
                 consts: dict[int, int] | None = None) -> None:
        self.tag = tag
        self.children = children
        self.specs = specs  # (attr, form)
        self.consts = consts  # attr -> DW_FORM_implicit_const value


_ULEB_RE = rb"[\x80-\xff]*[\x00-\x7f]"
_DECL_RE = (  # tag, children, (attribute, form[, implicit const])*, 0, 0 (DWARF 5, 7.5.3)
    _ULEB_RE + rb"[\x00\x01](?:(?:[\x80-\xff]+[\x00-\x7f]|[\x01-\x7f])"
    + rb"(?:\x21" + _ULEB_RE + rb"|[\x80-\xff]+[\x00-\x7f]|[\x01-\x20\x22-\x7f]))*\x00\x00")
_decl: list[Any] = []


def _abbrev_decl() -> Any:
    """The compiled :data:`_DECL_RE` (``re`` is imported by the first build only)."""
    if not _decl:
        import re

        _decl.append(re.compile(_DECL_RE, re.DOTALL))
    return _decl[0]


def _parse_abbrevs(buf: bytes, pos: int, shared: dict[bytes, _Abbrev] | None = None,
                   end_out: list[int] | None = None) -> dict[int, _Abbrev]:
    """The abbreviation table at ``pos``. ``shared`` (declaration bytes -> _Abbrev) lets the
    many units of one compiler that declare the same abbreviations share one object each
    (read-only), which saves rebuilding them per unit in large files. ``end_out`` gets the
    offset just past the table appended."""
    table: dict[int, _Abbrev] = {}
    uleb = _uleb
    match = _abbrev_decl().match
    if shared is None:
        shared = {}
    while True:
        code = buf[pos]
        if code < 0x80:
            pos += 1
        else:
            code, pos = uleb(buf, pos)
        if code == 0:
            if end_out is not None:
                end_out.append(pos)
            return table
        tag_pos = pos
        tag = buf[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = uleb(buf, pos)
        children = buf[pos] != 0
        pos += 1
        # the declaration's bytes (tag to terminator) are the key of an _Abbrev shared with the
        # other units that declare it the same way: most units of one compiler (one regular
        # expression match finds its end; a declaration it does not match is parsed alone)
        m = match(buf, tag_pos)
        if m is not None:
            key = buf[tag_pos:m.end()]
            known = shared.get(key)
            if known is not None:
                table[code] = known
                pos = m.end()
                continue
        else:
            key = b""
        specs = []
        consts: dict[int, int] = {}
        while True:
            attr = buf[pos]
            if attr < 0x80:
                pos += 1
            else:
                attr, pos = uleb(buf, pos)
            form = buf[pos]
            if form < 0x80:
                pos += 1
            else:
                form, pos = uleb(buf, pos)
            if attr == 0 and form == 0:
                break
            if form == F_IMPLICIT_CONST:
                consts[attr], pos = _sleb(buf, pos)
            specs.append((attr, form))
        table[code] = _Abbrev(tag, children, specs, consts or None)
        if key and m is not None and m.end() == pos:  # (the parse and the match agree)
            shared[key] = table[code]


class _Unit:
    """Per-CU decoding context."""

    __slots__ = ("offset", "end", "version", "addr_size", "off_size", "abbrevs", "die_start",
                 "str_offsets_base", "addr_base", "rnglists_base", "low_pc", "comp_dir",
                 "stmt_list", "name", "lang", "abbrev_off")

    def __init__(self) -> None:
        self.offset = 0
        self.end = 0
        self.version = 4
        self.addr_size = 8
        self.off_size = 4
        self.abbrevs: dict[int, _Abbrev] = {}
        self.die_start = 0
        self.str_offsets_base = 8
        self.addr_base = 8
        self.rnglists_base = 12
        self.low_pc = 0
        self.comp_dir = ""
        self.stmt_list = -1
        self.abbrev_off = 0
        self.name = ""
        self.lang = 0


class _Reader:
    def __init__(self, sec: DwarfSections) -> None:
        if not sec.little_endian:
            raise DwarfError("big-endian DWARF is not supported")
        self.sec = sec
        self.abbrev_cache: dict[int, dict[int, _Abbrev]] = {}
        # code -> plan: a list (dense codes) or a dict
        self.plans: dict[tuple[int, int, int, bool, bool], Any] = {}
        self.shared_abbrevs: dict[bytes, _Abbrev] = {}
        self.line_strs: dict[int, str] = {}  # .debug_line_str offset -> decoded string
        self.strs: dict[int, bytes] = {}  # .debug_str offset -> string (DW_FORM_strp)
        self.joined: dict[tuple[str, str, str], str] = {}  # (dir, name, comp_dir) -> path
        # (name offset, directory offset, comp_dir) -> file id (_gcc_v5_fmap)
        self.v5_fids: dict[tuple[int, int, str], int] = {}
        self.read_plans: dict[tuple[int, int, int, bool, bool],
                              dict[int, list[tuple[int, int, int, int]]]] = {}
        self.fast_plans: dict[tuple[int, int, int, bool, bool], list[int]] = {}
        # (off_size, addr_size, DWARF 2, C unit) -> id(abbreviation) -> _plan_entry(...)
        self.plan_entries: dict[tuple[int, int, bool, bool],
                                dict[int, tuple[tuple[int, bool, Any],
                                                list[tuple[int, int, int, int]] | None]]] = {}

    def line_str_at(self, off: int) -> str:
        """The ``.debug_line_str`` string at ``off``, decoded (once per offset)."""
        text = self.line_strs.get(off)
        if text is None:
            text = self.line_strs[off] = _cstr(self.sec.line_str, off)[0].decode("utf-8",
                                                                                 "replace")
        return text

    # -- attribute values --------------------------------------------------------------------
    def skip(self, form: int, buf: bytes, pos: int, u: _Unit) -> int:
        n = _FIXED.get(form)
        if n is not None:
            return pos + n
        if form in _OFFSET_SIZED:
            return pos + u.off_size
        if form == F_ADDR:
            return pos + u.addr_size
        if form == F_REF_ADDR:
            return pos + (u.addr_size if u.version == 2 else u.off_size)
        if form in _ULEB_FORMS or form == F_SDATA:
            while buf[pos] & 0x80:
                pos += 1
            return pos + 1
        if form == F_STRING:
            return buf.index(b"\0", pos) + 1
        if form in (F_BLOCK, F_EXPRLOC):
            n, pos = _uleb(buf, pos)
            return pos + n
        if form == F_BLOCK1:
            return pos + 1 + buf[pos]
        if form == F_BLOCK2:
            return pos + 2 + _uint(buf, pos, 2)
        if form == F_BLOCK4:
            return pos + 4 + _uint(buf, pos, 4)
        if form == F_INDIRECT:
            real, pos = _uleb(buf, pos)
            return self.skip(real, buf, pos, u)
        raise DwarfError(f"unknown DWARF form {form:#x} in unit at {u.offset:#x}")

    def value(self, form: int, const: int, buf: bytes, pos: int, u: _Unit) -> tuple[object, int]:
        """Decode one attribute value: ints, bytes (strings) or ('ref', off) tuples."""
        if form == F_INDIRECT:
            form, pos = _uleb(buf, pos)
        if form == F_IMPLICIT_CONST:
            return const, pos
        if form == F_ADDR:
            return _uint(buf, pos, u.addr_size), pos + u.addr_size
        if form == F_STRING:
            return _cstr(buf, pos)
        if form == F_STRP:
            off = _uint(buf, pos, u.off_size)
            return _cstr(self.sec.str, off)[0], pos + u.off_size
        if form == F_LINE_STRP:
            off = _uint(buf, pos, u.off_size)
            return _cstr(self.sec.line_str, off)[0], pos + u.off_size
        if form in _STRX_FORMS:
            if form in (F_STRX, F_GNU_STR_INDEX):
                idx, npos = _uleb(buf, pos)
            else:
                size = _FIXED[form]
                idx, npos = _uint(buf, pos, size), pos + size
            so = self.sec.str_offsets
            off = _uint(so, u.str_offsets_base + idx * u.off_size, u.off_size)
            return _cstr(self.sec.str, off)[0], npos
        if form in _ADDRX_FORMS:
            if form in (F_ADDRX, F_GNU_ADDR_INDEX):
                idx, npos = _uleb(buf, pos)
            else:
                size = _FIXED[form]
                idx, npos = _uint(buf, pos, size), pos + size
            return _uint(self.sec.addr, u.addr_base + idx * u.addr_size, u.addr_size), npos
        if form in _REF_CU_FORMS:
            if form == F_REF_UDATA:
                v, npos = _uleb(buf, pos)
            else:
                size = _FIXED[form]
                v, npos = _uint(buf, pos, size), pos + size
            return ("ref", u.offset + v), npos
        if form == F_REF_ADDR:
            size = u.addr_size if u.version == 2 else u.off_size
            return ("ref", _uint(buf, pos, size)), pos + size
        if form in (F_DATA1, F_DATA2, F_DATA4, F_DATA8, F_FLAG, F_SEC_OFFSET):
            size = _FIXED.get(form, u.off_size)
            return _uint(buf, pos, size), pos + size
        if form in (F_UDATA, F_LOCLISTX, F_RNGLISTX):
            v, npos = _uleb(buf, pos)
            return (("rnglistx", v) if form == F_RNGLISTX else v), npos
        if form == F_SDATA:
            return _sleb(buf, pos)
        if form == F_FLAG_PRESENT:
            return 1, pos
        return None, self.skip(form, buf, pos, u)

    # -- units ---------------------------------------------------------------------------------
    def units(self) -> list[_Unit]:
        buf = self.sec.info
        pos = 0
        out = []
        while pos + 11 <= len(buf):
            u = _Unit()
            u.offset = pos
            length = _uint(buf, pos, 4)
            p = pos + 4
            u.off_size = 4
            if length == 0xFFFFFFFF:
                length = _uint(buf, p, 8)
                p += 8
                u.off_size = 8
            elif length >= 0xFFFFFFF0:
                raise DwarfError(f"bad unit length {length:#x} at .debug_info+{pos:#x}")
            u.end = p + length
            if u.end > len(buf) or length < 7:
                raise DwarfError(f"unit at .debug_info+{pos:#x} runs past the section "
                                 f"({length:#x} bytes, section {len(buf):#x})")
            u.version = _uint(buf, p, 2)
            p += 2
            if not 2 <= u.version <= 5:
                raise DwarfError(f"unsupported DWARF version {u.version} at .debug_info+{pos:#x}")
            if u.version >= 5:
                unit_type = buf[p]
                u.addr_size = buf[p + 1]
                abbrev_off = _uint(buf, p + 2, u.off_size)
                p += 2 + u.off_size
                if unit_type in (2, 6):  # type units: signature + type offset
                    p += 8 + u.off_size
                elif unit_type in (4, 5):  # skeleton / split: dwo id
                    p += 8
            else:
                abbrev_off = _uint(buf, p, u.off_size)
                u.addr_size = buf[p + u.off_size]
                p += u.off_size + 1
            if u.addr_size not in (2, 4, 8):
                raise DwarfError(f"bad address size {u.addr_size} at .debug_info+{pos:#x}")
            if abbrev_off >= len(self.sec.abbrev):
                raise DwarfError(f"abbrev offset {abbrev_off:#x} outside .debug_abbrev")
            u.abbrev_off = abbrev_off
            u.die_start = p
            out.append(u)
            pos = u.end
        # each unit's abbreviation table; identical tables (the same bytes up to the next
        # table) are parsed once and shared, which also shares _walk_unit's plans for them
        abbrev = self.sec.abbrev
        offs = sorted({u.abbrev_off for u in out})
        nxt = dict(zip(offs, [*offs[1:], len(abbrev)], strict=False))
        by_bytes: dict[bytes, dict[int, _Abbrev]] = {}
        for u in out:
            off = u.abbrev_off
            tbl = self.abbrev_cache.get(off)
            if tbl is None:
                key = abbrev[off:nxt[off]]
                tbl = by_bytes.get(key)
                if tbl is None:
                    ends: list[int] = []
                    tbl = _parse_abbrevs(abbrev, off, self.shared_abbrevs, ends)
                    if ends[0] <= nxt[off]:  # the table lies inside the key: reusable
                        by_bytes[key] = tbl
                self.abbrev_cache[off] = tbl
            u.abbrevs = tbl
        return out

    def read_plan(self, ab: _Abbrev, u: _Unit, wanted: frozenset[int]
                  ) -> list[tuple[int, int, int, int]]:
        """``ab``'s attributes compiled for :meth:`planned_attrs`, as steps ``(kind, a, b, c)``:
        0 skip ``a`` bytes (runs of fixed-size unwanted attributes merged); 1 skip one
        variable-size value of form ``a``; for a wanted attribute ``a`` of form ``b``: 3 an
        unsigned ``c``-byte int, 4 a ``c``-byte reference inside the unit, 5 a ``.debug_str``
        offset, 6 an address, 7 ``flag_present``, 2 anything else (``c``: implicit const)."""
        steps: list[tuple[int, int, int, int]] = []
        for attr, form in ab.specs:
            if attr not in wanted:
                n = self.fixed_size(_Abbrev(ab.tag, False, [(attr, form)]), u)
                if n is None:
                    steps.append((1, form, 0, 0))
                elif steps and steps[-1][0] == 0:
                    steps[-1] = (0, steps[-1][1] + n, 0, 0)
                else:
                    steps.append((0, n, 0, 0))
                continue
            if form in (F_DATA1, F_DATA2, F_DATA4, F_DATA8, F_FLAG):
                steps.append((3, attr, form, _FIXED[form]))
            elif form in (F_REF1, F_REF2, F_REF4, F_REF8):
                steps.append((4, attr, form, _FIXED[form]))
            elif form == F_STRP:
                steps.append((5, attr, form, u.off_size))
            elif form == F_ADDR:
                steps.append((6, attr, form, u.addr_size))
            elif form == F_FLAG_PRESENT:
                steps.append((7, attr, form, 0))
            else:
                steps.append((2, attr, form, ab.consts.get(attr, 0) if ab.consts else 0))
        return steps

    def planned_attrs(self, steps: list[tuple[int, int, int, int]], buf: bytes, pos: int,
                      u: _Unit) -> tuple[dict[int, tuple[int, object]], int]:
        """:meth:`attrs` with a plan from :meth:`read_plan` (the same values)."""
        out: dict[int, tuple[int, object]] = {}
        for kind, a, b, c in steps:
            if kind == 0:
                pos += a
            elif kind == 3:
                out[a] = (b, int.from_bytes(buf[pos:pos + c], "little"))
                pos += c
            elif kind == 5:
                off = int.from_bytes(buf[pos:pos + c], "little")
                pos += c
                sv = self.strs.get(off)
                if sv is None:
                    sv = self.strs[off] = _cstr(self.sec.str, off)[0]
                out[a] = (b, sv)
            elif kind == 4:
                out[a] = (b, ("ref", u.offset + int.from_bytes(buf[pos:pos + c], "little")))
                pos += c
            elif kind == 6:
                out[a] = (b, int.from_bytes(buf[pos:pos + c], "little"))
                pos += c
            elif kind == 7:
                out[a] = (b, 1)
            elif kind == 1:
                pos = self.skip(a, buf, pos, u)
            else:
                v, pos = self.value(b, c, buf, pos, u)
                out[a] = (b, v)
        return out, pos

    def sibling_offset(self, ab: _Abbrev, u: _Unit) -> int | None:
        """Byte offset of a DW_FORM_ref4 DW_AT_sibling inside DIEs of ``ab`` when every
        attribute before it has a fixed size; else None."""
        total = 0
        for attr, form in ab.specs:
            if attr == AT_SIBLING:
                return total if form == F_REF4 else None
            n = self.fixed_size(_Abbrev(ab.tag, False, [(attr, form)]), u)
            if n is None:
                return None
            total += n
        return None

    def fixed_size(self, ab: _Abbrev, u: _Unit) -> int | None:
        total = 0
        for _attr, form in ab.specs:
            n = _FIXED.get(form)
            if n is None:
                if form in _OFFSET_SIZED:
                    n = u.off_size
                elif form == F_ADDR:
                    n = u.addr_size
                elif form == F_REF_ADDR:
                    n = u.addr_size if u.version == 2 else u.off_size
                else:
                    return None
            total += n
        return total

    def attrs(self, ab: _Abbrev, buf: bytes, pos: int, u: _Unit,
              wanted: frozenset[int] | None = None) -> tuple[dict[int, tuple[int, object]], int]:
        out: dict[int, tuple[int, object]] = {}
        consts = ab.consts
        for attr, form in ab.specs:
            if wanted is not None and attr not in wanted:
                pos = self.skip(form, buf, pos, u)
                continue
            v, pos = self.value(form, consts.get(attr, 0) if consts else 0, buf, pos, u)
            out[attr] = (form, v)
        return out, pos

    def ranges_of(self, attrs: dict[int, tuple[int, object]], u: _Unit) -> list[tuple[int, int]]:
        low = attrs.get(AT_LOW_PC)
        if low is not None and isinstance(low[1], int):
            lo = low[1]
            high = attrs.get(AT_HIGH_PC)
            if high is None:
                return [(lo, lo + 1)]
            form, hv = high
            if not isinstance(hv, int):
                return []
            hi = hv if form in (F_ADDR,) or form in _ADDRX_FORMS else lo + hv
            return [(lo, hi)] if hi > lo else []
        rng = attrs.get(AT_RANGES)
        if rng is None:
            return []
        form, rv = rng
        try:
            if u.version >= 5:
                if isinstance(rv, tuple):  # rnglistx
                    base = u.rnglists_base
                    off = base + _uint(self.sec.rnglists, base + rv[1] * u.off_size, u.off_size)
                else:
                    off = int(rv)  # type: ignore[call-overload]
                return self._rnglist_v5(off, u)
            if isinstance(rv, int):
                return self._ranges_v4(rv, u)
        except (IndexError, ValueError):
            return []
        return []

    def _ranges_v4(self, off: int, u: _Unit) -> list[tuple[int, int]]:
        buf = self.sec.ranges
        size = u.addr_size
        maxv = (1 << (8 * size)) - 1
        base = u.low_pc
        out = []
        while off + 2 * size <= len(buf):
            a = _uint(buf, off, size)
            b = _uint(buf, off + size, size)
            off += 2 * size
            if a == 0 and b == 0:
                break
            if a == maxv:
                base = b
                continue
            if b > a:
                out.append((base + a, base + b))
        return out

    def _rnglist_v5(self, off: int, u: _Unit) -> list[tuple[int, int]]:
        buf = self.sec.rnglists
        size = u.addr_size
        base = u.low_pc
        out = []

        def addrx(i: int) -> int:
            return _uint(self.sec.addr, u.addr_base + i * size, size)

        while off < len(buf):
            kind = buf[off]
            off += 1
            if kind == 0:  # end_of_list
                break
            if kind == 1:  # base_addressx
                i, off = _uleb(buf, off)
                base = addrx(i)
            elif kind == 2:  # startx_endx
                i, off = _uleb(buf, off)
                j, off = _uleb(buf, off)
                out.append((addrx(i), addrx(j)))
            elif kind == 3:  # startx_length
                i, off = _uleb(buf, off)
                n, off = _uleb(buf, off)
                a = addrx(i)
                out.append((a, a + n))
            elif kind == 4:  # offset_pair
                a, off = _uleb(buf, off)
                b, off = _uleb(buf, off)
                out.append((base + a, base + b))
            elif kind == 5:  # base_address
                base = _uint(buf, off, size)
                off += size
            elif kind == 6:  # start_end
                a = _uint(buf, off, size)
                b = _uint(buf, off + size, size)
                off += 2 * size
                out.append((a, b))
            elif kind == 7:  # start_length
                a = _uint(buf, off, size)
                off += size
                n, off = _uleb(buf, off)
                out.append((a, a + n))
            else:
                break
        return [(a, b) for a, b in out if b > a]


# -- line programs -------------------------------------------------------------------------------
def _join(dirname: str, name: str, comp_dir: str) -> str:
    if name.startswith("/"):
        return name
    if dirname and not dirname.startswith("/") and comp_dir:
        dirname = comp_dir.rstrip("/") + "/" + dirname
    elif not dirname:
        dirname = comp_dir
    return f"{dirname.rstrip('/')}/{name}" if dirname else name


def _line_header_v5_entries(rd: _Reader, buf: bytes, pos: int, u: _Unit
                            ) -> tuple[list[tuple[str, int]], int]:
    fmt_count = buf[pos]
    pos += 1
    fmts = []
    for _ in range(fmt_count):
        ct, pos = _uleb(buf, pos)
        form, pos = _uleb(buf, pos)
        fmts.append((ct, form))
    count, pos = _uleb(buf, pos)
    entries: list[tuple[str, int]] = []
    if fmts in ([(DW_LNCT_path, F_LINE_STRP)],
                [(DW_LNCT_path, F_LINE_STRP), (DW_LNCT_directory_index, F_UDATA)]):
        # what gcc writes (without MD5s): .debug_line_str offsets, each string decoded once
        # per file however many units list it
        strs = rd.line_strs
        line_str = rd.sec.line_str
        n = u.off_size
        with_dir = len(fmts) == 2
        for _ in range(count):
            off = int.from_bytes(buf[pos:pos + n], "little")
            pos += n
            path = strs.get(off)
            if path is None:
                path = strs[off] = _cstr(line_str, off)[0].decode("utf-8", "replace")
            dir_index = 0
            if with_dir:
                dir_index = buf[pos]
                if dir_index < 0x80:
                    pos += 1
                else:
                    dir_index, pos = _uleb(buf, pos)
            entries.append((path, dir_index))
        return entries, pos
    for _ in range(count):
        path = ""
        dir_index = 0
        for ct, form in fmts:
            v, pos = rd.value(form, 0, buf, pos, u)
            if ct == DW_LNCT_path and isinstance(v, bytes):
                path = v.decode("utf-8", "replace")
            elif ct == DW_LNCT_directory_index and isinstance(v, int):
                dir_index = v
        entries.append((path, dir_index))
    return entries, pos


_GCC_V5_DIRS = bytes([1, DW_LNCT_path, F_LINE_STRP])
_GCC_V5_FILES = bytes([2, DW_LNCT_path, F_LINE_STRP, DW_LNCT_directory_index, F_UDATA])


def _gcc_v5_fmap(rd: _Reader, buf: bytes, pos: int, n: int, comp_dir: str,
                 files_out: list[str], file_ids: dict[str, int]
                 ) -> tuple[list[int], int] | None:
    """The file-index -> file id map of a DWARF 5 line header in gcc's layout (paths as
    ``.debug_line_str`` offsets, directory indexes as ULEB128), read from ``pos`` (the
    directory entry formats); None for any other layout. Each (name offset, directory
    offset, compilation directory) is joined and looked up once for the whole file, not once
    per unit that lists it (what :func:`_line_header_v5_entries` and the join would do)."""
    if buf[pos:pos + 3] != _GCC_V5_DIRS:
        return None
    count, pos = _uleb(buf, pos + 3)
    end = pos + count * n
    dir_offs = [int.from_bytes(buf[p:p + n], "little") for p in range(pos, end, n)]
    pos = end
    if buf[pos:pos + 5] != _GCC_V5_FILES:
        return None
    count, pos = _uleb(buf, pos + 5)
    fids = rd.v5_fids
    ndirs = len(dir_offs)
    fmap: list[int] = []
    for _ in range(count):
        off = int.from_bytes(buf[pos:pos + n], "little")
        pos += n
        di = buf[pos]
        if di < 0x80:
            pos += 1
        else:
            di, pos = _uleb(buf, pos)
        key = (off, dir_offs[di] if di < ndirs else -1, comp_dir)
        fid = fids.get(key)
        if fid is None:
            name = rd.line_str_at(off)
            d = rd.line_str_at(key[1]) if key[1] >= 0 else ""
            path = rd.joined.get((d, name, comp_dir))
            if path is None:
                path = rd.joined[(d, name, comp_dir)] = _join(d, name, comp_dir)
            fid = file_ids.get(path)
            if fid is None:
                fid = file_ids[path] = len(files_out)
                files_out.append(path)
            fids[key] = fid
        fmap.append(fid)
    return fmap, pos


def read_line_program(rd: _Reader, offset: int, u: _Unit, files_out: list[str],
                      file_ids: dict[str, int],
                      seqs: list[tuple[list[int], list[int], list[int], int]]) -> list[int]:
    """Run one line program; append its sequences; return the CU's file-index -> file id map."""
    buf = rd.sec.line
    if offset + 10 > len(buf):
        raise DwarfError(f"line program offset {offset:#x} outside .debug_line")
    length = _uint(buf, offset, 4)
    pos = offset + 4
    off_size = 4
    if length == 0xFFFFFFFF:
        length = _uint(buf, pos, 8)
        pos += 8
        off_size = 8
    end = pos + length
    if end > len(buf):
        raise DwarfError(f"line program at .debug_line+{offset:#x} runs past the section")
    version = _uint(buf, pos, 2)
    pos += 2
    if not 2 <= version <= 5:
        raise DwarfError(f"unsupported line table version {version} at .debug_line+{offset:#x}")
    lu = _Unit()
    lu.offset = u.offset
    lu.version = version
    lu.off_size = off_size
    lu.addr_size = u.addr_size
    lu.str_offsets_base = u.str_offsets_base
    if version >= 5:
        lu.addr_size = buf[pos]
        pos += 2  # address_size, segment_selector_size
    header_length = _uint(buf, pos, off_size)
    pos += off_size
    program = pos + header_length
    min_inst = buf[pos]
    pos += 1
    if version >= 4:
        pos += 1  # maximum_operations_per_instruction (VLIW only)
    pos += 1  # default_is_stmt
    line_base = buf[pos] - 256 if buf[pos] > 127 else buf[pos]
    line_range = buf[pos + 1] or 1
    opcode_base = buf[pos + 2]
    pos += 3
    std_lengths = list(buf[pos:pos + opcode_base - 1])
    pos += opcode_base - 1
    comp_dir = u.comp_dir
    paths: list[str]
    fast = _gcc_v5_fmap(rd, buf, pos, lu.off_size, comp_dir, files_out, file_ids) \
        if version >= 5 else None
    if fast is not None:
        fmap, pos = fast
        paths = []
    elif version >= 5:
        dirs_e, pos = _line_header_v5_entries(rd, buf, pos, lu)
        files_e, pos = _line_header_v5_entries(rd, buf, pos, lu)
        dirs = [d for d, _ in dirs_e]
        paths = []
        joined = rd.joined
        for name, di in files_e:
            d = dirs[di] if di < len(dirs) else ""
            key = (d, name, comp_dir)
            path = joined.get(key)
            if path is None:
                path = joined[key] = _join(d, name, comp_dir)
            paths.append(path)
    else:
        dirs = [comp_dir]
        while buf[pos]:
            d_b, pos = _cstr(buf, pos)
            dirs.append(d_b.decode("utf-8", "replace"))
        pos += 1
        paths = ["?"]  # file numbers start at 1
        while buf[pos]:
            name_b, pos = _cstr(buf, pos)
            di, pos = _uleb(buf, pos)
            _, pos = _uleb(buf, pos)
            _, pos = _uleb(buf, pos)
            d = dirs[di] if di < len(dirs) else ""
            name = name_b.decode("utf-8", "replace")
            paths.append(_join(d, name, comp_dir))
    if fast is None:
        fmap = []
    for p in paths:
        fid = file_ids.get(p)
        if fid is None:
            fid = len(files_out)
            files_out.append(p)
            file_ids[p] = fid
        fmap.append(fid)

    # the state machine (DWARF 5, 6.2.2); `last` is the address of the newest row of the
    # current sequence (-1: none yet), so rows at one address collapse to the last one
    pos = program
    address = 0
    file = 1
    line = 1
    const_add = ((255 - opcode_base) // line_range) * min_inst
    nfiles = len(fmap)
    fid = fmap[1] if nfiles > 1 else -1
    sa: list[int] = []
    sf: list[int] = []
    sl: list[int] = []
    add_a, add_f, add_l = sa.append, sf.append, sl.append
    last = -1
    # special opcodes: address and line advance per opcode, computed once
    addr_adv = [0] * 256
    line_adv = [0] * 256
    for op in range(opcode_base, 256):
        adj = op - opcode_base
        addr_adv[op] = (adj // line_range) * min_inst
        line_adv[op] = line_base + adj % line_range
    try:
        while pos < end:
            op = buf[pos]
            pos += 1
            if op >= opcode_base:
                address += addr_adv[op]
                line += line_adv[op]
                if address == last:
                    sf[-1] = fid
                    sl[-1] = line
                else:
                    add_a(address)
                    add_f(fid)
                    add_l(line)
                    last = address
            elif op == 5:  # DW_LNS_set_column (gcc emits one before most rows): skip it
                if buf[pos] < 0x80:
                    pos += 1
                else:
                    while buf[pos] & 0x80:
                        pos += 1
                    pos += 1
            elif op == 6:  # DW_LNS_negate_stmt (the next most frequent): nothing to do
                pass
            elif op == DW_LNS_copy:
                if address == last:
                    sf[-1] = fid
                    sl[-1] = line
                else:
                    add_a(address)
                    add_f(fid)
                    add_l(line)
                    last = address
            elif op == DW_LNS_advance_line:
                v = buf[pos]
                if v < 0x40:
                    pos += 1
                    line += v
                elif v < 0x80:
                    pos += 1
                    line += v - 0x80
                else:
                    v, pos = _sleb(buf, pos)
                    line += v
            elif op == 0:
                n, pos = _uleb(buf, pos)
                if n == 0:
                    continue
                sub = buf[pos]
                if sub == DW_LNE_end_sequence:
                    if sa:
                        seqs.append((sa, sf, sl, address))
                    sa, sf, sl = [], [], []
                    add_a, add_f, add_l = sa.append, sf.append, sl.append
                    last = -1
                    address = 0
                    file = 1
                    fid = fmap[1] if nfiles > 1 else -1
                    line = 1
                elif sub == DW_LNE_set_address:
                    address = _uint(buf, pos + 1, n - 1)
                pos += n
            elif op == DW_LNS_const_add_pc:
                address += const_add
            elif op == DW_LNS_set_file:
                file, pos = _uleb(buf, pos)
                fid = fmap[file] if file < nfiles else -1
            elif op == DW_LNS_advance_pc:
                v = buf[pos]
                if v < 0x80:
                    pos += 1
                else:
                    v, pos = _uleb(buf, pos)
                address += v * min_inst
            elif op == DW_LNS_fixed_advance_pc:
                address += _uint(buf, pos, 2)
                pos += 2
            elif op == 12:  # set_isa
                while buf[pos] & 0x80:
                    pos += 1
                pos += 1
            elif op in (7, 10, 11):  # basic_block, prologue_end, epilogue_begin
                pass
            else:
                for _ in range(std_lengths[op - 1] if op - 1 < len(std_lengths) else 0):
                    _, pos = _uleb(buf, pos)
        if sa:  # a sequence without DW_LNE_end_sequence: close it at its last row
            seqs.append((sa, sf, sl, sa[-1]))
    except IndexError as err:
        raise DwarfError(f"truncated line program at .debug_line+{offset:#x}") from err
    return fmap


# -- the walk ------------------------------------------------------------------------------------
def read_dwarf(sec: DwarfSections, want_funcs: bool = True) -> DwarfTables:
    """Read every unit's line program and (``want_funcs``) subprogram/inline ranges."""
    rd = _Reader(sec)
    out = DwarfTables()
    file_ids: dict[str, int] = {}
    names: dict[int, str] = {}  # DIE offset -> name of named subprograms
    origin: dict[int, int] = {}  # DIE offset -> abstract_origin / specification target
    line_done: dict[int, list[int]] = {}
    walked: list[_Unit] = []  # units whose DIEs were walked (in .debug_info order)
    top_plans: dict[tuple[int, int, int, int], list[tuple[int, int, int, int]]] = {}
    buf = sec.info
    try:
        units = rd.units()
        for u in units:
            pos = u.die_start
            code, pos = _uleb(buf, pos)
            if code == 0:
                continue
            ab = u.abbrevs.get(code)
            if ab is None:
                raise DwarfError(f"unknown abbreviation {code} at .debug_info+{u.die_start:#x}")
            if ab.tag not in UNIT_TAGS:
                continue
            top_plan_key = (id(ab), u.off_size, u.addr_size, u.version)
            top_plan = top_plans.get(top_plan_key)
            if top_plan is None:
                top_plan = top_plans[top_plan_key] = rd.read_plan(ab, u, UNIT_ATTRS)
            top, pos = rd.planned_attrs(top_plan, buf, pos, u)
            based = False
            for at, name in ((AT_STR_OFFSETS_BASE, "str_offsets_base"), (AT_ADDR_BASE, "addr_base"),
                             (AT_GNU_ADDR_BASE, "addr_base"), (AT_RNGLISTS_BASE, "rnglists_base")):
                if at in top and isinstance(top[at][1], int):
                    setattr(u, name, top[at][1])
                    based = True
            if based:  # re-read values that needed the bases (strx forms before the base)
                top, _ = rd.planned_attrs(top_plan, buf, _uleb(buf, u.die_start)[1], u)
            lang = top.get(AT_LANGUAGE)
            u.lang = lang[1] if lang and isinstance(lang[1], int) else 0
            low = top.get(AT_LOW_PC)
            u.low_pc = low[1] if low and isinstance(low[1], int) else 0
            cd = top.get(AT_COMP_DIR)
            u.comp_dir = cd[1].decode("utf-8", "replace") if cd and isinstance(cd[1], bytes) else ""
            sl = top.get(AT_STMT_LIST)
            fmap: list[int] = []
            if sl is not None and isinstance(sl[1], int) and sec.line:
                if sl[1] in line_done:
                    fmap = line_done[sl[1]]
                else:
                    fmap = read_line_program(rd, sl[1], u, out.files, file_ids, out.seqs)
                    line_done[sl[1]] = fmap
            if want_funcs and ab.children:
                walked.append(u)
                _walk_unit(rd, u, pos, out, fmap, names, origin)
    except IndexError as err:
        raise DwarfError("truncated DWARF data (a section ends inside an entry)") from err
    # resolve names through abstract_origin / specification chains
    info = _NameResolver(rd, walked, names, origin).info
    for node in out.funcs:
        ref = node.name_ref
        for _ in range(8):
            found, nxt = info(ref)
            if found is not None:
                node.name = found
                break
            if nxt is None:
                break
            ref = nxt
    return out


class _NameResolver:
    """Name and origin of the DIE at an offset, for the names of function nodes.

    The walk records them for the DIEs it reads (those that can have code); a subprogram
    without code (a declaration, an abstract instance of an inline function) is read here,
    only when a node's ``DW_AT_abstract_origin``/``DW_AT_specification`` chain reaches it: in
    large C++ files most of them never are. Only DIEs of walked units count, and only
    subprograms and inlined subroutines, as if the walk had read them all.
    """

    def __init__(self, rd: _Reader, walked: list[_Unit], names: dict[int, str],
                 origin: dict[int, int]) -> None:
        self.rd = rd
        self.units = walked
        self.starts = [u.offset for u in walked]
        self.names = names
        self.origin = origin
        self.lazy: dict[int, tuple[str | None, int | None]] = {}

    def info(self, ref: int) -> tuple[str | None, int | None]:
        name = self.names.get(ref)
        if name is not None:
            return name, None
        nxt = self.origin.get(ref)
        if nxt is not None:
            return None, nxt
        got = self.lazy.get(ref)
        if got is None:
            got = self.lazy[ref] = self._read(ref)
        return got

    def _read(self, ref: int) -> tuple[str | None, int | None]:
        from bisect import bisect_right

        i = bisect_right(self.starts, ref) - 1
        if i < 0:
            return None, None
        u = self.units[i]
        if not u.die_start <= ref < u.end:
            return None, None
        buf = self.rd.sec.info
        try:
            code, pos = _uleb(buf, ref)
            ab = u.abbrevs.get(code)
            if ab is None or ab.tag not in INTERESTING:
                return None, None
            attrs, _ = self.rd.attrs(ab, buf, pos, u, NAME_ATTRS)
        except (IndexError, DwarfError):
            return None, None
        name = None
        nm = attrs.get(AT_LINKAGE_NAME) or attrs.get(AT_MIPS_LINKAGE_NAME) or attrs.get(AT_NAME)
        if nm is not None and isinstance(nm[1], bytes):
            name = nm[1].decode("utf-8", "replace")
        org = attrs.get(AT_ABSTRACT_ORIGIN) or attrs.get(AT_SPECIFICATION)
        return name, (org[1][1] if org is not None and isinstance(org[1], tuple) else None)


def _plan_entry(rd: _Reader, ab: _Abbrev, u: _Unit, is_c: bool
                ) -> tuple[tuple[int, bool, Any], list[tuple[int, int, int, int]] | None]:
    """How :func:`_walk_unit` treats DIEs of ``ab`` (see the codes there), and the attribute
    read plan of the DIEs it reads."""
    if ab.tag in INTERESTING:
        attrs = {attr for attr, _form in ab.specs}
        if attrs & CODE_ATTRS:
            return (-2, ab.children, ab), rd.read_plan(ab, u, FUNC_ATTRS)
        # no code: never a node. Its name (or origin) matters only when a node refers to it,
        # which read_dwarf resolves afterwards (_NameResolver); the walk steps over it, and
        # over its children too where DW_AT_sibling says how far: a declaration's are its
        # parameters, an abstract instance's (DW_AT_inline) its abstract parameters, locals
        # and blocks - none has code either
        if ab.children:
            sib = rd.sibling_offset(ab, u)
            if sib is not None:
                return (-3 - sib, True, ab), None
            if AT_DECLARATION in attrs:  # (its DW_AT_sibling, read, may still say)
                return (-2, ab.children, ab), rd.read_plan(ab, u, FUNC_ATTRS)
    if ab.children and ab.tag in (SKIP_CHILDREN_C if is_c else SKIP_CHILDREN):
        sib = rd.sibling_offset(ab, u)
        if sib is not None:
            return (-3 - sib, True, ab), None
    fs = rd.fixed_size(ab, u)
    if fs is None:
        return (-1, ab.children, _skip_steps(rd, ab, u)), None
    return (fs, ab.children, ab), None


_LEB, _LEN_LEB, _CSTRING, _LEN1, _OTHER = 1, 2, 3, 4, 5


def _skip_steps(rd: _Reader, ab: _Abbrev, u: _Unit) -> tuple[tuple[int, int, int], ...]:
    """``ab``'s attributes as skip steps ``(fixed bytes, kind, form)`` for DIEs that have
    variable-size values: first skip the fixed bytes, then one value of ``kind`` (0 none,
    ``_LEB`` a LEB128, ``_LEN_LEB`` a ULEB128 length and that many bytes (exprloc, block),
    ``_CSTRING``, ``_LEN1`` a block1, ``_OTHER`` anything else: :meth:`_Reader.skip`)."""
    steps: list[tuple[int, int, int]] = []
    fixed = 0
    for attr, form in ab.specs:
        n = rd.fixed_size(_Abbrev(ab.tag, False, [(attr, form)]), u)
        if n is not None:
            fixed += n
            continue
        if form in _ULEB_FORMS or form == F_SDATA:
            kind = _LEB
        elif form in (F_EXPRLOC, F_BLOCK):
            kind = _LEN_LEB
        elif form == F_STRING:
            kind = _CSTRING
        elif form == F_BLOCK1:
            kind = _LEN1
        else:
            kind = _OTHER
        steps.append((fixed, kind, form))
        fixed = 0
    steps.append((fixed, 0, 0))
    return tuple(steps)


def _walk_unit(rd: _Reader, u: _Unit, pos: int, out: DwarfTables, fmap: list[int],
               names: dict[int, str], origin: dict[int, int]) -> None:
    buf = rd.sec.info
    end = u.end
    abbrevs = u.abbrevs
    is_c = u.lang in C_LANGUAGES
    ctx = (u.off_size, u.addr_size, u.version == 2, is_c)
    plan_key = (id(abbrevs), *ctx)
    fixed = rd.plans.get(plan_key)
    read_plans = rd.read_plans.get(plan_key)
    if fixed is None or read_plans is None:
        # code -> (size, has children, abbrev): size >= 0 a fixed size to skip, -1 a DIE
        # to skip attribute by attribute (then not the abbrev but its _skip_steps), -2 a DIE
        # to read (subprograms, inlined calls), -3 - k a DIE to jump over with its children:
        # its DW_AT_sibling (ref4) is k bytes in.
        # The entry of each (shared) abbreviation is computed once per unit shape.
        # (a list indexed by code: abbreviation codes are small and dense)
        top = max(abbrevs, default=0)
        fixed = [None] * (top + 1) if top <= 4 * len(abbrevs) + 64 else {}
        read_plans = {}
        entries = rd.plan_entries.setdefault(ctx, {})
        for code, ab in abbrevs.items():
            ent = entries.get(id(ab))
            if ent is None:
                ent = entries[id(ab)] = _plan_entry(rd, ab, u, is_c)
            fixed[code] = ent[0]
            if ent[1] is not None:
                read_plans[code] = ent[1]
        rd.plans[plan_key] = fixed
        rd.read_plans[plan_key] = read_plans
    # the hot case first: one-byte code -> total size of a childless fixed-size DIE (else 0)
    fast = rd.fast_plans.get(plan_key)
    if fast is None:
        fast = rd.fast_plans[plan_key] = [0] * 0x80
        for code, plan in (fixed.items() if isinstance(fixed, dict) else enumerate(fixed)):
            if plan is not None and 0 < code < 0x80 and plan[0] >= 0 and not plan[1]:
                fast[code] = 1 + plan[0]
    stack: list[int] = []  # enclosing node index per open DIE with children (-1 none)
    current = -1
    depth = 1
    funcs = out.funcs
    skip = rd.skip
    nf = len(fmap)
    while pos < end:
        code = buf[pos]
        if code < 0x80:
            n = fast[code]
            if n:
                pos += n
                continue
        start = pos
        if code < 0x80:
            pos += 1
        else:
            code, pos = _uleb(buf, pos)
        if code == 0:
            if not stack:
                break
            current = stack.pop()
            depth -= 1
            continue
        try:
            fs, children, ab = fixed[code]
        except (IndexError, KeyError, TypeError):  # past the list, not in the dict, None
            raise DwarfError(f"unknown abbreviation {code} at .debug_info+{start:#x}") from None
        if fs >= 0:
            pos += fs
            if children:
                stack.append(current)
                depth += 1
            continue
        if fs == -1:  # skip attribute by attribute (`ab` holds _skip_steps)
            for n, kind, form in ab:
                pos += n
                if kind == _LEB:
                    while buf[pos] & 0x80:
                        pos += 1
                    pos += 1
                elif kind == _LEN_LEB:
                    n = buf[pos]
                    if n < 0x80:
                        pos += 1 + n
                    else:
                        n, pos = _uleb(buf, pos)
                        pos += n
                elif kind == _CSTRING:
                    pos = buf.index(0, pos) + 1
                elif kind == _LEN1:
                    pos += 1 + buf[pos]
                elif kind == _OTHER:
                    pos = skip(form, buf, pos, u)
            if children:
                stack.append(current)
                depth += 1
            continue
        if fs <= -3:  # jump over the DIE and its children to its sibling
            at = pos - 3 - fs
            target = u.offset + int.from_bytes(buf[at:at + 4], "little")
            if pos < target <= end:
                pos = target
                continue
            # a sibling that points nowhere sensible: walk it
            for _attr, form in ab.specs:
                pos = skip(form, buf, pos, u)
            stack.append(current)
            depth += 1
            continue
        attrs, pos = rd.planned_attrs(read_plans[code], buf, pos, u)
        nm = attrs.get(AT_LINKAGE_NAME) or attrs.get(AT_MIPS_LINKAGE_NAME) or attrs.get(AT_NAME)
        if nm is not None and isinstance(nm[1], bytes):
            names[start] = nm[1].decode("utf-8", "replace")
        ref = attrs.get(AT_ABSTRACT_ORIGIN) or attrs.get(AT_SPECIFICATION)
        if ref is not None and isinstance(ref[1], tuple):
            origin[start] = ref[1][1]
        node = current
        rngs = rd.ranges_of(attrs, u)
        if rngs:
            inlined = ab.tag == TAG_INLINED
            cf = attrs.get(AT_CALL_FILE)
            cl = attrs.get(AT_CALL_LINE)
            cfi = cf[1] if cf and isinstance(cf[1], int) else -1
            node = len(funcs)
            funcs.append(FuncNode(
                ranges=rngs, name_ref=start, name=None, parent=current, inlined=inlined,
                call_file=fmap[cfi] if 0 <= cfi < nf else -1,
                call_line=cl[1] if cl and isinstance(cl[1], int) else 0,
                depth=depth))
        if ab.children:
            if AT_DECLARATION in attrs and not rngs:
                # a declaration (a prototype): its children are parameters, nothing that
                # code or a name lookup refers to, so jump over them by DW_AT_sibling
                sib_attr = attrs.get(AT_SIBLING)
                sib_ref = sib_attr[1] if sib_attr is not None else None
                if isinstance(sib_ref, tuple) and pos < sib_ref[1] <= end:
                    pos = sib_ref[1]
                    continue
            stack.append(current)
            current = node
            depth += 1
