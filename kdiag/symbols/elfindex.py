"""The per-ELF address index: compact sorted arrays, built once, cached on disk, bisected.

An :class:`ElfIndex` holds, for one ELF (addresses unbiased, as linked):

- symbols: ``STT_FUNC`` symbols and code labels (``STT_NOTYPE`` in executable sections, e.g.
  assembly entry stubs) as ``[start, end)`` ranges, best name per start;
- DWARF line rows (address -> file, line; end-of-sequence rows close a range);
- DWARF function ranges flattened into non-overlapping segments, each naming its innermost
  subprogram/inlined-subroutine node; nodes chain to their parents (the inlined-call chain);
- STABS ``debuginfo_eip`` answers as segments (:func:`kdiag.symbols.stabs.build_segments`).

``build(path)`` reads the ELF; ``to_bytes``/``from_bytes`` are the on-disk form used by
:mod:`kdiag.symbols.cache`. Lookups are ``bisect`` over ``array`` columns.

A warm ``kdiag symbolize`` only loads an index, so this module imports nothing heavy at the
top: the DWARF and STABS readers (and ``heapq``) are imported by :func:`build`, and the
on-disk form is ``marshal`` (built into the interpreter: no ``pickle`` import, a millisecond or
two of a short process; loading is as fast as the pickle it replaced) of the plain fields plus
each ``array`` column as raw bytes.
"""

from __future__ import annotations

import gc
import marshal
import sys
from array import array
from bisect import bisect_right

from kdiag.errors import InputError
from kdiag.symbols.elffile import PT_LOAD, SHF_ALLOC, SHF_EXECINSTR, ElfFile

TYPE_CHECKING = False  # typing's constant without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Any

    from kdiag.symbols.dwarf import DwarfTables
    from kdiag.symbols.stabs import EipDebugInfo, StabLines

FORMAT_VERSION = 6  # 6: marshal (5 and older: pickle, rebuilt on first use)
MAGIC = b"KDIX"  # then marshal of (FORMAT_VERSION, byte order, plain fields, array columns)
STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2
NONE = -1


