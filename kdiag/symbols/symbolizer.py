"""``Symbolizer``: addresses to :class:`Location` over one or more ELFs with load biases.

Typical use::

    sym = Symbolizer()
    sym.add_elf("kernel/build/kernel-i386.elf")            # linked address == run address
    sym.add_elf("user/hello.elf", bias=0x400000)            # loaded 0x400000 above its link address
    loc = sym.lookup(0xF01000A5)   # Location(symbol='test_backtrace', offset=0x65, file=..., line=...)

Each ELF's index (:mod:`kdiag.symbols.elfindex`) is built once and cached on disk
(:mod:`kdiag.symbols.cache`) and in memory, so a second ``add_elf`` of the same file costs a
hash of its headers and a ``marshal`` load. ``lookup`` answers from DWARF where present, then
STABS, then the symbol table. Corrupt files raise :class:`~kdiag.errors.InputError` with one line.
"""

from __future__ import annotations

import os
from bisect import bisect_right

from kdiag.errors import InputError
from kdiag.symbols import cache
from kdiag.symbols.elffile import file_key
from kdiag.symbols.elfindex import NONE, ElfIndex, build, no_gc
from kdiag.symbols.location import InlinedCall, Location

TYPE_CHECKING = False  # typing's constant without importing typing (start-up cost)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import TypeVar

    from kdiag.symbols.stabs import EipDebugInfo

    T = TypeVar("T")

_memory: dict[str, ElfIndex] = {}


def load_index(path: str | os.PathLike[str], use_cache: bool = True) -> ElfIndex:
    """The index of ``path``: from memory, the disk cache, or built (then cached)."""
    key, elf = file_key(path)
    try:
        idx = _memory.get(key) if use_cache else None
        if idx is not None:
            return _with_path(idx, elf.path)
        data = cache.load(key) if use_cache else None
        if data is not None:
            try:
                idx = ElfIndex.from_bytes(data)
            except Exception as err:  # stale format or damaged cache file: rebuild
                import logging

                logging.getLogger(__name__).debug("cached index for %s unusable (%s); "
                                                  "rebuilding", path, err)
                idx = None
        if idx is None:
            try:
                idx = build(elf, key)
            except InputError:
                raise
            except (ValueError, IndexError, KeyError, OverflowError) as err:
                raise InputError(f"{elf.path}: corrupt ELF or debug info: {err}") from err
            if use_cache:
                cache.store(key, idx.to_bytes())
        if use_cache:
            _memory[key] = idx
        return _with_path(idx, elf.path)
    finally:
        elf.close()


def _with_path(idx: ElfIndex, path: str) -> ElfIndex:
    if idx.path != path:
        clone = ElfIndex.__new__(ElfIndex)
        clone.__dict__.update(idx.__dict__)
        clone.path = path
        return clone
    return idx


