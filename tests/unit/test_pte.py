"""Paging-structure entry decoding for every mode, on pinned raw values (SDM Vol. 3A ch. 4)."""

from __future__ import annotations

import pytest

from kdiag.x86.pte import (
    PAGE_1G,
    PAGE_2M,
    PAGE_4K,
    PAGE_4M,
    EntryKind,
    PagingMode,
    PagingParams,
    canonical,
    decode_entry,
    entry_fields,
    is_canonical,
    level_masks,
    mode_from_registers,
    paging_levels,
)

L4 = PagingParams(PagingMode.LEVEL4, nxe=True)
L4_NONX = PagingParams(PagingMode.LEVEL4, nxe=False)
L5 = PagingParams(PagingMode.LEVEL5, nxe=True)
PAE = PagingParams(PagingMode.PAE, nxe=True)
B32 = PagingParams(PagingMode.BITS32, pse=False)
B32PSE = PagingParams(PagingMode.BITS32, pse=True)


@pytest.mark.parametrize("cr0, cr4, efer, mode", [
    (0x00000011, 0x0, 0x0, PagingMode.NONE),
    (0x80000011, 0x0, 0x0, PagingMode.BITS32),
    (0x80000011, 0x10, 0x0, PagingMode.BITS32),
    (0x80000011, 0x20, 0x0, PagingMode.PAE),
    (0x80000011, 0x20, 0x500, PagingMode.LEVEL4),  # TF64 probe: CR4=0x20 EFER=0x500
    (0x80010033, 0x1020, 0xD00, PagingMode.LEVEL5),
    (0x80000010, 0x20, 0x500, PagingMode.NONE),  # PG without PE cannot be
])
def test_mode_from_registers(cr0: int, cr4: int, efer: int, mode: PagingMode) -> None:
    assert mode_from_registers(cr0, cr4, efer) is mode


def test_from_registers_flags() -> None:
    p = PagingParams.from_registers(0x80010033, 0x00700030, 0xD00)
    assert p.mode is PagingMode.LEVEL4 and p.nxe and p.wp and p.smep and p.smap and p.pke
    assert p.pse  # CR4.PSE recorded, irrelevant outside 32-bit paging


@pytest.mark.parametrize("params, names", [
    (B32, ["PD", "PT"]), (PAE, ["PDPT", "PD", "PT"]), (L4, ["PML4", "PDPT", "PD", "PT"]),
    (L5, ["PML5", "PML4", "PDPT", "PD", "PT"]),
])
def test_levels(params: PagingParams, names: list[str]) -> None:
    levels = params.levels
    assert [lv.name for lv in levels] == names
    assert levels[-1].last and levels[-1].shift == 12


def test_level_geometry() -> None:
    pml4, pdpt, pd, pt = paging_levels(PagingMode.LEVEL4)
    assert (pml4.shift, pdpt.shift, pd.shift) == (39, 30, 21)
    assert pdpt.page_size == PAGE_1G and pd.page_size == PAGE_2M and pml4.page_size is None
    assert pml4.index(0xffff800000000000) == 256 and pt.index(0x1234567000) == 0x167
    pdpt3, pd3, _ = paging_levels(PagingMode.PAE)
    assert pdpt3.entries == 4 and pdpt3.table_size == 32 and not pdpt3.access_bits
    assert pdpt3.index(0xC0000000) == 3
    pd32, pt32 = paging_levels(PagingMode.BITS32, True)
    assert pd32.entries == 1024 and pd32.entry_size == 4 and pd32.page_size == PAGE_4M
    assert pd32.index(0xF0000000) == 0x3C0
    assert paging_levels(PagingMode.BITS32, False)[0].page_size is None


# -- IA-32e entries -----------------------------------------------------------------------
def test_4level_pte_pinned() -> None:
    e = decode_entry(0x8000000000203063, L4, 3)  # XD, frame 0x203000, D A RW P
    assert e.kind is EntryKind.PAGE and e.addr == 0x203000 and e.page_size == PAGE_4K
    assert e.present and e.writable and not e.user and e.accessed and e.dirty and e.nx
    assert not e.reserved and not e.pat and e.pat_index == 0


