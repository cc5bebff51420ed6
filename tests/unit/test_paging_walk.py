"""Single-address walks: the levels shown, rights, memory type, and every way a walk stops."""

from __future__ import annotations

import pytest
from _paging_build import PAT_LARGE, PCD, PS, PWT, RW, US, XD, Builder, P

from kdiag._record import replace
from kdiag.errors import TranslationError
from kdiag.paging.config import (
    PAT_DEFAULT,
    PAT_FROM_MSR,
    PAT_GIVEN,
    config_from_state,
    parse_mode,
    resolve_config,
)
from kdiag.paging.translate import translate
from kdiag.paging.walker import StopReason, walk
from kdiag.target.fake import FakeTarget
from kdiag.x86.pat import MemoryType
from kdiag.x86.pte import PagingMode

WC_PAT = 0x0007050100070406


def test_4level_walk_records_every_level() -> None:
    b = Builder(PagingMode.LEVEL4)
    b.map(0xFFFFFFFF80001000, 0x201000, flags=P | XD, upper=P | RW)
    w = walk(b.target, 0xFFFFFFFF80001234, config_from_state(b.state()))
    assert w.ok and w.pa == 0x201234 and w.page_size == 4096 and w.page_base == 0x201000
    assert [(s.level.name, s.index) for s in w.steps] == [("PML4", 511), ("PDPT", 510),
                                                          ("PD", 0), ("PT", 1)]
    assert w.steps[0].table == b.top and w.steps[0].entry_addr == b.top + 511 * 8
    assert w.access is not None and w.access.rwx == "r--" and not w.access.user
    assert w.memtype is MemoryType.WB


def test_kernel_write_with_wp_off() -> None:
    b = Builder(PagingMode.LEVEL4, wp=False)
    b.map(0x1000, 0x1000, flags=P)
    w = walk(b.target, 0x1000, config_from_state(b.state()))
    assert w.access is not None and not w.access.writable and w.access.kernel_write


@pytest.mark.parametrize("flags, large, pat, expected", [
    (P, False, WC_PAT, MemoryType.WB),
    (P | PWT, False, WC_PAT, MemoryType.WT),
    (P | PCD, False, WC_PAT, MemoryType.UC_MINUS),
    (P | PS, False, WC_PAT, MemoryType.WC),  # PTE bit 7 = PAT
    (P | PAT_LARGE, True, WC_PAT, MemoryType.WC),  # large page: bit 12
    (P | PAT_LARGE | PWT, True, WC_PAT, MemoryType.WP),
    (P | PS, False, None, MemoryType.WB),  # power-on default: PA4 = WB
])
def test_memory_type(flags: int, large: bool, pat: int | None, expected: MemoryType) -> None:
    b = Builder(PagingMode.LEVEL4)
    b.map(0x200000, 0x400000, (2 << 20) if large else 4096, flags=flags)
    w = walk(b.target, 0x200000, config_from_state(b.state(), pat=pat))
    assert w.memtype is expected


def test_pat_read_from_msr_or_default_with_reason() -> None:
    b = Builder(PagingMode.LEVEL4, msrs={0x277: WC_PAT})
    cfg = resolve_config(b.target)
    assert (cfg.pat, cfg.pat_source, cfg.pat_note) == (WC_PAT, PAT_FROM_MSR, None)
    b2 = Builder(PagingMode.LEVEL4)
    cfg = resolve_config(b2.target)
    assert cfg.pat == 0x0007040600070406 and cfg.pat_source == PAT_DEFAULT
    assert cfg.pat_note and "power-on default" in cfg.pat_note
    b3 = Builder(PagingMode.LEVEL4, msrs={0x277: 0x02})  # reserved encoding: not trusted
    assert resolve_config(b3.target).pat_source == PAT_DEFAULT
    assert resolve_config(b2.target, pat=WC_PAT).pat_source == PAT_GIVEN


@pytest.mark.parametrize("mode", [PagingMode.BITS32, PagingMode.PAE, PagingMode.LEVEL4,
                                  PagingMode.LEVEL5])
def test_not_present_names_the_level(mode: PagingMode) -> None:
    b = Builder(mode)
    b.map(0x400000, 0x1000)
    w = walk(b.target, 0x401000, config_from_state(b.state()))
    assert w.stop is StopReason.NOT_PRESENT and w.stop_level is not None
    assert w.stop_level.name == "PT" and "PT[1]" in w.detail
    with pytest.raises(TranslationError) as err:
        translate(b.target, 0x401000)
    assert (err.value.va, err.value.level, err.value.reason) == (0x401000, "PT", "not-present")


def test_nx_without_nxe_stops_with_its_own_reason() -> None:
    b = Builder(PagingMode.LEVEL4, nxe=False)
    b.map(0x1000, 0x1000, flags=P | XD)
    w = walk(b.target, 0x1000, config_from_state(b.state()))
    assert w.stop is StopReason.NX_RESERVED and "EFER.NXE=0" in w.detail


def test_ps_in_pml4_is_reserved() -> None:
    b = Builder(PagingMode.LEVEL4)
    b.set_entry(b.top, 1, 0x40000000 | P | PS)
    w = walk(b.target, 1 << 39, config_from_state(b.state()))
    assert w.stop is StopReason.PS_RESERVED and w.stop_level.name == "PML4"  # type: ignore


