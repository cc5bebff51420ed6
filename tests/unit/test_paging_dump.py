"""The dump on hand-built tables: merging, filters and pruning, bad entries, caps, p2v."""

from __future__ import annotations

import pytest
from _paging_build import PAT_LARGE, PCD, PS, PWT, RW, US, XD, A, Builder, D, G, P

from kdiag.paging.config import config_from_state
from kdiag.paging.dump import DumpLimits, IssueKind, dump, reverse_lookup
from kdiag.paging.filters import PageFilter, parse_memtypes, parse_va_range
from kdiag.paging.tables import TableCache
from kdiag.x86.pat import MemoryType
from kdiag.x86.pte import PagingMode

K = 0xFFFFFFFF80000000
WC_PAT = 0x0007050100070406  # PA4 = WC


def cfg_of(b: Builder, **kw: object):
    return config_from_state(b.state(), **kw)  # type: ignore[arg-type]


def kernel_like() -> Builder:
    b = Builder(PagingMode.LEVEL4)
    kern = P | RW  # kernel tables: supervisor at every level
    b.map_range(K, 0x200000, 0x6000, flags=P | G, upper=kern)  # text r-x
    b.map_range(K + 0x6000, 0x206000, 0x2000, flags=P | G | XD, upper=kern)  # rodata r--
    b.map_range(K + 0x8000, 0x208000, 0x8000, flags=P | RW | G | XD | A | D,
                upper=kern)  # data rw-
    b.map_range(0xFFFF800000000000, 0, 2 << 30, 1 << 30, flags=P | RW | XD | G,
                upper=kern)  # physmap
    b.map(0x400000000000, 0x900000, flags=P | US)  # user code
    b.map(0x400000100000, 0x901000, flags=P | RW | US | XD)  # user stack
    return b


def test_ranges_merge_by_rights_and_type() -> None:
    d = dump((b := kernel_like()).target, cfg_of(b))
    got = [(m.va, m.size, m.pa, m.rwx, m.user, m.page_sizes, m.pages) for m in d.mappings]
    assert got == [
        (0x400000000000, 0x1000, 0x900000, "r-x", True, (4096,), 1),
        (0x400000100000, 0x1000, 0x901000, "rw-", True, (4096,), 1),
        (0xFFFF800000000000, 2 << 30, 0, "rw-", False, (1 << 30,), 2),
        (K, 0x6000, 0x200000, "r-x", False, (4096,), 6),
        (K + 0x6000, 0x2000, 0x206000, "r--", False, (4096,), 2),
        (K + 0x8000, 0x8000, 0x208000, "rw-", False, (4096,), 8),
    ]
    assert all(m.memtype is MemoryType.WB for m in d.mappings)
    assert d.issues == () and d.truncated is None


def test_accessed_dirty_and_global_do_not_split() -> None:
    b = Builder(PagingMode.LEVEL4)
    for i in range(8):
        b.map(0x1000000 + i * 4096, 0x300000 + i * 4096, flags=P | RW | (A if i % 2 else D)
              | (G if i % 3 else 0))
    (m,) = dump(b.target, cfg_of(b)).mappings
    assert (m.size, m.pa, m.pages) == (0x8000, 0x300000, 8)


def test_scattered_and_mixed_page_sizes() -> None:
    b = Builder(PagingMode.LEVEL4)
    b.map(0x40000000, 0x5000, flags=P | RW)
    b.map(0x40001000, 0x3000, flags=P | RW)  # same rights, PA not contiguous
    b.map_range(0x40200000, 0x800000, 0x400000, 2 << 20, flags=P | RW)  # ... then 2 MiB pages
    for plain in (True, False):
        d = dump(b.target, cfg_of(b), collect_segments=not plain)
        assert [(m.va, m.size, m.pa) for m in d.mappings] == [(0x40000000, 0x2000, None),
                                                               (0x40200000, 0x400000, 0x800000)]
    b.map_range(0x40002000, 0x100000, 0x1FE000, flags=P | RW)  # fill the gap: one range
    (m,) = dump(b.target, cfg_of(b)).mappings
    assert m.pa is None and m.page_sizes == (4096, 2 << 20) and m.size == 0x600000