class Symbolizer:
    """Symbolize addresses against several ELFs, each with a load bias (run = link + bias)."""

    def __init__(self, use_cache: bool = True) -> None:
        self.use_cache = use_cache
        self.elfs: list[tuple[ElfIndex, int]] = []
        self._by_name: dict[str, int] | None = None

    def add_elf(self, path: str | os.PathLike[str], bias: int = 0) -> ElfIndex:
        """Index ``path`` (cached) and add it with load ``bias``. Raises InputError."""
        idx = load_index(path, self.use_cache)
        self.elfs.append((idx, bias))
        self._by_name = None
        return idx

    def __bool__(self) -> bool:
        return bool(self.elfs)

    # -- choosing the ELF ------------------------------------------------------------------------
    def _candidates(self, addr: int) -> list[tuple[ElfIndex, int]]:
        if len(self.elfs) == 1:
            return self.elfs
        inside = [(i, b) for i, b in self.elfs if i.contains(addr - b)]
        return inside or self.elfs

    # -- lookups ---------------------------------------------------------------------------------
    def lookup(self, addr: int) -> Location | None:
        """The Location of ``addr``, or None when no ELF knows it."""
        for idx, bias in self._candidates(addr):
            loc = _locate(idx, bias, addr)
            if loc is not None:
                return loc
        return None

    def lookup_many(self, addrs: Iterable[int]) -> list[Location | None]:
        """``[lookup(a) for a in addrs]``, faster: one sorted sweep per ELF."""
        addrs = list(addrs)
        with no_gc():  # one acyclic Location per address: nothing for the GC to find
            if len(self.elfs) == 1:
                idx, bias = self.elfs[0]
                return _locate_many(idx, bias, addrs)
            return [self.lookup(a) for a in addrs]

    def map_segments(self, addrs: Iterable[int],
                     per_segment: Callable[[Location], Callable[[int, int], T]]
                     ) -> list[T | None]:
        """``[f(a) for a in addrs]`` (None for an unknown address) where ``f(a)`` is
        ``per_segment(loc)(a, loc.offset)`` for ``loc = lookup(a)``, but with one call of
        ``per_segment`` per *segment* (a run of addresses whose Locations differ only in
        ``address`` and ``offset``), with the Location of the first address met in it, and
        no Location per address. For renderers of big batches (``kdiag symbolize``), which
        format the shared part once per segment."""
        addrs = list(addrs)
        with no_gc():
            if len(self.elfs) == 1:
                idx, bias = self.elfs[0]
                return _map_segments(idx, bias, addrs, per_segment)
            out: list[T | None] = []
            for a in addrs:
                loc = self.lookup(a)
                out.append(None if loc is None else per_segment(loc)(a, loc.offset))
            return out

    def stabs_info(self, addr: int) -> EipDebugInfo | None:
        """JOS ``debuginfo_eip(addr)`` from the STABS of the ELF holding ``addr``.

        Like the kernel, an address outside every ELF is still searched in the (first)
        ELF with STABS: the answer is then JOS's "<unknown>" record.
        """
        order = [e for e in self._candidates(addr) if e[0].has_stabs]
        order += [e for e in self.elfs if e[0].has_stabs and e not in order]
        for idx, bias in order:
            info = idx.stabs_at((addr - bias) & _mask(idx))
            if info is not None:
                if bias:
                    from kdiag.symbols.stabs import EipDebugInfo

                    info = EipDebugInfo(info.file, info.line, info.fn_name, info.fn_addr + bias,
                                        info.narg, info.ok)
                return info
        return None

    def address_of(self, name: str) -> int | None:
        """Run-time address of symbol ``name`` (first ELF that defines it)."""
        if self._by_name is None:
            table: dict[str, int] = {}
            for idx, bias in reversed(self.elfs):
                for start, nm in zip(idx.sym_starts, idx.sym_names, strict=True):
                    table[nm] = start + bias
            self._by_name = table
        return self._by_name.get(name)

    def has_stabs(self) -> bool:
        return any(i.has_stabs for i, _ in self.elfs)

    def elfclass(self) -> int:
        return self.elfs[0][0].elfclass if self.elfs else 64


def _mask(idx: ElfIndex) -> int:
    return 0xFFFFFFFF if idx.elfclass == 32 else 0xFFFFFFFFFFFFFFFF


Common = tuple[dict[str, object], int | None]


def _locate(idx: ElfIndex, bias: int, addr: int) -> Location | None:
    a = addr - bias
    if a < 0:
        return None
    starts, _ends, ln_addrs, fs_starts, _fs_node = idx.columns()
    common = _common(idx, bias, a, bisect_right(starts, a) - 1, bisect_right(ln_addrs, a) - 1,
                     bisect_right(fs_starts, a) - 1)
    return None if common is None else _make(common, addr, a)


def _make(common: Common, addr: int, a: int) -> Location:
    """A Location from the per-segment fields: fills ``__dict__`` (see Location's note)."""
    fields, start = common
    obj = object.__new__(Location)
    d = obj.__dict__
    d.update(fields)
    d["address"] = addr
    d["offset"] = a - start if start is not None else 0
    return obj


SymFunc = tuple[str | None, int | None, str | None, int | None, tuple[InlinedCall, ...], bool]


def _common(idx: ElfIndex, bias: int, a: int, i: int, j: int, k: int) -> Common | None:
    """Everything but address/offset for linked address ``a``; ``i``/``j``/``k`` are the
    bisected rows of the symbol, line and function-segment columns."""
    return _assemble(idx, bias, _sym_func(idx, a, i, k), j)