def test_reserved_high_bits_with_maxphyaddr() -> None:
    b = Builder(PagingMode.LEVEL4)
    b.map(0x1000, 0x1000)
    pt = b.table_for(0x1000, 3)
    b.set_entry(pt, 2, (1 << 45) | P)
    assert walk(b.target, 0x2000, config_from_state(b.state())).ok
    w = walk(b.target, 0x2000, config_from_state(b.state(), maxphyaddr=40))
    assert w.stop is StopReason.RESERVED and "45" in w.detail


def test_non_canonical_and_out_of_range() -> None:
    b = Builder(PagingMode.LEVEL4)
    w = walk(b.target, 0x0000800000000000, config_from_state(b.state()))
    assert w.stop is StopReason.NON_CANONICAL and w.steps == () and w.stop_level is None
    b32 = Builder(PagingMode.BITS32)
    w = walk(b32.target, 1 << 32, config_from_state(b32.state()))
    assert w.stop is StopReason.OUT_OF_RANGE


def test_unreadable_table() -> None:
    b = Builder(PagingMode.LEVEL4, ram_size=64 << 20)
    b.map(0x1000, 0x1000)
    pd = b.table_for(0x1000, 2)
    b.set_entry(pd, 0, (1 << 40) | P | RW)
    w = walk(b.target, 0x1000, config_from_state(b.state()))
    assert w.stop is StopReason.UNREADABLE and w.stop_level.name == "PD"  # type: ignore
    assert "cannot be read" in w.detail
    with pytest.raises(TranslationError):
        translate(b.target, 0x1000)


def test_recursive_entry_is_marked() -> None:
    b = Builder(PagingMode.LEVEL4)
    b.set_entry(b.top, 510, b.top | P | RW)
    va = 0xFFFFFF7FBFDFE000  # PML4[510] x4: the PML4 itself
    w = walk(b.target, va, config_from_state(b.state()))
    assert w.ok and w.pa == b.top
    assert all(s.note and "recursive self-map" in s.note for s in w.steps[:-1])


def test_pae_pdpte_reserved_bits_are_followed_and_noted() -> None:
    b = Builder(PagingMode.PAE)
    b.map(0x1000, 0x5000)
    raw = b.read_entry(b.top, 0)
    b.set_entry(b.top, 0, raw | RW | US)
    w = walk(b.target, 0x1000, config_from_state(b.state()))
    assert w.ok and w.steps[0].note and "#GP" in w.steps[0].note


def test_paging_off_is_identity() -> None:
    b = Builder(PagingMode.LEVEL4)
    st = replace(b.state(), cr0=0x11)
    assert translate(b.target, 0x123456, st) == 0x123456
    w = walk(b.target, 0x123456, config_from_state(st))
    assert w.ok and w.pa == 0x123456 and "paging disabled" in w.detail


def test_translate_uses_the_target_state_and_reads_entries_only() -> None:
    b = Builder(PagingMode.LEVEL4)
    b.map_range(0x10000, 0x30000, 0x3000)
    b.target.phys_reads = 0
    assert translate(b.target, 0x11008) == 0x31008
    assert b.target.phys_reads == 4  # one 8-byte entry per level, no PAT MSR
    assert b.target.read_virt(0x10ff8, 16) == bytes(16)  # FakeTarget.read_virt through it


@pytest.mark.parametrize("text, mode, pse", [("32", PagingMode.BITS32, None),
                                              ("32-pse", PagingMode.BITS32, True),
                                              ("32-nopse", PagingMode.BITS32, False),
                                              ("PAE", PagingMode.PAE, None),
                                              ("4level", PagingMode.LEVEL4, None),
                                              ("5-level", PagingMode.LEVEL5, None)])
def test_parse_mode(text: str, mode: PagingMode, pse: bool | None) -> None:
    assert parse_mode(text) == (mode, pse)


def test_mode_override_forces_pse() -> None:
    b = Builder(PagingMode.BITS32, pse=False)
    b.set_entry(b.top, 0x3C0, 0x00400000 | P | RW | PS)
    st = b.state()
    # without PSE the entry is a PT pointer to 0x400000 (zeros): not present
    assert walk(b.target, 0xF0001000, config_from_state(st)).stop is StopReason.NOT_PRESENT
    w = walk(b.target, 0xF0001000, config_from_state(st, mode="32-pse"))
    assert w.ok and w.pa == 0x401000 and w.page_size == 4 << 20


def test_walk_on_an_empty_fake() -> None:
    from kdiag.x86.state import CpuState

    t = FakeTarget(CpuState(gpr={}, cr0=0x80000011, cr2=0, cr3=0x1000, cr4=0x20, efer=0x500))
    w = walk(t, 0x1000, resolve_config(t))
    assert w.stop is StopReason.NOT_PRESENT and w.stop_level.name == "PML4"  # type: ignore


def test_walks_sharing_a_cache_read_each_table_page_once() -> None:
    from kdiag.paging.tables import TableCache

    b = Builder(PagingMode.LEVEL4)
    b.map_range(0x10000, 0x30000, 0x3000)
    cfg = config_from_state(b.state())
    cache = TableCache(b.target)
    b.target.phys_reads = 0
    for va in (0x10000, 0x11000, 0x12008, 0x10010):
        assert walk(b.target, va, cfg, cache=cache).ok
    assert b.target.phys_reads == 4 and len(cache) == 4  # one read per table page, kept