class ElfIndex:
    """The index of one ELF (see the module docstring). A plain class, not a dataclass or
    ``kdiag._record``: a warm ``kdiag symbolize`` only loads one (``from_bytes``), and
    generating the methods of a 34-field record at import costs it more than the load."""

    path: str
    key: str
    elfclass: int
    machine: int
    entry: int
    load_ranges: list[tuple[int, int]]
    # symbols
    sym_starts: array[int]
    sym_ends: array[int]
    sym_names: list[str]
    # DWARF line table
    ln_addrs: array[int]
    ln_files: array[int]
    ln_lines: array[int]
    files: list[str]
    # DWARF function segments and nodes
    fs_starts: array[int]
    fs_node: array[int]
    fn_name: array[int]
    fn_parent: array[int]
    fn_call_file: array[int]
    fn_call_line: array[int]
    fn_entry: array[int]
    fn_inlined: bytes
    fn_narg: array[int]
    fn_names: list[str]
    line_source: str  # "dwarf" or "stabs": which table filled ln_* and fn_*
    # STABS segments
    st_starts: array[int]
    st_file: array[int]
    st_line: array[int]
    st_fn: array[int]
    st_fnaddr: array[int]
    st_narg: array[int]
    st_ok: bytes
    st_names: list[str]
    has_dwarf: bool
    has_stabs: bool

    def __init__(self, path: str, key: str, elfclass: int, machine: int, entry: int) -> None:
        self.path = path
        self.key = key
        self.elfclass = elfclass
        self.machine = machine
        self.entry = entry
        self.load_ranges = []
        self.sym_starts = array("Q")
        self.sym_ends = array("Q")
        self.sym_names = []
        self.ln_addrs = array("Q")
        self.ln_files = array("i")
        self.ln_lines = array("I")
        self.files = []
        self.fs_starts = array("Q")
        self.fs_node = array("i")
        self.fn_name = array("i")
        self.fn_parent = array("i")
        self.fn_call_file = array("i")
        self.fn_call_line = array("I")
        self.fn_entry = array("Q")
        self.fn_inlined = b""
        self.fn_narg = array("i")
        self.fn_names = []
        self.line_source = ""
        self.st_starts = array("Q")
        self.st_file = array("i")
        self.st_line = array("i")
        self.st_fn = array("i")
        self.st_fnaddr = array("q")
        self.st_narg = array("i")
        self.st_ok = b""
        self.st_names = []
        self.has_dwarf = False
        self.has_stabs = False

    # -- serialization ---------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        plain: dict[str, object] = {}
        arrays: dict[str, tuple[str, bytes]] = {}
        for k, v in self.__dict__.items():
            if k.startswith("_"):
                continue
            if isinstance(v, array):
                arrays[k] = (v.typecode, v.tobytes())
            else:
                plain[k] = v
        return MAGIC + marshal.dumps((FORMAT_VERSION, sys.byteorder, plain, arrays))

    def columns(self) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
        """Plain-list copies of the bisected columns (lists index twice as fast as arrays):
        sym_starts, sym_ends, ln_addrs, fs_starts, fs_node. Built once per object."""
        cols = self.__dict__.get("_columns")
        if cols is None:
            cols = (list(self.sym_starts), list(self.sym_ends), list(self.ln_addrs),
                    list(self.fs_starts), list(self.fs_node))
            self.__dict__["_columns"] = cols
        return cols

    def node_memo(self) -> dict[int, Any]:
        """A per-index memo of what each function node says (kdiag.symbols.symbolizer):
        kept in memory with the index, never written to disk."""
        memo = self.__dict__.get("_node_memo")
        if memo is None:
            memo = self.__dict__["_node_memo"] = {}
        return memo

    @classmethod
    def from_bytes(cls, data: bytes) -> ElfIndex:
        """The index :meth:`to_bytes` wrote. ValueError (or another exception: the caller
        rebuilds on any) for anything else: another format version, byte order, or damage."""
        if data[:4] != MAGIC:
            raise ValueError("not a kdiag index (an older format?)")
        with no_gc():
            version, order, plain, arrays = marshal.loads(memoryview(data)[4:])
        if version != FORMAT_VERSION or order != sys.byteorder:
            raise ValueError(f"index format {version}/{order} != {FORMAT_VERSION}/{sys.byteorder}")
        obj = cls.__new__(cls)
        d = obj.__dict__
        d.update(plain)
        for k, (typecode, raw) in arrays.items():
            col = array(typecode)
            col.frombytes(raw)
            d[k] = col
        missing = [f for f in _FIELDS if f not in d]
        if missing:
            raise ValueError(f"index lacks {', '.join(missing)}")
        return obj

    # -- lookups (addresses as linked, i.e. bias already removed) ---------------------------------
    def symbol_at(self, addr: int) -> tuple[str, int] | None:
        """``(name, start)`` of the symbol covering ``addr``."""
        starts = self.sym_starts
        i = bisect_right(starts, addr) - 1
        k = i
        while k >= 0 and k > i - 8:
            if addr < self.sym_ends[k]:
                return self.sym_names[k], starts[k]
            k -= 1
        return None

    def line_at(self, addr: int) -> tuple[str, int] | None:
        i = bisect_right(self.ln_addrs, addr) - 1
        if i < 0:
            return None
        f = self.ln_files[i]
        if f < 0:
            return None
        return self.files[f], self.ln_lines[i]

    def func_node_at(self, addr: int) -> int:
        i = bisect_right(self.fs_starts, addr) - 1
        return self.fs_node[i] if i >= 0 else NONE

    def stabs_at(self, addr: int) -> EipDebugInfo | None:
        """The kernel's ``debuginfo_eip(addr)`` for this ELF's ``.stab`` (None: no STABS)."""
        if not self.has_stabs:
            return None
        from kdiag.symbols.stabs import EipDebugInfo

        i = bisect_right(self.st_starts, addr) - 1
        if i < 0:
            i = 0
        fa = self.st_fnaddr[i]
        names = self.st_names
        return EipDebugInfo(names[self.st_file[i]], self.st_line[i], names[self.st_fn[i]],
                            addr if fa < 0 else fa, self.st_narg[i], bool(self.st_ok[i]))

    def contains(self, addr: int) -> bool:
        return any(lo <= addr < hi for lo, hi in self.load_ranges)


_FIELDS = tuple(ElfIndex.__annotations__)


# -- building ----------------------------------------------------------------------------------------
class no_gc:  # noqa: N801 - used like a function: `with no_gc():`
    """Pause the cyclic garbage collector (restoring its state after).

    Building or loading an index allocates millions of small acyclic objects (tuples, ints,
    lists); every 700 allocations CPython would scan the young generation for cycles there
    are none of, which costs about 15% of a large cold build. Reference counting still
    frees everything as usual. (A class, not ``contextlib.contextmanager``: importing
    contextlib is start-up time of a short process.)
    """

    __slots__ = ("was",)

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was:
            gc.enable()


