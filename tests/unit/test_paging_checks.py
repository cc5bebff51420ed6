"""Anomaly checks, one constructed bug each, and the table cache's bulk reads."""

from __future__ import annotations

from _paging_build import PCD, PS, PWT, RW, US, XD, Builder, P

from kdiag.errors import MemoryReadError
from kdiag.paging.checks import AnomalyKind, CheckOptions, Severity, check
from kdiag.paging.config import config_from_state
from kdiag.paging.dump import DumpLimits, dump
from kdiag.paging.tables import TableCache
from kdiag.x86.pte import PagingMode

K = 0xFFFFFFFF80000000
WC_PAT = 0x0007050100070406
RAM = ((0, 256 << 20),)


def kinds(b: Builder, opts: CheckOptions | None = None, **cfg: object) -> dict:
    d = dump(b.target, config_from_state(b.state(), **cfg), collect_segments=True)  # type: ignore
    return {a.kind: a for a in check(d, opts or CheckOptions(ram=RAM))}


def healthy() -> Builder:
    b = Builder(PagingMode.LEVEL4)
    sup = P | RW
    b.map_range(K, 0x200000, 0x4000, flags=P, upper=sup)
    b.map_range(K + 0x4000, 0x204000, 0x4000, flags=P | RW | XD, upper=sup)
    b.map(0xFFFF800000000000, 0, 1 << 30, flags=P | RW | XD, upper=sup)
    b.map(0x400000000000, 0x900000, flags=P | US)
    b.map_range(0xFFFFFF0000000000, 0x80000000, 0x400000, 2 << 20, flags=P | RW | XD | PS << 5,
                upper=sup)  # PAT (bit 12) -> PA4 = WC
    return b


def test_healthy_tables_have_no_findings() -> None:
    found = kinds(healthy(), CheckOptions(ram=RAM, framebuffer=(0x80000000, 0x400000)),
                  pat=WC_PAT)
    assert found == {}


def user_path(b: Builder, va: int) -> None:
    """Set U/S on the existing upper-level entries on the path of ``va``."""
    for depth in range(len(b.levels) - 1):
        table = b.table_for(va, depth)
        idx = b.levels[depth].index(va)
        b.set_entry(table, idx, b.read_entry(table, idx) | US)


def test_wx_and_user_kernel() -> None:
    b = healthy()
    b.map(K + 0x10000, 0x300000, flags=P | RW)  # W+X
    b.map(K + 0x11000, 0x301000, flags=P | US)
    user_path(b, K + 0x11000)  # U at every level: the kernel half becomes user-visible
    found = kinds(b, pat=WC_PAT)
    assert found[AnomalyKind.WX].severity is Severity.WARNING
    assert [r.va for r in found[AnomalyKind.WX].regions] == [K + 0x10000]
    assert found[AnomalyKind.USER_KERNEL].severity is Severity.ERROR
    assert [r.pa for r in found[AnomalyKind.USER_KERNEL].regions] == [0x301000]


def test_user_leaf_under_supervisor_upper_levels_is_fine() -> None:
    b = healthy()
    b.map(K + 0x11000, 0x301000, flags=P | US)  # upper levels are supervisor: ANDed away
    assert AnomalyKind.USER_KERNEL not in kinds(b, pat=WC_PAT)


def test_memtype_conflict() -> None:
    b = healthy()
    b.map(K + 0x20000, 0x5000, flags=P | RW | XD | PCD | PWT)  # UC alias of physmap's WB
    a = kinds(b, pat=WC_PAT)[AnomalyKind.MEMTYPE_CONFLICT]
    assert a.severity is Severity.ERROR and a.total == 1
    (r,) = a.regions
    assert r.pa == 0x5000 and r.size == 0x1000 and "UC" in r.note and "WB" in r.note


def test_nx_without_nxe_and_reserved() -> None:
    b = Builder(PagingMode.LEVEL4, nxe=False)
    b.map(0x1000, 0x1000, flags=P | XD)
    b.set_entry(b.top, 3, 0x5000 | P | PS)
    found = kinds(b)
    assert found[AnomalyKind.NX_WITHOUT_NXE].severity is Severity.ERROR
    assert found[AnomalyKind.RESERVED].total == 1