def test_memory_types_from_pat() -> None:
    b = Builder(PagingMode.LEVEL4)
    b.map(0x1000, 0x1000, flags=P | RW)
    b.map(0x2000, 0x2000, flags=P | RW | PCD | PWT)
    b.map(0x3000, 0x3000, flags=P | RW | PS)  # PTE bit 7 = PAT -> PA4
    b.map(0x200000, 0x400000, 2 << 20, flags=P | RW | PAT_LARGE)  # large: bit 12 = PAT
    d = dump(b.target, cfg_of(b, pat=WC_PAT))
    assert [m.memtype for m in d.mappings] == [MemoryType.WB, MemoryType.UC, MemoryType.WC,
                                               MemoryType.WC]
    d = dump(b.target, cfg_of(b))  # power-on default: PA4 = WB
    assert [m.memtype for m in d.mappings] == [MemoryType.WB, MemoryType.UC, MemoryType.WB,
                                               MemoryType.WB]


def test_rights_are_anded_and_xd_ored_over_levels() -> None:
    b = Builder(PagingMode.LEVEL4)
    b.map(0x1000, 0x1000, flags=P | RW | US, upper=P | US)  # upper R/O: not writable
    b.map(0x8000000000, 0x2000, flags=P | RW | US, upper=P | RW)  # upper S: supervisor
    b.map(0x10000000000, 0x3000, flags=P | RW | US, upper=P | RW | US | XD)  # XD above
    rights = [(m.writable, m.user, m.executable) for m in dump(b.target, cfg_of(b)).mappings]
    assert rights == [(False, True, True), (True, False, True), (True, True, False)]


@pytest.mark.parametrize("flt, vas", [
    (PageFilter(writable=True), [0x400000100000, 0xFFFF800000000000, K + 0x8000]),
    (PageFilter(writable=False), [0x400000000000, K, K + 0x6000]),
    (PageFilter(executable=True), [0x400000000000, K]),
    (PageFilter(executable=False), [0x400000100000, 0xFFFF800000000000, K + 0x6000,
                                    K + 0x8000]),
    (PageFilter(user=True), [0x400000000000, 0x400000100000]),
    (PageFilter(user=False), [0xFFFF800000000000, K, K + 0x6000, K + 0x8000]),
    (PageFilter(wx=True), []),
    (PageFilter(va_start=K, va_end=K + 0x7000), [K, K + 0x6000]),
    (PageFilter(contains=K + 0x9123), [K + 0x8000]),
    (PageFilter(user=False, writable=True, va_start=K), [K + 0x8000]),
])
def test_filters(flt: PageFilter, vas: list[int]) -> None:
    b = kernel_like()
    assert [m.va for m in dump(b.target, cfg_of(b), filters=flt).mappings] == vas


def test_range_filter_clips_to_pages() -> None:
    b = kernel_like()
    d = dump(b.target, cfg_of(b), filters=PageFilter(va_start=K + 0x1800, va_end=K + 0x3001))
    (m,) = d.mappings
    assert (m.va, m.end, m.pa, m.pages) == (K + 0x1000, K + 0x4000, 0x201000, 3)


def test_memtype_filter() -> None:
    b = Builder(PagingMode.LEVEL4)
    b.map(0x1000, 0x1000, flags=P | RW)
    b.map(0x2000, 0x2000, flags=P | RW | PS)
    d = dump(b.target, cfg_of(b, pat=WC_PAT), filters=PageFilter(memtypes=parse_memtypes("wc")))
    assert [m.va for m in d.mappings] == [0x2000]


def test_filters_prune_subtrees_before_reading_them() -> None:
    b = kernel_like()
    full = dump(b.target, cfg_of(b)).stats.tables
    b.target.phys_reads = 0
    d = dump(b.target, cfg_of(b), filters=PageFilter(user=True))
    assert d.stats.tables < full  # the kernel-only PML4 entries were not followed
    assert set(d.tables.values()) == {"PML4", "PDPT", "PD", "PT"}
    d = dump(b.target, cfg_of(b), filters=PageFilter(va_start=0x400000000000,
                                                     va_end=0x400000001000))
    assert d.stats.tables == 4 and len(d.mappings) == 1


def test_each_table_read_once_and_coalesced() -> None:
    b = kernel_like()
    b.target.bulk_read_gap = 1 << 20  # type: ignore[attr-defined]
    b.target.phys_reads = 0
    d = dump(b.target, cfg_of(b))
    assert b.target.phys_reads == d.stats.reads <= 3 < d.stats.tables
    cache = TableCache(b.target)
    dump(b.target, cfg_of(b), cache=cache)
    before = b.target.phys_reads
    again = dump(b.target, cfg_of(b), cache=cache)  # the same stop: nothing is read again
    assert b.target.phys_reads == before and again.mappings == d.mappings