def build(elf: ElfFile, key: str) -> ElfIndex:
    """Read ``elf``'s symbols, DWARF and STABS into an index. Raises InputError."""
    with no_gc():
        return _build(elf, key)


def _build(elf: ElfFile, key: str) -> ElfIndex:
    idx = ElfIndex(path=elf.path, key=key, elfclass=elf.elfclass, machine=elf.machine,
                   entry=elf.entry)
    idx.load_ranges = sorted((s.vaddr, s.vaddr + s.memsz) for s in elf.segments
                             if s.type == PT_LOAD and s.memsz)
    if not idx.load_ranges:  # relocatable objects / separate debug files: allocated sections
        idx.load_ranges = sorted((s.addr, s.addr + s.size) for s in elf.sections
                                 if s.flags & SHF_ALLOC and s.size)
    _build_symbols(elf, idx)
    _build_dwarf(elf, idx)
    _build_stabs(elf, idx)
    return idx


def _build_symbols(elf: ElfFile, idx: ElfIndex) -> None:
    exec_secs = {s.index: (s.addr, s.addr + s.size) for s in elf.sections
                 if s.flags & SHF_EXECINSTR}
    cands: list[tuple[int, int, int, str, int]] = []  # start, rank, size, name, section end
    for name, value, size, info, shndx in elf.symbols():
        if shndx == 0 or shndx >= 0xFF00 and shndx != 0xFFF1:  # undefined / special
            continue
        typ = info & 0xF
        bind = info >> 4
        if typ == STT_FUNC:
            rank = 0
        elif typ == STT_NOTYPE and shndx in exec_secs:
            if name.startswith((".L", "$")):
                continue
            rank = 2
        else:
            continue
        rank += 0 if bind == 1 else 1  # prefer global names for aliases
        sec_end = exec_secs.get(shndx, (0, value + max(size, 1)))[1]
        cands.append((value, rank, size, name, sec_end))
    cands.sort(key=lambda c: (c[0], c[1], -c[2]))
    best: list[tuple[int, int, str, int]] = []
    for value, _rank, size, name, sec_end in cands:
        if best and best[-1][0] == value:
            if size > best[-1][1] and best[-1][1] == 0:
                best[-1] = (value, size, best[-1][2], sec_end)
            continue
        best.append((value, size, name, sec_end))
    for i, (value, size, name, sec_end) in enumerate(best):
        # like binutils (addr2line -f) and gdb: a function extends to the next symbol of its
        # section, past its st_size (alignment padding is attributed to it)
        nxt = best[i + 1][0] if i + 1 < len(best) else sec_end
        end = min(nxt, sec_end) if sec_end > value else max(nxt, value + size)
        end = max(end, value + 1)
        idx.sym_starts.append(value)
        idx.sym_ends.append(end)
        idx.sym_names.append(name)


def _build_dwarf(elf: ElfFile, idx: ElfIndex) -> None:
    if elf.section(".debug_info") is None and elf.section(".zdebug_info") is None:
        return
    from kdiag.symbols.dwarf import DwarfError, DwarfSections, read_dwarf

    sec = DwarfSections(
        info=elf.dwarf_section(".debug_info"), abbrev=elf.dwarf_section(".debug_abbrev"),
        line=elf.dwarf_section(".debug_line"), str=elf.dwarf_section(".debug_str"),
        line_str=elf.dwarf_section(".debug_line_str"),
        str_offsets=elf.dwarf_section(".debug_str_offsets"),
        addr=elf.dwarf_section(".debug_addr"), ranges=elf.dwarf_section(".debug_ranges"),
        rnglists=elf.dwarf_section(".debug_rnglists"))
    try:
        tables = read_dwarf(sec)
    except (DwarfError, ValueError, IndexError, UnicodeDecodeError) as err:
        raise InputError(f"{elf.path}: corrupt DWARF: {err}") from err
    idx.has_dwarf = True
    idx.line_source = "dwarf"
    _index_lines(tables, idx)
    _index_funcs(tables, idx)