def test_beyond_ram() -> None:
    b = healthy()
    b.map(K + 0x30000, 0x40000000, flags=P | RW | XD)  # WB page past 256 MiB of RAM
    b.map(K + 0x31000, 0xFEE00000, flags=P | RW | XD | PCD | PWT)  # UC MMIO: fine
    b.target.ram_size = 1 << 34  # the fake can read it; the memory map says 256 MiB
    b.set_entry(b.top, 7, (1 << 33) | P | RW)  # a table beyond RAM
    found = kinds(b, pat=WC_PAT)
    assert [r.pa for r in found[AnomalyKind.PAGE_BEYOND_RAM].regions] == [0x40000000]
    assert [r.pa for r in found[AnomalyKind.TABLE_BEYOND_RAM].regions] == [1 << 33]


def test_physmap_1g_page_over_a_ram_hole_only_counts_whole_pages() -> None:
    b = Builder(PagingMode.LEVEL4)
    b.map_range(0xFFFF800000000000, 0, 3 << 30, 1 << 30, flags=P | RW | XD)
    a = kinds(b)[AnomalyKind.PAGE_BEYOND_RAM]
    assert [(r.pa, r.size) for r in a.regions] == [(1 << 30, 2 << 30)]


def test_lower_half_identity_map_left_over() -> None:
    b = healthy()
    b.map_range(0, 0, 4 << 20, 2 << 20, flags=P | RW)
    a = kinds(b, pat=WC_PAT)[AnomalyKind.LOWER_HALF]
    assert a.regions[0].note == "identity" and a.regions[0].va == 0
    opts = CheckOptions(ram=RAM, lower_half=False)
    assert AnomalyKind.LOWER_HALF not in kinds(b, opts, pat=WC_PAT)


def test_framebuffer_not_wc_and_unmapped() -> None:
    b = healthy()
    fb = CheckOptions(ram=RAM, framebuffer=(0x80000000, 0x400000))
    a = kinds(b, fb, pat=0x0007040600070406)[AnomalyKind.FRAMEBUFFER_NOT_WC]  # PA4 = WB
    assert a.regions[0].note == "WB" and a.regions[0].pa == 0x80000000
    assert a.severity is Severity.WARNING
    a = kinds(b, fb)[AnomalyKind.FRAMEBUFFER_NOT_WC]  # the same PAT, only assumed: said, no alarm
    assert a.severity is Severity.INFO and "ASSUMED" in a.summary
    unmapped = CheckOptions(ram=RAM, framebuffer=(0xC0000000, 0x1000))
    assert AnomalyKind.FRAMEBUFFER_UNMAPPED in kinds(b, unmapped, pat=WC_PAT)


def test_wp_off_loops_selfmap_truncation_and_pat_note() -> None:
    b = Builder(PagingMode.LEVEL4, wp=False)
    b.map(0x1000, 0x1000)
    b.set_entry(b.top, 510, b.top | P | RW)
    pd = b.table_for(0x1000, 2)
    b.set_entry(pd, 3, b.top | P | RW)
    found = kinds(b)
    assert found[AnomalyKind.WP_DISABLED].severity is Severity.WARNING
    assert found[AnomalyKind.RECURSIVE].severity is Severity.INFO
    assert found[AnomalyKind.LOOP].severity is Severity.ERROR
    assert found[AnomalyKind.PAT_ASSUMED].severity is Severity.INFO
    d = dump(b.target, config_from_state(b.state()), limits=DumpLimits(max_mappings=1),
             collect_segments=True)
    assert AnomalyKind.TRUNCATED in {a.kind for a in check(d)}


def test_wx_in_32bit_paging_is_only_informative() -> None:
    b = Builder(PagingMode.BITS32)
    b.map(0xC0000000, 0x100000, flags=P | RW)
    a = kinds(b)[AnomalyKind.WX]
    assert a.severity is Severity.INFO and "no XD" in a.summary


def test_pdpte_reserved_bits() -> None:
    b = Builder(PagingMode.PAE)
    b.map(0xC0000000, 0x100000, flags=P | RW)
    b.set_entry(b.top, 3, b.read_entry(b.top, 3) | RW | US)
    a = kinds(b)[AnomalyKind.PDPTE_RESERVED]
    assert a.severity is Severity.WARNING and "#GP" in a.summary