def test_recursive_self_map_is_reported_and_not_descended() -> None:
    b = kernel_like()
    b.set_entry(b.top, 510, b.top | P | RW)
    d = dump(b.target, cfg_of(b))
    (issue,) = d.issues
    assert issue.kind is IssueKind.RECURSIVE and issue.level == "PML4" and issue.index == 510
    assert (issue.va, issue.end) == (0xFFFFFF0000000000, 0xFFFFFF8000000000)
    assert len(d.mappings) == 6


def test_loop_to_an_ancestor() -> None:
    b = Builder(PagingMode.LEVEL4)
    b.map(0x1000, 0x1000)
    pd = b.table_for(0x1000, 2)
    b.set_entry(pd, 5, b.top | P | RW)  # PD[5] -> PML4
    d = dump(b.target, cfg_of(b))
    assert [(i.kind, i.level, i.index, i.points_to) for i in d.issues] == [
        (IssueKind.LOOP, "PD", 5, b.top)]
    assert "back to the PML4" in d.issues[0].detail


def test_cross_level_sharing_is_followed_and_bounded() -> None:
    """A PDPT entry pointing at the PML4 (as a PD) is no loop on the path: it is followed
    once per path, finitely."""
    b = Builder(PagingMode.LEVEL4)
    b.map(0x1000, 0x1000)
    pdpt = b.table_for(0x1000, 1)
    pd = b.table_for(0x1000, 2)
    b.set_entry(pdpt, 7, pd | P | RW)  # the same PD under two PDPT entries
    d = dump(b.target, cfg_of(b))
    assert [m.va for m in d.mappings] == [0x1000, 7 << 30 | 0x1000]


def test_unreadable_table_beyond_ram_does_not_hide_the_rest() -> None:
    b = Builder(PagingMode.LEVEL4, ram_size=64 << 20)
    b.map(0x1000, 0x1000)
    b.set_entry(b.top, 300, (1 << 40) | P | RW)  # a PDPT pointer far beyond RAM
    d = dump(b.target, cfg_of(b))
    assert [m.va for m in d.mappings] == [0x1000]
    (issue,) = d.issues
    assert issue.kind is IssueKind.UNREADABLE and issue.points_to == 1 << 40


def test_top_table_unreadable() -> None:
    b = Builder(PagingMode.LEVEL4, ram_size=64 << 20)
    d = dump(b.target, cfg_of(b, cr3=1 << 36))
    assert d.mappings == () and d.issues[0].kind is IssueKind.UNREADABLE
    assert d.issues[0].level == "CR3"


def test_reserved_bits_become_issues() -> None:
    b = Builder(PagingMode.LEVEL4, nxe=False)
    b.map(0x1000, 0x1000, flags=P | RW)
    b.map(0x2000, 0x2000, flags=P | RW | XD)  # XD without NXE
    b.set_entry(b.top, 5, 0x300000 | P | PS)  # PS in a PML4E
    pd = b.table_for(0x1000, 2)
    b.set_entry(pd, 9, 0x202000 | P | PS)  # 2 MiB page with bit 13 set
    d = dump(b.target, cfg_of(b))
    assert [m.va for m in d.mappings] == [0x1000]
    assert [(i.kind, i.level) for i in d.issues] == [
        (IssueKind.NX_RESERVED, "PT"), (IssueKind.RESERVED, "PD"), (IssueKind.PS_RESERVED, "PML4")]


def test_garbage_tables_are_capped() -> None:
    b = Builder(PagingMode.LEVEL4)
    tables = [b.alloc() for _ in range(3)]
    for t in [b.top, *tables]:
        for i in range(512):
            b.set_entry(t, i, tables[i % 3] | P | RW | US)
    d = dump(b.target, cfg_of(b), limits=DumpLimits(max_visits=500))
    assert d.truncated and "table visits" in d.truncated
    d = dump(b.target, cfg_of(b), limits=DumpLimits(max_mappings=10))
    assert d.truncated and len(d.mappings) <= 10


def test_table_cap() -> None:
    b = Builder(PagingMode.LEVEL4)
    for i in range(20):
        b.map(i << 30, 0x1000)
    d = dump(b.target, cfg_of(b), limits=DumpLimits(max_tables=10))
    assert d.truncated and "page-table pages" in d.truncated


def test_five_level_upper_half_is_sign_extended() -> None:
    b = Builder(PagingMode.LEVEL5)
    b.map(0xFF00000000000000, 0x1000)
    b.map(0x00FF000000001000, 0x2000)  # lower half, high PML5 index
    assert [m.va for m in dump(b.target, cfg_of(b)).mappings] == [0x00FF000000001000,
                                                                   0xFF00000000000000]