def test_pte_pat_bit_is_bit_7() -> None:
    e = decode_entry(0x0000000000300083, L4, 3)  # bit 7 in a PTE is PAT, not PS
    assert e.kind is EntryKind.PAGE and e.pat and e.pat_index == 4 and not e.ps


def test_2m_page_pat_bit_is_bit_12() -> None:
    e = decode_entry(0x0000000000401083 | 0x18, L4, 2)  # PS, PAT(12), PCD, PWT
    assert e.kind is EntryKind.PAGE and e.page_size == PAGE_2M
    assert e.addr == 0x400000 and e.pat and e.pcd and e.pwt and e.pat_index == 7


def test_1g_page() -> None:
    e = decode_entry(0x80000000C0000083, L4, 1)
    assert e.kind is EntryKind.PAGE and e.addr == 0xC0000000 and e.page_size == PAGE_1G


def test_1g_page_reserved_bits_29_13() -> None:
    e = decode_entry(0x0000000040100083, L4, 1)  # bit 20 set inside a 1 GiB frame field
    assert e.kind is EntryKind.PAGE and e.reserved == 1 << 20


def test_2m_page_reserved_bits_20_13() -> None:
    assert decode_entry(0x0000000000202083, L4, 2).reserved == 1 << 13


def test_1g_without_gbpages_is_reserved() -> None:
    p = PagingParams(PagingMode.LEVEL4, nxe=True, gbpages=False)
    e = decode_entry(0x0000000040000083, p, 1)
    assert e.reserved & 0x80 and e.ps_reserved


def test_pml4_ps_reserved() -> None:
    e = decode_entry(0x0000000000001083, L4, 0)
    assert e.ps_reserved and e.reserved == 0x80


def test_xd_reserved_without_nxe() -> None:
    e = decode_entry(0x8000000000001003, L4_NONX, 0)
    assert e.nx_reserved and e.reserved == 1 << 63
    assert not decode_entry(0x8000000000001003, L4, 0).reserved


def test_maxphyaddr_reserved() -> None:
    p = PagingParams(PagingMode.LEVEL4, nxe=True, maxphyaddr=40)
    assert decode_entry(0x0000010000001003, p, 3).reserved == 1 << 40
    assert not decode_entry(0x0000010000001003, L4, 3).reserved


def test_ignored_high_bits_not_reserved() -> None:
    assert not decode_entry(0x7FF0000000001003, L4, 3).reserved  # 62:52 ignored / keys


def test_pkey() -> None:
    assert decode_entry(0x2800000000001003, L4, 3).pkey == 5


def test_table_entry() -> None:
    e = decode_entry(0x0000000000102027, L4, 0)
    assert e.kind is EntryKind.TABLE and e.addr == 0x102000 and e.user and e.accessed
    assert e.page_size == 0 and not e.dirty and not e.global_


def test_not_present_keeps_raw() -> None:
    e = decode_entry(0xDEADBEEF00000000, L4, 3)
    assert e.kind is EntryKind.NOT_PRESENT and e.raw == 0xDEADBEEF00000000 and e.addr == 0
    assert not e.reserved


def test_5level_pml5_ps_reserved() -> None:
    assert decode_entry(0x0000000000001083, L5, 0).ps_reserved
    assert decode_entry(0x0000000000001003, L5, 0).kind is EntryKind.TABLE


# -- PAE ----------------------------------------------------------------------------------
def test_pae_pdpte() -> None:
    e = decode_entry(0x0000000000105001, PAE, 0)
    assert e.kind is EntryKind.TABLE and e.addr == 0x105000 and not e.reserved


@pytest.mark.parametrize("bit", [52, 62, 63])
def test_pae_pdpte_reserved_bits(bit: int) -> None:
    assert decode_entry(0x0000000000105001 | (1 << bit), PAE, 0).reserved == 1 << bit