def _sym_func(idx: ElfIndex, a: int, i: int, k: int) -> SymFunc:
    """The symbol and debug-info function part of :func:`_common`: ``(symbol, start,
    function, narg, inlined_into, has_function)``. Depends on ``a`` only past the end of
    symbol ``i`` (nested symbols, gaps); otherwise the same for every address of (i, k)."""
    sym_name: str | None = None
    sym_start: int | None = None
    starts, ends, _ln, _fs, fs_node = idx.columns()
    n = i
    while n >= 0 and n > i - 8:
        if a < ends[n]:
            sym_name = idx.sym_names[n]
            sym_start = starts[n]
            break
        n -= 1
    if idx.line_source:
        node = fs_node[k] if k >= 0 else NONE
        if node != NONE:
            memo = idx.node_memo()
            info = memo.get(node)
            if info is None:
                info = memo[node] = _node_info(idx, node)
            function, narg, inlined, root_name, root_entry = info
            if sym_name is None:
                sym_name, sym_start = root_name, root_entry
            return sym_name, sym_start, function, narg, inlined, True
    return sym_name, sym_start, None, None, (), False


NodeInfo = tuple[str, int | None, tuple[InlinedCall, ...], str, int]


def _node_info(idx: ElfIndex, node: int) -> NodeInfo:
    """What function node ``node`` says of its addresses: ``(function, narg, inlined_into,
    outermost function name, its entry)``."""
    names = idx.fn_names
    function = names[idx.fn_name[node]]
    narg = None
    if idx.fn_narg and idx.fn_narg[node] >= 0:
        narg = idx.fn_narg[node]
    chain = []
    while idx.fn_inlined[node]:
        parent = idx.fn_parent[node]
        cf = idx.fn_call_file[node]
        chain.append(InlinedCall(names[idx.fn_name[parent]] if parent != NONE else "??",
                                 idx.files[cf] if cf >= 0 else None,
                                 idx.fn_call_line[node]))
        if parent == NONE:
            break
        node = parent
    return function, narg, tuple(chain), names[idx.fn_name[node]], idx.fn_entry[node]


def _assemble(idx: ElfIndex, bias: int, sf: SymFunc, j: int) -> Common | None:
    """:func:`_sym_func`'s part plus the line row ``j``."""
    sym_name, sym_start, function, narg, inlined, has_function = sf
    file: str | None = None
    line: int | None = None
    source = "symtab"
    if idx.line_source:
        if j >= 0:
            f = idx.ln_files[j]
            if f >= 0:
                file = idx.files[f]
                line = idx.ln_lines[j]
                source = idx.line_source
        if has_function and file is None:
            source = idx.line_source
    if sym_name is None and file is None:
        return None
    fields: dict[str, object] = {
        "symbol": sym_name, "file": file, "line": line, "elf": idx.path,
        "function_start": sym_start + bias if sym_start is not None else None}
    # fields at their class default (Location's) are left to the class attribute: fewer keys
    # to copy into each Location's __dict__ (bulk lookups create one object per address)
    if inlined:
        fields["inlined_into"] = inlined
    if function is not None:
        fields["function"] = function
    if narg is not None:
        fields["narg"] = narg
    if bias:
        fields["bias"] = bias
    if source != "symtab":
        fields["source"] = source
    return fields, sym_start


def parse_elf_spec(spec: str) -> tuple[str, int]:
    """``FILE`` or ``FILE@BIAS`` (BIAS in C syntax) -> (path, bias). Raises UsageError."""
    from kdiag.errors import UsageError

    path, sep, bias_s = spec.rpartition("@")
    if not sep or not path:
        return spec, 0
    try:
        return path, int(bias_s.replace("_", ""), 0)
    except ValueError:
        raise UsageError(f"bad load bias in {spec!r}: expected FILE@0xADDRESS") from None


def symbolizer_for(specs: Iterable[str], use_cache: bool = True) -> Symbolizer:
    """A Symbolizer over ``FILE[@BIAS]`` specs (missing files: InputError naming them)."""
    sym = Symbolizer(use_cache=use_cache)
    for spec in specs:
        path, bias = parse_elf_spec(spec)
        if not os.path.exists(path):
            raise InputError(f"{path}: no such file")
        sym.add_elf(path, bias)
    return sym