def test_pae_and_32bit_pse() -> None:
    b = Builder(PagingMode.PAE)
    b.map(0xC0000000, 0x100000, flags=P | RW | XD)
    b.map(0xC0200000, 0x400000, 2 << 20, flags=P | RW)
    d = dump(b.target, cfg_of(b))
    assert [(m.va, m.executable, m.page_sizes) for m in d.mappings] == [
        (0xC0000000, False, (4096,)), (0xC0200000, True, (2 << 20,))]
    b32 = Builder(PagingMode.BITS32, pse=True)
    b32.map(0xF0000000, 0x3_0040_0000, 4 << 20, flags=P | RW)  # PSE-36
    (m,) = dump(b32.target, cfg_of(b32)).mappings
    assert (m.va, m.pa, m.page_sizes) == (0xF0000000, 0x3_0040_0000, (4 << 20,))


def test_mode_and_cr3_override() -> None:
    b = Builder(PagingMode.LEVEL4)
    pae = Builder(PagingMode.PAE, table_base=0x800000)
    pae.map(0xC0001000, 0x5000)
    for pa, page in pae.target._pages.items():
        b.target.write_phys(pa * 4096, bytes(page))
    d = dump(b.target, cfg_of(b, cr3=pae.top, mode="pae"))
    assert [m.va for m in d.mappings] == [0xC0001000] and d.config.overridden


def test_paging_off() -> None:
    b = Builder(PagingMode.LEVEL4)
    st = b.state()
    from kdiag._record import replace

    d = dump(b.target, config_from_state(replace(st, cr0=0x11)))
    assert d.mappings == () and d.config.mode is PagingMode.NONE


def test_reverse_lookup_finds_every_alias() -> None:
    b = kernel_like()
    b.map(0x7000, 0x208000, flags=P)  # another alias of the first data page
    hits, _ = reverse_lookup(b.target, cfg_of(b), 0x208010)
    assert [(h.va, h.page_size, h.writable) for h in hits] == [
        (0x7010, 4096, False), (0xFFFF800000208010, 1 << 30, True), (K + 0x8010, 4096, True)]
    assert hits[1].page_va == 0xFFFF800000000000


@pytest.mark.parametrize("text, rng", [("0x1000-0x2000", (0x1000, 0x2000)),
                                        ("0x1000+0x10", (0x1000, 0x1010)),
                                        ("4096..8192", (4096, 8192))])
def test_parse_va_range(text: str, rng: tuple[int, int]) -> None:
    assert parse_va_range(text) == rng


def test_consecutive_page_tables_are_split_into_runs_together() -> None:
    """PTs under consecutive PD entries map one linear range: contiguity and attributes are
    followed across their boundaries; a bad entry in one of them is still reported."""
    b = Builder(PagingMode.LEVEL4)
    b.map_range(0x40000000, 0x1000000, 4 << 20, flags=P | RW | XD)  # 2 PTs, one PA run
    b.map_range(0x40400000, 0x3000000, 4 << 20, flags=P | RW | XD)  # 2 more, PA jumps
    d = dump(b.target, cfg_of(b))
    assert [(m.va, m.size, m.pa, m.pages) for m in d.mappings] == [
        (0x40000000, 8 << 20, None, 2048)]
    assert d.stats.visits == 3 + 4 and d.stats.tables == 3 + 4
    seg = dump(b.target, cfg_of(b), collect_segments=True)  # the one-by-one path agrees
    assert seg.mappings == d.mappings
    assert [(s.va, s.pa) for s in seg.segments or ()] == [
        (0x40000000, 0x1000000), (0x40200000, 0x1200000), (0x40400000, 0x3000000),
        (0x40600000, 0x3200000)]
    b2 = Builder(PagingMode.LEVEL4)
    b2.map_range(0x40000000, 0x1000000, 8 << 20, flags=P | RW | XD)
    (m,) = dump(b2.target, cfg_of(b2)).mappings
    assert (m.pa, m.pages) == (0x1000000, 2048)  # contiguous across all four PTs
    pt = b2.table_for(0x40600000, 3)
    b2.set_entry(pt, 7, b2.read_entry(pt, 7) | 1 << 45)
    d = dump(b2.target, cfg_of(b2, maxphyaddr=40))
    assert [(i.kind, i.va) for i in d.issues] == [(IssueKind.RESERVED, 0x40607000)]
    assert [(m.va, m.end) for m in d.mappings] == [(0x40000000, 0x40607000),
                                                   (0x40608000, 0x40800000)]