@pytest.mark.parametrize("bit", [1, 2, 6, 7, 8])
def test_pae_pdpte_bits_qemu_ignores(bit: int) -> None:
    """SDM-reserved, but QEMU's walker ignores them: flagged, not fatal."""
    e = decode_entry(0x0000000000105001 | (1 << bit), PAE, 0)
    assert e.reserved == 0 and e.soft_reserved == 1 << bit and e.kind is EntryKind.TABLE


def test_pae_pdpte_accessed_bit_tolerated() -> None:
    """QEMU sets A in PDPTEs it uses (seen live: 0x201021)."""
    e = decode_entry(0x0000000000201021, PAE, 0)
    assert e.reserved == 0 and e.soft_reserved == 0


def test_pae_pde_2m_and_high_bits_reserved() -> None:
    e = decode_entry(0x8000000000600083, PAE, 1)
    assert e.kind is EntryKind.PAGE and e.addr == 0x600000 and e.page_size == PAGE_2M
    assert decode_entry(0x0010000000001003, PAE, 2).reserved == 1 << 52  # PAE: 62:M reserved


# -- 32-bit ------------------------------------------------------------------------------------
def test_32bit_pde_ps_ignored_without_pse() -> None:
    e = decode_entry(0x00400083, B32, 0)
    assert e.kind is EntryKind.TABLE and e.addr == 0x400000 and not e.reserved


def test_32bit_4m_page() -> None:
    e = decode_entry(0x00400083, B32PSE, 0)
    assert e.kind is EntryKind.PAGE and e.addr == 0x400000 and e.page_size == PAGE_4M
    assert not e.nx and e.pkey == 0


def test_32bit_pse36_high_address() -> None:
    e = decode_entry(0xF0402083 | (0x3 << 13), B32PSE, 0)  # bits 14:13 -> PA bits 33:32
    assert e.addr == 0x3_F0400000


def test_32bit_pse_bit21_reserved() -> None:
    assert decode_entry(0x00600083, B32PSE, 0).reserved == 1 << 21


def test_32bit_pse36_limited_by_maxphyaddr() -> None:
    p = PagingParams(PagingMode.BITS32, pse=True, maxphyaddr=36)
    assert decode_entry(0x00400083 | (1 << 17), p, 0).reserved == 1 << 17  # PA bit 36


def test_32bit_pte() -> None:
    e = decode_entry(0xB8007, B32, 1)
    assert e.kind is EntryKind.PAGE and e.addr == 0xB8000 and e.user and e.writable


# -- helpers -------------------------------------------------------------------------------
@pytest.mark.parametrize("va, bits, ok", [
    (0x00007FFFFFFFFFFF, 48, True), (0x0000800000000000, 48, False),
    (0xFFFF800000000000, 48, True), (0xFFFF7FFFFFFFFFFF, 48, False),
    (0x01FFFFFFFFFFFFFF, 57, False), (0x00FFFFFFFFFFFFFF, 57, True), (0xFF00000000000000, 57, True),
    (0x0000800000000000, 57, True),
])
def test_canonical(va: int, bits: int, ok: bool) -> None:
    assert is_canonical(va, bits) is ok


def test_canonical_sign_extends() -> None:
    assert canonical(0x800000000000, 48) == 0xFFFF800000000000
    assert canonical(0x7FFFFFFFF000, 48) == 0x7FFFFFFFF000
    assert canonical(0x100000000000000, 57) == 0xFF00000000000000


def test_masks_are_cached() -> None:
    assert level_masks(L4) is level_masks(PagingParams(PagingMode.LEVEL4, nxe=True))


def test_fields_bochs_order() -> None:
    leaf = decode_entry(0x8000000000203063, L4, 3)
    assert [f.name for f in entry_fields(leaf)] == ["XD", "G", "PAT", "D", "A", "PCD", "PWT",
                                                    "US", "RW", "P"]
    big = decode_entry(0x0000000000400083, L4, 2)
    assert [f.name for f in entry_fields(big)][:3] == ["XD", "PS", "G"]
    pdpte = decode_entry(0x105001, PAE, 0)
    assert [f.name for f in entry_fields(pdpte)] == ["PCD", "PWT", "P"]
    pde32 = decode_entry(0x1007, B32, 0)
    assert "XD" not in [f.name for f in entry_fields(pde32)]
