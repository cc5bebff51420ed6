"""Hypothesis: random page tables (sane, garbage, loops, beyond RAM) in every mode.

The dump, the walker and translate() are checked against ``ref_translate``, a deliberately
plain per-address translation written straight from the SDM tables (Vol. 3A 4.3-4.5, 4.6,
12.12.3), sharing no code with kdiag's paging package.
"""

from __future__ import annotations

import bisect
import itertools

import pytest
from _paging_build import Builder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdiag.errors import TranslationError
from kdiag.paging.config import config_from_state
from kdiag.paging.dump import Dump, DumpLimits, IssueKind, dump
from kdiag.paging.translate import translate
from kdiag.paging.walker import walk
from kdiag.x86.pat import POWER_ON_PAT
from kdiag.x86.pte import PagingMode

WC_PAT = 0x0007050100070406
RAM = 1 << 24
TABLE_BASE = 0x10000


def _bit(v: int, n: int) -> int:
    return (v >> n) & 1


def _mask(lo: int, hi: int) -> int:
    return ((1 << (hi - lo + 1)) - 1) << lo


def ref_translate(read, cr3: int, va: int, mode: PagingMode, pse: bool, nxe: bool,
                  pat: int):
    """(pa, writable, user, executable, memtype) or None. ``read(pa, n)`` -> int or None."""
    def memtype(pat_bit: int, e: int) -> int:
        return (pat >> (8 * (pat_bit * 4 + _bit(e, 4) * 2 + _bit(e, 3)))) & 0xFF

    if mode is PagingMode.BITS32:
        pde = read((cr3 & 0xFFFFF000) + ((va >> 22) & 0x3FF) * 4, 4)
        if pde is None or not pde & 1:
            return None
        if pse and _bit(pde, 7):
            if _bit(pde, 21):
                return None
            pa = (pde & 0xFFC00000) | (((pde >> 13) & 0xFF) << 32) | (va & 0x3FFFFF)
            return pa, bool(pde & 2), bool(pde & 4), True, memtype(_bit(pde, 12), pde)
        pte = read((pde & 0xFFFFF000) + ((va >> 12) & 0x3FF) * 4, 4)
        if pte is None or not pte & 1:
            return None
        pa = (pte & 0xFFFFF000) | (va & 0xFFF)
        return (pa, bool(pde & 2 and pte & 2), bool(pde & 4 and pte & 4), True,
                memtype(_bit(pte, 7), pte))

    xd_rsvd = 0 if nxe else 1 << 63
    addr = _mask(12, 51)
    if mode is PagingMode.PAE:
        pdpte = read((cr3 & 0xFFFFFFE0) + ((va >> 30) & 3) * 8, 8)
        if pdpte is None or not pdpte & 1:
            return None
        if pdpte & _mask(52, 63):  # bits 1, 2, 5-8: SDM-reserved, but QEMU ignores them
            return None
        entries = [(pdpte, False)]
        table = pdpte & addr
        shifts = [21, 12]
        hi_rsvd = _mask(52, 62)
    else:
        entries = []
        table = cr3 & addr
        shifts = ([48] if mode is PagingMode.LEVEL5 else []) + [39, 30, 21, 12]
        hi_rsvd = 0
    for shift in shifts:
        e = read(table + ((va >> shift) & 0x1FF) * 8, 8)
        if e is None or not e & 1:
            return None
        if e & (hi_rsvd | xd_rsvd):
            return None
        entries.append((e, True))
        is_leaf = shift == 12 or (_bit(e, 7) and shift in (21, 30))
        if shift in (39, 48) and _bit(e, 7):
            return None  # PS reserved in PML4E/PML5E
        if is_leaf:
            size = 1 << shift
            if shift == 30 and e & _mask(13, 29):
                return None
            if shift == 21 and e & _mask(13, 20):
                return None
            pa = (e & addr & ~(size - 1)) | (va & (size - 1))
            w = all(x & 2 for x, acc in entries if acc)
            u = all(x & 4 for x, acc in entries if acc)
            x = not (nxe and any(_bit(x_, 63) for x_, acc in entries if acc))
            pat_bit = _bit(e, 7) if shift == 12 else _bit(e, 12)
            return pa, w, u, x, memtype(pat_bit, e)
        table = e & addr
    return None


MODES = [(PagingMode.BITS32, False), (PagingMode.BITS32, True), (PagingMode.PAE, False),
         (PagingMode.LEVEL4, False), (PagingMode.LEVEL5, False)]
INTERESTING_FLAGS = [0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80, 0x100, 0x1000, 1 << 63]


def _flags(draw, leaf: bool) -> int:
    """Random flags: P usually set, rights mostly granted, caching and XD sometimes."""
    f = 0
    for bit, percent in ((0x1, 92), (0x2, 70), (0x4, 70), (0x8, 20), (0x10, 20), (0x20, 50),
                         (0x40, 50), (0x100, 30), (1 << 63, 25 if leaf else 15)):
        if draw(st.integers(0, 99)) < percent:
            f |= bit
    return f