def _index_lines(t: DwarfTables, idx: ElfIndex) -> None:
    """Merge the sequences into one address-sorted table with end-of-sequence markers.

    Rows at one address were already collapsed to the last (addr2line's rule). Sequences at
    address 0 (code discarded by ``--gc-sections``) are dropped when nothing is loaded at 0.
    A sequence that starts where another ends replaces the end marker; overlapping sequences
    (rare) fall back to a full sort in which the later sequence wins at equal addresses.
    """
    lowest = min((lo for lo, _ in idx.load_ranges), default=0)
    seqs = [s for s in t.seqs if s[0] and not (s[0][0] == 0 and lowest > 0)]
    seqs.sort(key=lambda s: (s[0][0], s[3]))
    addrs, files, lines = idx.ln_addrs, idx.ln_files, idx.ln_lines
    overlap = any(seqs[i][3] > seqs[i + 1][0][0] for i in range(len(seqs) - 1))
    if not overlap:
        for sa, sf, sl, end in seqs:
            if addrs and addrs[-1] == sa[0]:  # previous end marker at our start
                addrs.pop()
                files.pop()
                lines.pop()
            addrs.extend(sa)
            files.extend(sf)
            lines.extend(sl)
            if end > sa[-1]:
                addrs.append(end)
                files.append(-1)
                lines.append(0)
    else:
        merged: list[tuple[int, int, int, int, int]] = []
        for sn, (sa, sf, sl, end) in enumerate(seqs):
            merged.extend((a, 1, sn, f, ln) for a, f, ln in zip(sa, sf, sl, strict=True))
            merged.append((end, 0, sn, -1, 0))
        merged.sort()
        last = None
        for a, _o, _s, f, ln in merged:
            if a == last:
                files[-1] = f
                lines[-1] = ln
                continue
            last = a
            addrs.append(a)
            files.append(f)
            lines.append(ln)
    idx.files = t.files


def _index_funcs(t: DwarfTables, idx: ElfIndex, narg: list[int] | None = None) -> None:
    names: dict[str, int] = {}
    funcs = t.funcs
    fn_names = idx.fn_names
    name_ids = []
    for node in funcs:
        nm = node.name or "??"
        ni = names.get(nm)
        if ni is None:
            ni = names[nm] = len(fn_names)
            fn_names.append(nm)
        name_ids.append(ni)
    idx.fn_name.extend(name_ids)
    idx.fn_parent.extend([node.parent for node in funcs])
    idx.fn_call_file.extend([node.call_file for node in funcs])
    idx.fn_call_line.extend([node.call_line for node in funcs])
    idx.fn_entry.extend([node.ranges[0][0] if len(node.ranges) == 1 else min(node.ranges)[0]
                         for node in funcs])
    idx.fn_narg.extend(narg if narg is not None else [-1] * len(funcs))
    idx.fn_inlined = bytes([1 if n.inlined else 0 for n in funcs])
    import heapq

    # flatten nested ranges: at each boundary the deepest open node (latest on ties) wins
    # events (addr, 1 open / 0 close, node) packed in one int each: ints sort several times
    # faster than tuples, in the same order
    events: list[int] = []
    add = events.append
    for i, node in enumerate(funcs):
        for lo, hi in node.ranges:
            add(lo << 33 | 1 << 32 | i)
            add(hi << 33 | i)
    events.sort()
    mask = 0xFFFFFFFF
    heap: list[tuple[int, int, int]] = []  # (-depth, -order, node)
    open_count = [0] * len(funcs)
    neg_depth = [-node.depth for node in funcs]
    push, pop = heapq.heappush, heapq.heappop
    starts: list[int] = []
    nodes: list[int] = []
    n = len(events)
    i = 0
    while i < n:
        ev = events[i]
        addr = ev >> 33
        while True:  # every event at addr
            node_i = ev & mask
            if ev >> 32 & 1:
                open_count[node_i] += 1
                push(heap, (neg_depth[node_i], -node_i, node_i))
            else:
                open_count[node_i] -= 1
            i += 1
            if i == n:
                break
            ev = events[i]
            if ev >> 33 != addr:
                break
        while heap and open_count[heap[0][2]] <= 0:
            pop(heap)
        top = heap[0][2] if heap else NONE
        if nodes and nodes[-1] == top:
            continue
        if starts and starts[-1] == addr:
            nodes[-1] = top
        else:
            starts.append(addr)
            nodes.append(top)
    idx.fs_starts.extend(starts)
    idx.fs_node.extend(nodes)