def _sweep(idx: ElfIndex, bias: int, addrs: list[int],
           per_segment: Callable[[Common, int, int], Callable[[int, int], T]] | None
           ) -> dict[int, T | None]:
    """Sweep the distinct addresses, sorted, along the sorted columns: address ->
    ``emit(address, offset)`` (None: nothing knows the address), where ``emit`` is
    ``per_segment(common, address, linked address)`` of the address's segment; without
    ``per_segment``, address -> its Location.

    Between two consecutive boundaries (a symbol's start or end, a line row, a function
    segment) every field but address/offset is the same, so the sweep computes them (and
    ``per_segment``) once per segment it enters, and each address in it costs one comparison
    and one ``emit`` call (or one Location).
    """
    sym_starts, sym_ends, ln_addrs, fs_starts, _fs_node = idx.columns()
    ns, nl, nf = len(sym_starts), len(ln_addrs), len(fs_starts)
    end_of_space = 1 << 64
    i = j = k = 0
    hi = -1  # the segment's fields hold from the last recompute up to hi (excluded)
    emit: Callable[[int, int], T | None] = _unknown
    fields: dict[str, object] | None = None  # Location mode: the segment's Location fields
    start = 0  # of the segment's function (offsets); 0 with an emit that ignores them
    new = object.__new__
    found: dict[int, T | None] = {}
    sf_memo: dict[tuple[int, int], SymFunc] = {}
    for addr in sorted(set(addrs)):  # ascending: a segment, once left, never comes back
        a = addr - bias
        if a >= hi:  # a new segment (negative addresses come first, while hi is -1)
            if a < 0:
                found[addr] = None
                continue
            # each column's row count up to `a` (bisect_right): a hop to the next row (dense
            # addresses), else a bisection from there (sparse ones over big tables)
            if i < ns and sym_starts[i] <= a:
                i += 1
                if i < ns and sym_starts[i] <= a:
                    i = bisect_right(sym_starts, a, i)
            if j < nl and ln_addrs[j] <= a:
                j += 1
                if j < nl and ln_addrs[j] <= a:
                    j = bisect_right(ln_addrs, a, j)
            if k < nf and fs_starts[k] <= a:
                k += 1
                if k < nf and fs_starts[k] <= a:
                    k = bisect_right(fs_starts, a, k)
            if i and a < sym_ends[i - 1]:  # inside symbol i - 1: its part is shared
                sf = sf_memo.get((i, k))
                if sf is None:
                    sf = sf_memo[(i, k)] = _sym_func(idx, a, i - 1, k - 1)
            else:
                sf = _sym_func(idx, a, i - 1, k - 1)
            common = _assemble(idx, bias, sf, j - 1)
            fields = None
            if common is None:
                emit, start = _unknown, 0
            elif per_segment is None:  # Locations; no function start: offset 0 (in fields)
                fields = common[0] if common[1] is not None else {**common[0], "offset": 0}
                start = common[1] if common[1] is not None else 0
            elif common[1] is None:
                emit, start = _zero_offset(per_segment(common, addr, a)), 0
            else:
                emit, start = per_segment(common, addr, a), common[1]
            hi = sym_starts[i] if i < ns else end_of_space
            if j < nl and ln_addrs[j] < hi:
                hi = ln_addrs[j]
            if k < nf and fs_starts[k] < hi:
                hi = fs_starts[k]
            if i:
                if a < sym_ends[i - 1]:
                    if sym_ends[i - 1] < hi:
                        hi = sym_ends[i - 1]
                else:  # past the symbol's end (nested symbols, gaps): this address only
                    hi = a + 1
        if fields is None:
            found[addr] = emit(addr, a - start)
        else:  # a Location, made here: a call per address would cost a third more
            obj = new(Location)
            d = obj.__dict__
            d["address"] = addr
            d["offset"] = a - start
            d.update(fields)
            found[addr] = obj  # type: ignore[assignment]
    return found


def _unknown(_addr: int, _offset: int) -> None:
    return None


def _zero_offset(emit: Callable[[int, int], T]) -> Callable[[int, int], T]:
    return lambda addr, _offset: emit(addr, 0)


def _locate_many(idx: ElfIndex, bias: int, addrs: list[int]) -> list[Location | None]:
    """``_locate`` of every address, by one :func:`_sweep`; a repeated address gets the same
    (immutable) Location object."""
    found: dict[int, Location | None] = _sweep(idx, bias, addrs, None)
    return list(map(found.__getitem__, addrs))


def _map_segments(idx: ElfIndex, bias: int, addrs: list[int],
                  per_segment: Callable[[Location], Callable[[int, int], T]]) -> list[T | None]:
    """:meth:`Symbolizer.map_segments` for one ELF."""
    def seg(common: Common, addr: int, a: int) -> Callable[[int, int], T]:
        return per_segment(_make(common, addr, a))

    return list(map(_sweep(idx, bias, addrs, seg).__getitem__, addrs))
