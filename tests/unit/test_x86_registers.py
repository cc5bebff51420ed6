"""CR0/CR3/CR4/EFER/RFLAGS: typical raw values from real machines decode to the SDM's names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdiag.x86.bits import Field, bit_view, is_canonical, pack, sign_extend, unpack
from kdiag.x86.registers import (
    Cr0,
    Cr0Flag,
    Cr3,
    Cr4,
    Cr4Flag,
    Efer,
    EferFlag,
    Rflags,
    RflagsFlag,
)


@pytest.mark.parametrize("raw,flags", [
    (0x80000011, Cr0Flag.PG | Cr0Flag.ET | Cr0Flag.PE),  # QEMU probe, multiboot long mode
    (0x80010033, Cr0Flag.PG | Cr0Flag.WP | Cr0Flag.NE | Cr0Flag.ET | Cr0Flag.MP | Cr0Flag.PE),  # OVMF
    (0x60000010, Cr0Flag.CD | Cr0Flag.NW | Cr0Flag.ET),  # reset value
])
def test_cr0(raw: int, flags: Cr0Flag) -> None:
    cr0 = Cr0.from_raw(raw)
    assert cr0.flags == flags and cr0.raw == raw and cr0.reserved_bits == 0


def test_cr0_properties() -> None:
    cr0 = Cr0.from_raw(0x80010033)
    assert cr0.paging and cr0.protected and cr0.write_protect
    assert Cr0Flag.WP in cr0 and Cr0Flag.CD not in cr0


@pytest.mark.parametrize("raw,flags", [
    (0x00000668, Cr4Flag.OSXMMEXCPT | Cr4Flag.OSFXSR | Cr4Flag.MCE | Cr4Flag.PAE | Cr4Flag.DE),
    (0x00000020, Cr4Flag.PAE),
    (0x003606F0, Cr4Flag.SMAP | Cr4Flag.SMEP | Cr4Flag.OSXSAVE | Cr4Flag.PCIDE
     | Cr4Flag.OSXMMEXCPT | Cr4Flag.OSFXSR | Cr4Flag.PGE | Cr4Flag.MCE | Cr4Flag.PAE | Cr4Flag.PSE),
])
def test_cr4(raw: int, flags: Cr4Flag) -> None:
    assert Cr4.from_raw(raw).flags == flags


def test_reserved_bits_are_kept_in_raw_and_reported() -> None:
    cr4 = Cr4.from_raw(1 << 15 | 0x20)
    assert cr4.raw == 0x8020 and cr4.reserved_bits == 1 << 15


@pytest.mark.parametrize("raw,flags", [
    (0x500, EferFlag.LMA | EferFlag.LME),
    (0xD01, EferFlag.NXE | EferFlag.LMA | EferFlag.LME | EferFlag.SCE),
    (0xD00, EferFlag.NXE | EferFlag.LMA | EferFlag.LME),
])
def test_efer(raw: int, flags: EferFlag) -> None:
    efer = Efer.from_raw(raw)
    assert efer.flags == flags
    assert efer.long_mode_active and efer.nx_enabled is bool(raw & 0x800)
    assert efer.syscall_enabled is bool(raw & 1)


def test_rflags_iopl_and_fixed_bit() -> None:
    r = Rflags.from_raw(0x3246)  # IOPL=3, IF, ZF, PF, bit 1
    assert r.iopl == 3 and r.interrupts_enabled
    assert r.flags == RflagsFlag.IF | RflagsFlag.ZF | RflagsFlag.PF
    assert r.reserved_bits == 0


def test_cr3_without_and_with_pcid() -> None:
    c = Cr3.from_raw(0x000000000F801018)
    assert c.base == 0xF801000 and c.pcid is None and c.pcd and c.pwt
    p = Cr3.from_raw(0x000000000F801005, pcide=True)
    assert p.base == 0xF801000 and p.pcid == 5 and not p.pwt
    assert [f.name for f in p.layout][0] == "PCID"
    assert Cr3.from_raw(0xC0104FE0).pae_base == 0xC0104FE0


@given(st.integers(0, 2**64 - 1))
def test_round_trips(raw: int) -> None:
    for cls in (Cr0, Cr4, Efer, Rflags):
        assert cls.from_raw(raw).raw == raw
    assert Cr3.from_raw(raw).raw == raw


def test_layouts_name_each_flag_at_its_bit() -> None:
    rows = {r.field.name: r.value for r in bit_view(0x80000011, Cr0.LAYOUT)}
    assert rows["PG"] == 1 and rows["WP"] == 0 and rows["PE"] == 1
    assert [f for f in Rflags.LAYOUT if f.name == "IOPL"][0].bits == "12-13"


def test_field_pack_unpack_and_overflow() -> None:
    layout = (Field("A", 0, 3), Field("B", 8, 8))
    assert pack({"A": 5, "B": 1}, layout) == 0x105
    assert unpack(0x105, layout) == {"A": 5, "B": 1}
    with pytest.raises(ValueError):
        pack({"A": 16}, layout)
    with pytest.raises(ValueError):
        pack({"C": 1}, layout)


@pytest.mark.parametrize("va,ok", [
    (0x00007FFFFFFFFFFF, True), (0xFFFF800000000000, True), (0x0000800000000000, False),
    (0xFFFFFFFF80000000, True), (0x1234567812345678, False), (0, True),
])
def test_canonical(va: int, ok: bool) -> None:
    assert is_canonical(va) is ok


def test_sign_extend() -> None:
    assert sign_extend(0x800000000000, 48) == 0xFFFF800000000000
    assert sign_extend(0x7FFFFFFFFFFF, 48) == 0x7FFFFFFFFFFF