def _build_stabs(elf: ElfFile, idx: ElfIndex) -> None:
    stab = elf.section(".stab")
    if stab is None:
        return
    stab_data = elf.section_data(stab)
    stabstr = elf.section_data(".stabstr")
    # JOS-style linker scripts bracket the tables with symbols and append a NUL byte; the
    # kernel's debuginfo_eip uses the bracketed sizes, so use them too when present
    marks = {name: value for name, value, _s, _i, _x in elf.symbols()
             if name in ("__STAB_BEGIN__", "__STAB_END__", "__STABSTR_BEGIN__",
                         "__STABSTR_END__")}
    if "__STAB_BEGIN__" in marks and "__STAB_END__" in marks:
        lo, hi = marks["__STAB_BEGIN__"] - stab.addr, marks["__STAB_END__"] - stab.addr
        if 0 <= lo <= hi <= len(stab_data):
            stab_data = stab_data[lo:hi]
    strsec = elf.section(".stabstr")
    if strsec is not None and "__STABSTR_BEGIN__" in marks and "__STABSTR_END__" in marks:
        lo, hi = marks["__STABSTR_BEGIN__"] - strsec.addr, marks["__STABSTR_END__"] - strsec.addr
        if 0 <= lo <= hi <= len(stabstr):
            stabstr = stabstr[lo:hi]
    from kdiag.symbols.stabs import StabTable, build_segments, read_lines

    table = StabTable(stab_data, stabstr)
    if not len(table):
        return
    if not idx.has_dwarf:
        code = sorted((sc.addr, sc.addr + sc.size) for sc in elf.sections
                      if sc.flags & SHF_EXECINSTR and sc.size)
        _index_stab_lines(read_lines(table), idx, code)
    seg = build_segments(table)
    idx.has_stabs = True
    idx.st_starts = array("Q", seg.starts)
    idx.st_file = array("i", seg.file)
    idx.st_line = array("i", seg.line)
    idx.st_fn = array("i", seg.fn)
    idx.st_fnaddr = array("q", seg.fn_addr)
    idx.st_narg = array("i", seg.narg)
    idx.st_ok = bytes(seg.ok)
    idx.st_names = seg.names


def _index_stab_lines(sl: StabLines, idx: ElfIndex,
                      code: list[tuple[int, int]] | None = None) -> None:
    """STABS as a line table + function ranges (no inlining), like binutils reads them.

    As in addr2line, a function extends over the padding after it: up to the next entry of
    ``sl.entries`` (a function, or a source file without functions) or the end of its code
    section (``code``: executable section ranges), whichever comes first.
    """
    from kdiag.symbols.dwarf import DwarfTables, FuncNode
    from kdiag.symbols.stabs import StabLines

    if code:
        entries = sl.entries
        funcs = []
        for start, end, name, narg in sl.funcs:
            limit = next((hi for lo, hi in code if lo <= start < hi), end)
            n = bisect_right(entries, start)
            nxt = entries[n] if n < len(entries) else limit
            funcs.append((start, max(end, min(nxt, limit)), name, narg))
        sl = StabLines(sl.rows, funcs, sl.entries)
    t = DwarfTables()
    ids: dict[str, int] = {}
    sa: list[int] = []
    sf: list[int] = []
    sln: list[int] = []
    for addr, file, line in sl.rows:
        fid = ids.get(file)
        if fid is None:
            fid = ids[file] = len(t.files)
            t.files.append(file)
        if sa and sa[-1] == addr:
            sf[-1], sln[-1] = fid, line
        else:
            sa.append(addr)
            sf.append(fid)
            sln.append(line)
    if sa:
        end = max([sa[-1] + 1] + [f[1] for f in sl.funcs])
        t.seqs.append((sa, sf, sln, end))
    for start, end, name, _narg in sl.funcs:
        t.funcs.append(FuncNode(ranges=[(start, max(end, start + 1))], name_ref=-1, name=name,
                                parent=NONE, inlined=False, call_file=-1, call_line=0,
                                depth=1))
    idx.line_source = "stabs"
    _index_lines(t, idx)
    _index_funcs(t, idx, narg=[f[3] for f in sl.funcs])


def describe(idx: ElfIndex) -> dict[str, Any]:
    """Sizes of the index tables (for ``kdiag symbolize --stats`` and the bench)."""
    return {"symbols": len(idx.sym_starts), "line_rows": len(idx.ln_addrs),
            "files": len(idx.files), "functions": len(idx.fn_name),
            "func_segments": len(idx.fs_starts), "stab_segments": len(idx.st_starts)}
