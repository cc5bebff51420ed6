"""Dump a whole address space: every mapping, merged into ranges, filtered while walking.

``dump(target, config)`` walks the hierarchy depth-first in linear-address order and returns
a :class:`Dump`: the merged :class:`Mapping` ranges (adjacent pages with the same effective
rights and memory type; the PA is kept while it stays contiguous, else the range is
"scattered"), the :class:`TableIssue` entries that map nothing (reserved bits, recursive
self-maps, loops, tables that cannot be read), and statistics.

How it stays fast (see notes/anchor-survey.md section c):

- each table page is read once (``TableCache``), and all child tables of a table are
  prefetched in one coalesced bulk request before descending;
- a table is decoded with one ``struct.unpack``; present entries are found by scanning a
  byte lane of the P bits (``bytes.translate`` + ``find``), so empty slots cost nothing;
- a table whose 512 (1024) entries are all leaves mapping consecutive frames with the same
  attributes -- the common case for physmaps and big kernel areas -- is recognised with a
  handful of C-level operations and becomes one chunk, without a Python loop per entry;
- consecutive leaves are merged inside the table loop, and chunks are merged into ranges as
  they are produced (streaming), never after the fact;
- filters prune subtrees at the upper levels (VA range, ANDed W/U, ORed XD).

Adversarial tables cannot hang it: an entry that points at a table on the current path is
reported (``recursive-self-map`` for a table referencing itself, ``table-loop`` for an
ancestor) and not followed; the number of distinct tables, table visits, individually examined
entries and output ranges are capped (``DumpLimits``), and hitting a cap ends the dump with
``truncated`` set to the reason.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING

from kdiag.paging.config import PagingConfig
from kdiag.paging.filters import PageFilter
from kdiag.paging.tables import DEFAULT_MAX_TABLES, TableCache, TableLimitReached
from kdiag.paging.walker import StopReason, _reserved_reason
from kdiag.x86.pat import MemoryType, pat_index
from kdiag.x86.pte import LevelMasks, PagingMode, canonical, decode_with_masks

if TYPE_CHECKING:
    from kdiag.target.base import Target


@dataclass(frozen=True)
class DumpLimits:
    """Caps that bound time and memory on garbage tables. Hitting one truncates the dump.

    The defaults keep a dump of cross-linked garbage (every entry present, pointing at other
    tables) under about 3 s and 200 MiB; a real kernel stays far below them (the pt-stress
    scenario, 262,144 PTEs: 528 visits, about 1,000 entries examined, 16,385 segments)."""

    max_tables: int = DEFAULT_MAX_TABLES  # distinct table pages read
    max_visits: int = 50_000  # table visits (a table shared by N entries counts N times)
    max_entries: int = 600_000  # entries examined one by one (a fast-path run counts 1)
    max_mappings: int = 200_000  # merged output ranges
    max_issues: int = 10_000  # entries reported as issues
    max_segments: int = 300_000  # PA-contiguous pieces kept for checks/p2v (~40 MiB)


class IssueKind(StrEnum):
    """Why an entry was not followed or mapped nothing."""

    RESERVED = "reserved-bit"
    NX_RESERVED = "nx-without-nxe"
    PS_RESERVED = "ps-reserved"
    RECURSIVE = "recursive-self-map"
    LOOP = "table-loop"
    UNREADABLE = "table-unreadable"
    SOFT_RESERVED = "reserved-ignored"  # SDM-reserved, ignored by QEMU (PAE PDPTEs): followed


_ISSUE_FROM_STOP = {StopReason.RESERVED: IssueKind.RESERVED,
                    StopReason.NX_RESERVED: IssueKind.NX_RESERVED,
                    StopReason.PS_RESERVED: IssueKind.PS_RESERVED}


@dataclass(frozen=True, slots=True)
class TableIssue:
    """A present entry that maps nothing usable, covering ``[va, va+span)``.

    ``table``/``index``/``raw`` locate the entry; ``points_to`` is the physical address it
    references (the table it would lead to, or the frame).
    """

    kind: IssueKind
    va: int
    span: int
    level: str
    table: int
    index: int
    raw: int
    points_to: int
    detail: str

    @property
    def end(self) -> int:
        return self.va + self.span


@dataclass(frozen=True, slots=True)
class Mapping:
    """A merged range of pages with identical effective rights and memory type.

    ``pa`` is the physical address of the first byte when the whole range is physically
    contiguous, None when it is scattered. ``page_sizes`` lists the page sizes used, ``pages``
    the number of leaf entries. ``memtype`` is None when the PAT in use is invalid.
    """

    va: int
    size: int
    pa: int | None
    writable: bool
    user: bool
    executable: bool
    memtype: MemoryType | None
    page_sizes: tuple[int, ...]
    pages: int

    @property
    def end(self) -> int:
        return self.va + self.size

    @property
    def wx(self) -> bool:
        return self.writable and self.executable

    @property
    def rwx(self) -> str:
        return "r" + ("w" if self.writable else "-") + ("x" if self.executable else "-")

    @property
    def scattered(self) -> bool:
        return self.pa is None

    def contains(self, va: int) -> bool:
        return self.va <= va < self.va + self.size


@dataclass(frozen=True, slots=True)
class Segment:
    """A physically and virtually contiguous piece of a mapping (for checks and p2v)."""

    va: int
    pa: int
    size: int
    writable: bool
    user: bool
    executable: bool
    memtype: MemoryType | None
    page_size: int


@dataclass
class DumpStats:
    """What the dump cost: tables read, target requests, entries examined, seconds."""

    tables: int = 0
    visits: int = 0
    entries: int = 0
    fast_tables: int = 0
    reads: int = 0
    bytes_read: int = 0
    pages: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Dump:
    """A whole address space. ``tables`` maps each table read to its level name."""

    config: PagingConfig
    filters: PageFilter
    mappings: tuple[Mapping, ...]
    issues: tuple[TableIssue, ...]
    tables: dict[int, str]
    segments: tuple[Segment, ...] | None
    truncated: str | None
    stats: DumpStats = field(default_factory=DumpStats)


class _Truncated(Exception):
    pass


# Byte-lane translation tables (bytes.translate) for the present scan and attribute masking.
_PRESENT = bytes(b & 1 for b in range(256))
_CLR_AD = bytes(b & ~0x60 for b in range(256))  # byte 0: clear A (5), D (6)
_CLR_AVL = bytes(b & ~0x0F for b in range(256))  # byte 1: clear G (8), available 9-11
_CLR_52_55 = bytes(b & 0x0F for b in range(256))  # byte 6: bits 52-55 ignored (IA-32e)
_CLR_56_58 = bytes(b & ~0x07 for b in range(256))  # byte 7: bits 56-58 ignored
_CLR_56_62 = bytes(b & 0x80 for b in range(256))  # byte 7: + protection keys when CR4.PKE=0
_XD_TO_BIT5 = bytes((b & 0x80) >> 2 for b in range(256))  # byte 7's XD as bit 5 of a lane
_KEEP_9F = bytes(b & 0x9F for b in range(256))  # byte 0: P RW US PWT PCD PAT (4 KiB PTE)

_MT_NONE = 0xF  # key nibble for "no memory type" (invalid PAT)


@lru_cache(maxsize=8)
def _lanes(n: int, esz: int) -> tuple[int, int]:
    """(sum 2^(w*i), sum i*2^(w*i)) for i < n, w = 8*esz: the fast path's constants."""
    w = 8 * esz
    rep = int.from_bytes(((1).to_bytes(esz, "little")) * n, "little")
    ramp = sum(i << (w * i) for i in range(n))
    return rep, ramp