@st.composite
def table_sets(draw, mode: PagingMode, pse: bool):
    """Mostly sane hierarchies (a table at each depth, leaves where the level allows them,
    some tables full of contiguous leaves) perturbed with reserved bits, garbage, loops,
    cross-level pointers and pointers beyond RAM."""
    levels = Builder(mode, pse=pse).levels
    nlev = len(levels)
    esz = mode.entry_size
    ntables = draw(st.integers(nlev - 1, nlev + 2))
    depth = [min(k, nlev - 1) if k < nlev else draw(st.integers(1, nlev - 1))
             for k in range(ntables)]
    tables = [TABLE_BASE + k * 0x1000 for k in range(ntables)]
    nent = 1024 if esz == 4 else 512
    indices = draw(st.lists(st.sampled_from([0, 1, 2, 3, nent // 2 - 1, nent // 2, nent - 1]),
                            min_size=1, max_size=4, unique=True))
    entries = []
    for k in range(ntables):
        lv = levels[depth[k]]
        leaf_size = 4096 if lv.last else lv.page_size
        if leaf_size and draw(st.integers(0, 4)) == 0:  # a full table of contiguous leaves
            base = draw(st.sampled_from([0, 0x40000000, 0x80000000]))
            fl = _flags(draw, True) | 1 | (0 if lv.last else 0x80)
            scattered = draw(st.booleans())  # same attributes, frames cycling over 16
            accessed = draw(st.integers(0, lv.entries - 1))  # A/D never split a range
            for i in range(lv.entries):
                frame = (i % 16) * 2 if scattered else i
                entries.append((k, i, (base + frame * leaf_size) | fl
                                | (0x60 if i == accessed else 0)))
            if draw(st.booleans()):
                i = draw(st.integers(0, lv.entries - 1))
                entries.append((k, i, draw(st.integers(0, (1 << 64) - 1))))
            continue
        for i in draw(st.lists(st.sampled_from(indices), max_size=4, unique=True)):
            kinds = ["zero", "garbage", "beyond"]
            kinds += ["table"] * 4 if not lv.last else []
            kinds += ["leaf"] * 4 if leaf_size else []
            kind = draw(st.sampled_from(kinds))
            fl = _flags(draw, kind == "leaf")
            if kind == "table":
                below = [t for t, d in zip(tables, depth, strict=True) if d == depth[k] + 1]
                pool = below if below and draw(st.integers(0, 5)) else tables
                ps = 0x80 if draw(st.integers(0, 9)) == 0 else 0
                value = draw(st.sampled_from(pool)) | (fl & ~0x80) | ps
            elif kind == "leaf":
                assert leaf_size
                frame = draw(st.sampled_from([0, 1, 2, 3, 0x1F])) * leaf_size
                value = frame | fl | (0 if lv.last else 0x80)
                if draw(st.integers(0, 9)) == 0:
                    value |= 1 << draw(st.integers(12, 62))
            elif kind == "beyond":
                value = draw(st.sampled_from([RAM, 1 << 35, (1 << 51) - 0x1000])) | 0x7
            elif kind == "garbage":
                value = draw(st.integers(0, (1 << 64) - 1))
            else:
                value = 0
            if mode is PagingMode.PAE and depth[k] == 0 and draw(st.integers(0, 9)):
                value &= ~0x1E6 & ((1 << 52) - 1)  # PDPTEs: only P, PWT, PCD (mostly)
            entries.append((k, i, value))
    if esz == 4:
        entries = [(k, i, v & 0xFFFFFFFF) for k, i, v in entries]
    pat = draw(st.sampled_from([POWER_ON_PAT, WC_PAT]))
    nxe = draw(st.integers(0, 4)) > 0
    wp = draw(st.booleans())
    return tables, indices, entries, pat, nxe, wp


def _sample_vas(mode: PagingMode, pse: bool, indices: list[int]) -> list[int]:
    b = Builder(mode, pse=pse)
    levels = b.levels
    per_level = []
    for lv in levels:
        per_level.append(sorted({i % lv.entries for i in indices} | {0, lv.entries - 1}))
    vas = []
    for combo in itertools.product(*per_level):
        va = 0
        for lv, i in zip(levels, combo, strict=True):
            va |= i << lv.shift
        for off in (0, 0x7FF):
            v = va | off
            if mode in (PagingMode.LEVEL4, PagingMode.LEVEL5):
                bits = 48 if mode is PagingMode.LEVEL4 else 57
                if v >> (bits - 1):
                    v |= ((1 << 64) - 1) ^ ((1 << bits) - 1)
            vas.append(v)
    return vas


def _lookup(d: Dump, va: int):
    starts = [m.va for m in d.mappings]
    k = bisect.bisect_right(starts, va) - 1
    if k < 0 or not d.mappings[k].contains(va):
        return None
    m = d.mappings[k]
    if m.pa is not None:
        pa = m.pa + (va - m.va)
    else:
        segs = [s for s in d.segments or () if s.va <= va < s.va + s.size]
        assert len(segs) == 1, (hex(va), segs)
        pa = segs[0].pa + (va - segs[0].va)
    return pa, m.writable, m.user, m.executable, int(m.memtype) if m.memtype is not None else None


def _in_skipped(d: Dump, va: int) -> bool:
    return any(i.va <= va < i.end for i in d.issues
               if i.kind in (IssueKind.RECURSIVE, IssueKind.LOOP))


def _check(mode: PagingMode, pse: bool, data) -> None:
    tables, indices, entries, pat, nxe, wp = data
    b = Builder(mode, pse=pse, nxe=nxe, wp=wp, ram_size=RAM, table_base=TABLE_BASE,
                msrs={0x277: pat})
    for k, i, value in entries:
        b.set_entry(tables[k], i % b.levels[0].entries if k == 0 else i, value)
    state = b.state(cr3=tables[0])
    b.target.set_state(state)
    cfg = config_from_state(state, pat=pat)
    d = dump(b.target, cfg, collect_segments=True)
    assert d.truncated is None
    plain = dump(b.target, cfg)  # merging without PA pieces must give the same ranges
    assert plain.mappings == d.mappings and plain.issues == d.issues

    def read(pa: int, n: int):
        if pa + n > RAM:
            return None
        return int.from_bytes(b.target.read_phys(pa, n), "little")

    for va in _sample_vas(mode, pse, indices):
        ref = ref_translate(read, tables[0], va, mode, pse, nxe, pat)
        w = walk(b.target, va, cfg)
        got_walk = None
        if w.ok:
            assert w.access is not None and w.memtype is not None
            got_walk = (w.pa, w.access.writable, w.access.user, w.access.executable,
                        int(w.memtype))
        assert got_walk == ref, (hex(va), w.detail)
        try:
            assert translate(b.target, va, state) == ref[0]  # type: ignore[index]
        except TranslationError as err:
            assert ref is None, (hex(va), str(err))
            assert err.va == va and err.reason
        if _in_skipped(d, va):
            continue
        assert _lookup(d, va) == ref, hex(va)
    # mappings are sorted, disjoint and never adjacent-with-equal-attributes-and-contiguous
    for a, c in itertools.pairwise(d.mappings):
        assert a.end <= c.va
        if a.end == c.va:
            assert (a.writable, a.user, a.executable, a.memtype) != (
                c.writable, c.user, c.executable, c.memtype)


@pytest.mark.parametrize("mode, pse", MODES, ids=[f"{m.value}{'-pse' if p else ''}"
                                                  for m, p in MODES])
def test_dump_walk_translate_agree_with_reference(mode: PagingMode, pse: bool) -> None:
    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(table_sets(mode, pse))
    def inner(data) -> None:
        _check(mode, pse, data)

    inner()


@pytest.mark.parametrize("mode, pse", MODES, ids=[f"{m.value}{'-pse' if p else ''}"
                                                  for m, p in MODES])
def test_garbage_everywhere_is_bounded(mode: PagingMode, pse: bool) -> None:
    """Every entry of every table present and pointing at a table: finite, truncated or not."""
    b = Builder(mode, pse=pse, ram_size=RAM, table_base=TABLE_BASE)
    esz = mode.entry_size
    n = 1024 if esz == 4 else 512
    tables = [TABLE_BASE + k * 0x1000 for k in range(3)]
    for k, t in enumerate(tables):
        for i in range(n if k else b.levels[0].entries):
            b.set_entry(t, i, tables[(k + 1 + i) % 3] | 0x7 | (0x80 if i % 3 == 0 else 0))
    limits = DumpLimits(max_visits=2000, max_entries=200_000, max_mappings=5000)
    d = dump(b.target, config_from_state(b.state(cr3=tables[0])), limits=limits)
    assert d.stats.visits <= 2001 and d.stats.entries <= 200_000 + n
    assert len(d.mappings) <= 5000


def test_cross_linked_garbage_with_the_default_limits_is_bounded() -> None:
    """Eight tables whose every entry is present and points at another of them (a third with
    PS): the hierarchy unfolds into millions of paths. The default caps stop it in seconds,
    with the reason, and bound what is kept."""
    import time

    b = Builder(PagingMode.LEVEL4, ram_size=RAM, table_base=TABLE_BASE)
    tables = [TABLE_BASE + k * 0x1000 for k in range(8)]
    for k, t in enumerate(tables):
        for i in range(512):
            b.set_entry(t, i, tables[(k + 1 + i) % 8] | 0x7 | (0x80 if i % 3 == 0 else 0))
    lim = DumpLimits()
    t0 = time.perf_counter()
    d = dump(b.target, config_from_state(b.state(cr3=tables[0])), collect_segments=True)
    assert time.perf_counter() - t0 < 60  # ~2 s on an idle core
    assert d.truncated is not None
    assert d.stats.visits <= lim.max_visits + 1 and d.stats.entries <= lim.max_entries + 512
    assert len(d.segments or ()) <= lim.max_segments and len(d.mappings) <= lim.max_mappings
    assert len(d.issues) <= lim.max_issues