def test_findings_are_sorted_by_severity() -> None:
    b = healthy()
    b.map(K + 0x10000, 0x300000, flags=P | RW)
    b.map(K + 0x11000, 0x301000, flags=P | US)
    user_path(b, K + 0x11000)
    d = dump(b.target, config_from_state(b.state()), collect_segments=True)
    sev = [a.severity for a in check(d, CheckOptions(ram=RAM))]
    order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    assert sev == sorted(sev, key=order.__getitem__)


# -- the table cache ------------------------------------------------------------------------
def test_cache_coalesces_with_gap_and_readahead() -> None:
    b = Builder(PagingMode.LEVEL4)
    for i in range(6):
        b.target.write_u64(0x100000 + i * 0x2000, i + 1)
    cache = TableCache(b.target, gap=0x1000)
    b.target.phys_reads = 0
    cache.prefetch(0x100000 + i * 0x2000 for i in range(6))
    assert b.target.phys_reads == 1 and cache.reads == 1
    assert cache.entry(0x100000 + 5 * 0x2000, 8) == 6
    b.target.table_readahead = 0x10000  # type: ignore[attr-defined]
    cache = TableCache(b.target)
    assert cache.page(0x103000) is not None and len(cache) == 16  # the aligned 64 KiB window


def test_cache_isolates_unreadable_pages() -> None:
    b = Builder(PagingMode.LEVEL4, ram_size=0x104000)
    cache = TableCache(b.target, gap=1 << 20)
    cache.prefetch([0x102000, 0x103000, 0x105000])  # the run crosses the end of RAM
    assert 0x102000 in cache and 0x103000 in cache and 0x105000 not in cache
    assert "outside RAM" in cache.error(0x105000)
    assert cache.table(0x105000, 4096) is None
    try:
        cache.entry(0x105008, 8)
    except MemoryReadError as err:
        assert err.addr == 0x105008
    else:  # pragma: no cover
        raise AssertionError("expected MemoryReadError")


def test_framebuffer_found_in_the_memory_map_is_checked_where_mapped() -> None:
    from argparse import Namespace

    from kdiag.commands.pt import check_options_from_args, framebuffer_from_map
    from qmp_tools.target import MemRange

    mmap = [MemRange(0, 0x9FFFF, "ram", "pc.ram"),
            MemRange(0xA0000, 0xAFFFF, "ram", "vga.vram"),  # the legacy window: not it
            MemRange(0x100000, 0xFFFFFFF, "ram", "pc.ram @0000000000100000"),
            MemRange(0x80000000, 0x80FFFFFF, "ram", "vga.vram"),
            MemRange(0xFEE00000, 0xFEEFFFFF, "i/o", "apic-msi")]
    assert framebuffer_from_map(mmap) == (0x80000000, 16 << 20)
    b = healthy()
    b.target.memory_map = lambda: mmap  # type: ignore[attr-defined]
    args = Namespace(ram=None, ram_size=None, framebuffer=None, kernel_base=None,
                     lower_half=True)
    opts = check_options_from_args(b.target, args)
    assert opts.framebuffer == (0x80000000, 16 << 20) and opts.framebuffer_auto
    assert opts.ram == ((0, 0xA0000), (0xA0000, 0xB0000), (0x100000, 0x10000000),
                        (0x80000000, 0x81000000))
    assert AnomalyKind.FRAMEBUFFER_NOT_WC in kinds(b, opts)  # default PAT: PA4 = WB
    assert kinds(b, opts, pat=WC_PAT) == {}
    unmapped = CheckOptions(ram=RAM, framebuffer=(0xC0000000, 0x1000), framebuffer_auto=True)
    assert AnomalyKind.FRAMEBUFFER_UNMAPPED not in kinds(b, unmapped, pat=WC_PAT)


def test_memtype_conflict_among_many_aliases_is_fast_and_counted_once() -> None:
    b = Builder(PagingMode.LEVEL4)
    b.map(0xFFFF800000000000, 0, 1 << 30, flags=P | RW | XD, upper=P | RW)
    for i in range(2048):  # 2048 UC aliases of 16 frames: one conflicting physical range
        b.map(K + i * 0x1000, 0x100000 + (i % 16) * 0x1000, flags=P | XD | PCD | PWT,
              upper=P | RW)
    a = kinds(b, pat=WC_PAT)[AnomalyKind.MEMTYPE_CONFLICT]
    assert a.total == 1 and [(r.pa, r.size) for r in a.regions] == [(0x100000, 0x10000)]