def _key_to_fields(key: int) -> tuple[bool, bool, bool, MemoryType | None]:
    mt = key >> 3
    return (bool(key & 1), bool(key & 2), bool(key & 4),
            None if mt == _MT_NONE else MemoryType(mt))


class _Dumper:
    def __init__(self, target: Target, config: PagingConfig, filters: PageFilter,
                 limits: DumpLimits, cache: TableCache | None, collect_segments: bool) -> None:
        self.target = target
        self.config = config
        self.params = config.params
        self.filters = filters
        self.limits = limits
        self.cache = cache if cache is not None else TableCache(target,
                                                                max_pages=limits.max_tables)
        self.masks: tuple[LevelMasks, ...] = self.params.masks
        types = config.pat_types
        self.pat_types = types
        self.nxe = self.params.has_nx
        self.long = self.params.mode in (PagingMode.LEVEL4, PagingMode.LEVEL5)
        self.va_bits = self.params.va_bits
        # output state
        self.mappings: list[Mapping] = []
        self.issues: list[TableIssue] = []
        self.tables: dict[int, str] = {}
        self.segments: list[Segment] | None = [] if collect_segments else None
        self.stats = DumpStats()
        self._keys: dict[tuple[int, int, int], int] = {}
        self._pass: dict[int, bool] = {}
        self._cur: list | None = None  # [va, end, pa_or_None, pa_next, key, sizes, pages]
        self._rsvd_cache: dict[int, list[tuple[int, bytes]]] = {}
        # bits that never split a range: A, D, G, available 9-11 (+52-58, +keys without PKE)
        ign = 0x60 | 0xF00
        if self.long:
            ign |= 0x7F << 52 | (0 if self.params.pke else 0xF << 59)
        self._keep_mask = ((1 << 64) - 1) & ~ign
        f = filters
        self.va_lo = f.va_start if f.va_start is not None else None
        self.va_hi = f.va_end if f.va_end is not None else None
        self.any_prune = bool(f.writable or f.executable or f.user or f.wx)
        self.need_leaf_filter = not (f.writable is None and f.executable is None
                                     and f.user is None and not f.wx and f.memtypes is None)

    # -- output ------------------------------------------------------------------------------
    def _key(self, inh: int, attr: int, pat_bit: int) -> int:
        k = (inh, attr, pat_bit)
        key = self._keys.get(k)
        if key is None:
            w = bool(inh & 1) and bool(attr & 2)
            u = bool(inh & 2) and bool(attr & 4)
            nx = bool(inh & 4) or (self.nxe and bool(attr >> 63 & 1))
            if self.pat_types is None:
                mt = _MT_NONE
            else:
                mt = int(self.pat_types[pat_index(attr & pat_bit, attr & 0x10, attr & 0x8)])
            key = int(w) | int(u) << 1 | int(not nx) << 2 | mt << 3
            self._keys[k] = key
        return key

    def _passes(self, key: int) -> bool:
        ok = self._pass.get(key)
        if ok is None:
            w, u, x, mt = _key_to_fields(key)
            ok = self.filters.matches(w, u, x, mt)
            self._pass[key] = ok
        return ok

    def _emit(self, va: int, size: int, pa: int | None, key: int, page: int, n: int) -> None:
        """One chunk: ``n`` pages of ``page`` bytes, VA-contiguous, same attributes; PA-
        contiguous from ``pa``, or scattered when ``pa`` is None (never when collecting
        segments)."""
        if self.need_leaf_filter and not self._passes(key):
            return
        if self.va_lo is not None or self.va_hi is not None:
            lo = va if self.va_lo is None else max(va, self.va_lo - self.va_lo % page)
            end = va + size
            hi = end if self.va_hi is None else min(end, -(-self.va_hi // page) * page)
            if hi <= lo:
                return
            if pa is not None:
                pa += lo - va
            n = (hi - lo) // page
            va, size = lo, hi - lo
        self.stats.pages += n
        if self.segments is not None and pa is not None:
            if len(self.segments) >= self.limits.max_segments:
                raise _Truncated(f"more than {self.limits.max_segments} physical pieces")
            w, u, x, mt = _key_to_fields(key)
            self.segments.append(Segment(va, pa, size, w, u, x, mt, page))
        cur = self._cur
        if cur is not None and cur[1] == va and cur[4] == key:
            cur[1] = va + size
            if pa is not None and cur[3] is not None and cur[3] == pa:
                cur[3] = pa + size
            else:
                cur[2] = cur[3] = None
            cur[5] |= page
            cur[6] += n
            return
        if cur is not None:
            self._close()
        self._cur = [va, va + size, pa, None if pa is None else pa + size, key, page, n]

    def _leaf_table(self, ents: tuple[int, ...], idx: list[int] | range, mk: LevelMasks,
                    base_va: int, inh: int, table: int) -> None:
        """The PT loop: merge consecutive leaves, emit one chunk per attribute change.

        Without segment collection, runs only need VA contiguity (the PA is tracked while it
        stays contiguous, then the run is scattered); with it, runs are PA-contiguous.
        """
        rsvd = mk.rsvd_leaf
        addr = mk.addr_leaf
        pat_bit = 1 << mk.pat_bit
        attr_mask = 0x1E | pat_bit | ((1 << 63) if mk.level.entry_size == 8 else 0)
        split_pa = self.segments is not None
        emit = self._emit
        key = self._key
        rva = rend = rpa0 = ra = -1
        rpa: int | None = None
        rn = 0
        for i in idx:
            e = ents[i]
            va = base_va + (i << 12)
            if e & rsvd:
                if rn:
                    emit(rva, rend - rva, rpa0 if rpa is not None else None,
                         key(inh, ra, pat_bit), 4096, rn)
                    rn = 0
                self._reserved(va, mk, table, i, e)
                continue
            pa = e & addr
            a = e & attr_mask
            if rn and a == ra and va == rend:
                if rpa is not None and pa == rpa:
                    rpa = pa + 4096
                elif split_pa:
                    emit(rva, rend - rva, rpa0, key(inh, ra, pat_bit), 4096, rn)
                    rva, rpa0, rpa, rn = va, pa, pa + 4096, 0
                else:
                    rpa = None
                rend = va + 4096
                rn += 1
                continue
            if rn:
                emit(rva, rend - rva, rpa0 if rpa is not None else None,
                     key(inh, ra, pat_bit), 4096, rn)
            rva, rend, rpa0, rpa, ra, rn = va, va + 4096, pa, pa + 4096, a, 1
        if rn:
            emit(rva, rend - rva, rpa0 if rpa is not None else None, key(inh, ra, pat_bit),
                 4096, rn)

    def _close(self) -> None:
        cur = self._cur
        if cur is None:
            return
        self._cur = None
        va, end, pa, _, key, sizes, pages = cur
        w, u, x, mt = _key_to_fields(key)
        ps = tuple(sorted(1 << b for b in range(sizes.bit_length()) if sizes >> b & 1))
        self.mappings.append(Mapping(va, end - va, pa, w, u, x, mt, ps, pages))
        if len(self.mappings) >= self.limits.max_mappings:
            raise _Truncated(f"more than {self.limits.max_mappings} ranges")

    def _issue(self, kind: IssueKind, va: int, span: int, mk: LevelMasks, table: int,
               index: int, raw: int, points_to: int, detail: str) -> None:
        if len(self.issues) >= self.limits.max_issues:
            raise _Truncated(f"more than {self.limits.max_issues} bad entries")
        self.issues.append(TableIssue(kind, va, span, mk.level.name, table, index, raw,
                                      points_to, detail))

    def _reserved(self, va: int, mk: LevelMasks, table: int, index: int, raw: int) -> None:
        entry = decode_with_masks(raw, mk, self.params.nxe)
        reason, text = _reserved_reason(entry)
        self._issue(_ISSUE_FROM_STOP[reason], va, mk.level.span, mk, table, index, raw,
                    entry.addr, f"{mk.level.name}[{index}]: {text}")

    # -- walking -----------------------------------------------------------------------------
    def run(self) -> None:
        top = self.config.top
        mk = self.masks[0]
        data = self.cache.table(top, mk.level.table_size)
        if data is None:
            detail = self.cache.error(top) or "read failed"
            self.issues.append(TableIssue(IssueKind.UNREADABLE, 0, 1 << self.va_bits,
                                          "CR3", top, 0, self.config.cr3, top,
                                          f"top-level {mk.level.name} at {top:#x} cannot be "
                                          f"read: {detail}"))
            return
        self._visit(top, 0, 0, 3, [top], data)
        self._close()

    def _visit(self, table: int, depth: int, base_va: int, inh: int, path: list[int],
               data: bytes) -> None:
        """Walk one table. ``inh`` bits: 1 = W so far, 2 = U so far, 4 = XD somewhere above."""
        st = self.stats
        st.visits += 1
        if st.visits > self.limits.max_visits:
            raise _Truncated(f"more than {self.limits.max_visits} table visits "
                             "(shared or looping subtrees)")
        mk = self.masks[depth]
        lv = mk.level
        self.tables.setdefault(table, lv.name)
        esz = lv.entry_size
        n = lv.entries
        # PT without PA pieces to collect: one step per run of equal attributes.
        if lv.last and self.segments is None and n > 4 and self._runs(data, mk, base_va, inh):
            return
        lane = data[0::esz].translate(_PRESENT)
        missing = lane.count(0)
        if missing == n:
            return
        shift = lv.shift
        top_long = depth == 0 and self.long
        leaf_level = lv.last or mk.leaf_ps
        page = mk.page_size
        # Fast path: a full table of leaves mapping consecutive frames with equal attributes.
        if missing == 0 and leaf_level and n > 4:
            if self._fast(data, mk, base_va, inh, table):
                return
            if self.segments is None and self._uniform(data, mk, base_va, inh):
                return
        fmt = f"<{n}Q" if esz == 8 else f"<{n}I"
        ents = struct.unpack(fmt, data)
        if missing == 0:
            idx: list[int] | range = range(n)
        else:
            idx = []
            i = lane.find(1)
            while i >= 0:
                idx.append(i)
                i = lane.find(1, i + 1)
        st.entries += len(idx)
        if st.entries > self.limits.max_entries:
            raise _Truncated(f"more than {self.limits.max_entries} entries examined")
        if lv.last:
            self._leaf_table(ents, idx, mk, base_va, inh, table)
            return
        last = lv.last
        leaf_ps = mk.leaf_ps
        rsvd_leaf = mk.rsvd_leaf
        rsvd_table = mk.rsvd_table
        addr_leaf = mk.addr_leaf
        addr_table = mk.addr_table
        pat_bit = 1 << mk.pat_bit
        attr_mask = 0x1E | pat_bit | ((1 << 63) if esz == 8 else 0)
        pse36 = esz == 4 and leaf_ps
        access = lv.access_bits
        nxe = self.nxe
        f = self.filters
        va_lo, va_hi = self.va_lo, self.va_hi
        span = 1 << shift
        children: list[tuple[int, int, int, int, int]] = []  # (i, va, child, inh, raw)
        # pass 1: leaves are merged into runs and emitted in order; tables are collected so
        # their pages can be prefetched in one bulk request, then visited in order (pass 2).
        # To keep VA order, leaf runs that follow a child table are deferred with it.
        items: list[tuple] = []
        run = None  # [va, end, pa, pa_end, attr, n]
        for i in idx:
            e = ents[i]
            va = canonical(i << shift, self.va_bits) if top_long else base_va + (i << shift)
            if last or (leaf_ps and e & 0x80):
                if e & rsvd_leaf:
                    if run is not None:
                        items.append(("run", run))
                        run = None
                    items.append(("rsvd", va, i, e))
                    continue
                if pse36:
                    pa = (e & 0xFFC00000) | (((e & addr_leaf) >> 13 & 0xFF) << 32)
                else:
                    pa = e & addr_leaf
                a = e & attr_mask
                if run is not None and run[4] == a and run[1] == va and run[3] == pa:
                    run[1] = va + page
                    run[3] = pa + page
                    run[5] += 1
                else:
                    if run is not None:
                        items.append(("run", run))
                    run = [va, va + page, pa, pa + page, a, 1]
                continue
            if run is not None:
                items.append(("run", run))
                run = None
            r = e & (rsvd_leaf if e & 0x80 else rsvd_table)
            if r:
                items.append(("rsvd", va, i, e))
                continue
            if va_lo is not None and va + span <= va_lo:
                continue
            if va_hi is not None and va >= va_hi:
                continue
            cinh = inh
            if access:
                if not e & 2:
                    cinh &= ~1
                if not e & 4:
                    cinh &= ~2
                if nxe and e >> 63:
                    cinh |= 4
            if self.any_prune and f.prunes(bool(cinh & 1), bool(cinh & 2), bool(cinh & 4)):
                continue
            child = e & addr_table
            if e & mk.soft_rsvd:
                items.append(("soft", va, i, e, child))
            if child in path:
                items.append(("loop", va, i, e, child))
                continue
            items.append(("table", va, i, e, child, cinh))
            children.append((i, va, child, cinh, e))
        if run is not None:
            items.append(("run", run))
        if children:
            try:
                self.cache.prefetch(c[2] for c in children)
            except TableLimitReached as err:
                raise _Truncated(str(err)) from None
        nmk = self.masks[depth + 1] if depth + 1 < len(self.masks) else None
        batch = (nmk is not None and nmk.level.last and self.segments is None
                 and nmk.level.entries > 4)
        k = 0
        while k < len(items):
            it = items[k]
            k += 1
            tag = it[0]
            if tag == "table" and batch and k < len(items):
                j = k
                while (j < len(items) and items[j][0] == "table"
                       and items[j][2] == items[j - 1][2] + 1 and items[j][5] == it[5]):
                    j += 1
                if j > k:
                    assert nmk is not None
                    if self._pt_batch(items[k - 1:j], nmk):
                        k = j
                        continue
            if tag == "run":
                r_ = it[1]
                key = self._key(inh, r_[4], pat_bit)
                self._emit(r_[0], r_[1] - r_[0], r_[2], key, page, r_[5])
            elif tag == "table":
                _, va, i, e, child, cinh = it
                assert nmk is not None
                try:
                    cdata = self.cache.table(child, nmk.level.table_size)
                except TableLimitReached as err:
                    raise _Truncated(str(err)) from None
                if cdata is None:
                    self._issue(IssueKind.UNREADABLE, va, span, mk, table, i, e, child,
                                f"{lv.name}[{i}] points to a {nmk.level.name} at {child:#x} "
                                f"that cannot be read ({self.cache.error(child) or 'failed'})")
                    continue
                path.append(child)
                try:
                    self._visit(child, depth + 1, va, cinh, path, cdata)
                finally:
                    path.pop()
            elif tag == "rsvd":
                _, va, i, e = it
                self._reserved(va, mk, table, i, e)
            elif tag == "soft":
                _, va, i, e, child = it
                bits = ", ".join(str(b) for b in range(64) if (e & mk.soft_rsvd) >> b & 1)
                self._issue(IssueKind.SOFT_RESERVED, va, span, mk, table, i, e, child,
                            f"{lv.name}[{i}] sets bit(s) {bits}, reserved in a PAE PDPTE: "
                            "QEMU ignores them (followed here), a real CPU raises #GP at "
                            "MOV CR3")
            else:  # loop
                _, va, i, e, child = it
                if child == table:
                    self._issue(IssueKind.RECURSIVE, va, span, mk, table, i, e, child,
                                f"{lv.name}[{i}] points to this {lv.name} itself "
                                "(recursive self-map); not descended")
                else:
                    anc = self.masks[path.index(child)].level.name
                    self._issue(IssueKind.LOOP, va, span, mk, table, i, e, child,
                                f"{lv.name}[{i}] points back to the {anc} at {child:#x} "
                                "(a loop in the hierarchy); not descended")

    def _runs(self, data: bytes, mk: LevelMasks, base_va: int, inh: int) -> bool:
        """A PT as runs of equal attributes, each one chunk, without a loop per entry.

        The attribute bits of every entry (P, R/W, U/S, PWT, PCD, PAT, XD) are gathered into
        one byte per entry with ``bytes.translate`` on byte lanes; XOR of that lane with itself
        shifted by one entry marks where runs of equal bytes end (C-level, linear). A run is PA-contiguous when its entries, with the
        ignored bits (A, D, available) cleared and read as one little-endian integer, equal
        ``e0*R + 4096*S`` (see :meth:`_fast`); the first and last entries are compared first,
        which settles most scattered runs at once. Returns False (nothing emitted) when a
        reserved bit is set anywhere, so the per-entry path can report it.
        """
        esz = mk.level.entry_size
        n = len(data) // esz  # one table, or several consecutive ones (see _visit)
        tn = mk.level.entries
        for k, keep in self._rsvd_lanes(mk):
            if data[k::esz].translate(keep).count(0) != n:
                return False
        attrs = data[0::esz].translate(_KEEP_9F)
        if esz == 8:
            xd = data[7::8].translate(_XD_TO_BIT5)
            if xd.count(xd[0]) != n:  # XD differs between entries: fold it into the lane
                attrs = (int.from_bytes(attrs, "little")
                         | int.from_bytes(xd, "little")).to_bytes(n, "little")
        keep_mask = self._keep_mask
        addr = mk.addr_leaf
        top = 1 << (8 * esz)
        attr_mask = 0x9E | ((1 << 63) if esz == 8 else 0)
        emit = self._emit
        key = self._key
        st = self.stats
        mba: bytearray | None = None
        # boundaries: byte i of `diff` is 1 where attrs[i] != attrs[i+1] (int XOR: C-level)
        a = int.from_bytes(attrs, "little")
        diff = (a ^ (a >> 8)).to_bytes(n, "little").translate(_NONZERO)
        pos = 0
        while pos < n:
            i = diff.find(1, pos, n - 1)
            end = n if i < 0 else i + 1
            start, pos = pos, end
            if not attrs[start] & 1:
                continue
            pos_ = start
            cnt = end - pos_
            st.entries += 1
            e0 = int.from_bytes(data[pos_ * esz:(pos_ + 1) * esz], "little") & keep_mask
            pa: int | None = e0 & addr
            if cnt > 1:
                last = int.from_bytes(data[(end - 1) * esz:end * esz], "little") & keep_mask
                if last != e0 + (cnt - 1) * 4096 or last >= top:
                    pa = None
                else:
                    if mba is None:
                        mba = self._masked(data, esz)
                    if not _consecutive(mba, pos_, cnt, e0, esz, tn):
                        pa = None
            emit(base_va + (pos_ << 12), cnt << 12, pa, key(inh, e0 & attr_mask, 0x80), 4096,
                 cnt)
        if st.entries > self.limits.max_entries:
            raise _Truncated(f"more than {self.limits.max_entries} entries examined")
        return True

    def _pt_batch(self, group: list[tuple], nmk: LevelMasks) -> bool:
        """Consecutive entries of one PD (PAE PD, 32-bit PD) that reference PTs, same
        inherited rights: the PTs map one contiguous linear range, so their pages are joined
        and run-split as one (:meth:`_runs`); 512 PTs of the pt-stress scenario cost about
        what one does. False (nothing emitted) when a PT cannot be read or has reserved
        bits: the caller then visits them one by one and reports what is wrong."""
        size = nmk.level.table_size
        datas = []
        for it in group:
            try:
                cdata = self.cache.table(it[4], size)
            except TableLimitReached as err:
                raise _Truncated(str(err)) from None
            if cdata is None:
                return False
            datas.append(cdata)
        st = self.stats
        if st.visits + len(group) > self.limits.max_visits:
            return False  # the one-by-one path raises at the right place
        if not self._runs(b"".join(datas), nmk, group[0][1], group[0][5]):
            return False
        st.visits += len(group)
        for it in group:
            self.tables.setdefault(it[4], nmk.level.name)
        return True

    def _rsvd_lanes(self, mk: LevelMasks) -> list[tuple[int, bytes]]:
        lanes = self._rsvd_cache.get(mk.level.depth)
        if lanes is None:
            lanes = [(k, _keep(m)) for k, m in _lane_masks(mk.rsvd_leaf, mk.level.entry_size)]
            self._rsvd_cache[mk.level.depth] = lanes
        return lanes

    def _masked(self, data: bytes, esz: int) -> bytearray:
        """``data`` with the bits that never split a range cleared: A, D, G, the available bits
        (9-11, and 52-58 in IA-32e entries; protection keys too unless CR4.PKE)."""
        ba = bytearray(data)
        ba[0::esz] = ba[0::esz].translate(_CLR_AD)
        ba[1::esz] = ba[1::esz].translate(_CLR_AVL)
        if esz == 8 and self.long:
            ba[6::8] = ba[6::8].translate(_CLR_52_55)
            ba[7::8] = ba[7::8].translate(_CLR_56_58 if self.params.pke else _CLR_56_62)
        return ba

    def _uniform(self, data: bytes, mk: LevelMasks, base_va: int, inh: int) -> bool:
        """Recognise a full table of leaves with equal attributes but scattered frames.

        Byte lanes (``data[k::esz]``) masked to the attribute bits (P, R/W, U/S, PWT, PCD,
        PAT, PS, XD) must each hold one repeated value, and the lanes holding reserved bits
        must be all zero: C-level work, no loop per entry. The table becomes one scattered
        chunk (only used when PA pieces are not collected).
        """
        lv = mk.level
        esz = lv.entry_size
        n = lv.entries
        pat_bit = 1 << mk.pat_bit
        attr_mask = 0x1F | pat_bit | (0 if lv.last else 0x80) | ((1 << 63) if esz == 8 else 0)
        first = 0
        for k, m in _lane_masks(attr_mask, esz):
            lane = data[k::esz].translate(_keep(m))
            v = lane[0]
            if lane.count(v) != n:
                return False
            first |= v << (8 * k)
        if not lv.last and not first & 0x80:
            return False
        for k, m in _lane_masks(mk.rsvd_leaf, esz):
            if data[k::esz].translate(_keep(m)).count(0) != n:
                return False
        self.stats.fast_tables += 1
        key = self._key(inh, first & ~0x81 if not lv.last else first & ~1, pat_bit)
        self._emit(base_va, n * mk.page_size, None, key, mk.page_size, n)
        return True

    def _fast(self, data: bytes, mk: LevelMasks, base_va: int, inh: int, table: int) -> bool:
        """Recognise a table of n leaves mapping consecutive frames with equal attributes."""
        lv = mk.level
        esz = lv.entry_size
        n = lv.entries
        ba = self._masked(data, esz)
        e0 = int.from_bytes(ba[:esz], "little")
        if not lv.last and not e0 & 0x80:
            return False
        page = mk.page_size
        if e0 + (n - 1) * page >= 1 << (8 * esz):
            return False  # the last entry would not fit: no carries allowed in the check
        # All n entries equal e0 + i*page  <=>  the table, read as one little-endian integer,
        # equals e0*R + page*S with R = sum 2^(w*i), S = sum i*2^(w*i) (w = entry bits):
        # base-2^w representations are unique when every lane fits, checked just above.
        rep, ramp = _lanes(n, esz)
        if int.from_bytes(ba, "little") != e0 * rep + page * ramp:
            return False
        last = e0 + (n - 1) * page
        rsvd = mk.rsvd_leaf
        if e0 & rsvd or last & rsvd:
            return False
        if esz == 4 and not lv.last:  # 4 MiB PSE-36 leaves: address bits 39:32 in 20:13
            pa = (e0 & 0xFFC00000) | (((e0 & mk.addr_leaf) >> 13 & 0xFF) << 32)
        else:
            pa = e0 & mk.addr_leaf
        self.stats.fast_tables += 1
        pat_bit = 1 << mk.pat_bit
        attr = e0 & (0x1E | pat_bit | ((1 << 63) if esz == 8 else 0))
        self._emit(base_va, n * page, pa, self._key(inh, attr, pat_bit), page, n)
        return True


_NONZERO = bytes([0] + [1] * 255)


def _consecutive(mba: bytearray, pos: int, cnt: int, e0: int, esz: int, tn: int) -> bool:
    """True when the ``cnt`` masked entries from ``pos`` equal ``e0 + i*4096``: the run maps
    consecutive frames. Checked ``tn`` entries at a time as one little-endian integer
    against ``e*R + 4096*S`` (see :meth:`_Dumper._fast`); no lane can carry (the caller
    checked that the last entry fits)."""
    rep, ramp = _lanes(tn, esz)
    for c0 in range(0, cnt, tn):
        c = min(tn, cnt - c0)
        m = (1 << (8 * esz * c)) - 1
        x = int.from_bytes(mba[(pos + c0) * esz:(pos + c0 + c) * esz], "little")
        if x != (e0 + c0 * 4096) * (rep & m) + 4096 * (ramp & m):
            return False
    return True


@lru_cache(maxsize=64)
def _keep(mask: int) -> bytes:
    """A bytes.translate table keeping only the bits of ``mask`` (one byte)."""
    return bytes(b & mask for b in range(256))


def _lane_masks(value: int, esz: int) -> list[tuple[int, int]]:
    """(byte index, byte mask) for every non-zero byte of ``value`` within an entry."""
    return [(k, (value >> (8 * k)) & 0xFF) for k in range(esz) if (value >> (8 * k)) & 0xFF]


def dump(target: Target, config: PagingConfig, *, filters: PageFilter | None = None,
         limits: DumpLimits | None = None, cache: TableCache | None = None,
         collect_segments: bool = False) -> Dump:
    """Walk every table of ``config`` and return the merged, filtered mappings.

    ``cache`` lets several requests in one stop share table reads; ``collect_segments`` keeps
    the physically contiguous pieces (needed by the anomaly checks and reverse lookups).
    """
    filters = filters or PageFilter()
    limits = limits or DumpLimits()
    t0 = time.perf_counter()
    d = _Dumper(target, config, filters, limits, cache, collect_segments)
    truncated = None
    if config.mode is PagingMode.NONE:
        truncated = None
    else:
        try:
            d.run()
        except _Truncated as err:
            truncated = str(err)
            try:
                d._close()
            except _Truncated:
                pass
    mappings = d.mappings
    if filters.contains is not None:
        mappings = [m for m in mappings if m.contains(filters.contains)]
    st = d.stats
    st.tables = len(d.tables)
    st.reads = d.cache.reads
    st.bytes_read = d.cache.bytes_read
    st.seconds = time.perf_counter() - t0
    segs = tuple(d.segments) if d.segments is not None else None
    return Dump(config, filters, tuple(mappings), tuple(d.issues), d.tables, segs, truncated, st)


@dataclass(frozen=True, slots=True)
class ReverseHit:
    """One linear address mapping the physical address asked about."""

    va: int
    page_va: int
    page_size: int
    writable: bool
    user: bool
    executable: bool
    memtype: MemoryType | None


def reverse_lookup(target: Target, config: PagingConfig, pa: int, *,
                   limits: DumpLimits | None = None, cache: TableCache | None = None,
                   max_hits: int = 4096) -> tuple[list[ReverseHit], Dump]:
    """Every linear address that maps physical ``pa`` (``kd p2v``), in VA order."""
    d = dump(target, config, limits=limits, cache=cache, collect_segments=True)
    hits: list[ReverseHit] = []
    for s in d.segments or ():
        if s.pa <= pa < s.pa + s.size:
            va = s.va + (pa - s.pa)
            page_va = va & ~(s.page_size - 1)
            hits.append(ReverseHit(va, page_va, s.page_size, s.writable, s.user, s.executable,
                                   s.memtype))
            if len(hits) >= max_hits:
                break
    return hits, d
