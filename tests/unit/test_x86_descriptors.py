"""Descriptors and gates: known-good raw values decode to the SDM's fields, and round-trip."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdiag.x86.bits import bit_view
from kdiag.x86.descriptors import (
    DescriptorKind,
    Gate,
    Gate64,
    LongSystemDescriptor,
    LongSystemType,
    SegmentDescriptor,
    SystemType,
    decode_descriptor,
    decode_gdt,
    decode_idt,
)
from kdiag.x86.selector import Selector, TableIndicator

# Linux arch/x86/kernel/cpu/common.c gdt_page and rust-osdev x86_64 `linux_kernel_defaults`.
LINUX_GDT = [
    # raw,                 kind,  dpl, bits, base, limit,      long,  writable/readable
    (0x00CF9B000000FFFF, "code", 0, 32, 0, 0xFFFFFFFF, False, True),   # KERNEL32_CS
    (0x00AF9B000000FFFF, "code", 0, 64, 0, 0xFFFFFFFF, True, True),    # KERNEL_CS
    (0x00CF93000000FFFF, "data", 0, None, 0, 0xFFFFFFFF, False, True),  # KERNEL_DS
    (0x00CFFB000000FFFF, "code", 3, 32, 0, 0xFFFFFFFF, False, True),   # USER32_CS
    (0x00CFF3000000FFFF, "data", 3, None, 0, 0xFFFFFFFF, False, True),  # USER_DS
    (0x00AFFB000000FFFF, "code", 3, 64, 0, 0xFFFFFFFF, True, True),    # USER_CS
    # seed 002 (JOS-style 32-bit GDT): code/data with access 0x9A/0x92, G=1, D=1
    (0x00CF9A000000FFFF, "code", 0, 32, 0, 0xFFFFFFFF, False, True),
    (0x00CF92000000FFFF, "data", 0, None, 0, 0xFFFFFFFF, False, True),
    # QEMU probe: CS cache 00209a00 (L=1, limit 0, not accessed)
    (0x00209A0000000000, "code", 0, 64, 0, 0, True, True),
]


@pytest.mark.parametrize("raw,kind,dpl,bits,base,limit,long,rw", LINUX_GDT)
def test_known_code_and_data_descriptors(raw: int, kind: str, dpl: int, bits: int | None,
                                         base: int, limit: int, long: bool, rw: bool) -> None:
    d = SegmentDescriptor.from_raw(raw)
    assert (d.kind, d.dpl, d.code_bits, d.base, d.limit, d.long) == (kind, dpl, bits, base, limit, long)
    assert d.present and d.s
    assert (d.readable if kind == "code" else d.writable) is rw
    assert d.raw == raw


def test_make_builds_the_linux_kernel_code_segment() -> None:
    d = SegmentDescriptor.make(limit=0xFFFFF, type=0xB, dpl=0, long=True, granularity=True)
    assert d.raw == 0x00AF9B000000FFFF


def test_code_type_bits() -> None:
    conforming = SegmentDescriptor.make(type=0b1110, dpl=0)  # code, conforming, readable
    assert conforming.conforming and conforming.readable and not conforming.accessed
    exec_only = SegmentDescriptor.make(type=0b1000)
    assert exec_only.is_code and not exec_only.readable and not exec_only.writable
    expand_down = SegmentDescriptor.make(type=0b0110)
    assert expand_down.expand_down and expand_down.writable


def test_base_and_limit_are_reassembled_from_their_pieces() -> None:
    d = SegmentDescriptor.from_raw(0x12CF9A345678ABCD)
    assert d.base == 0x12345678
    assert d.limit_raw == 0xFABCD
    assert d.limit == 0xFABCDFFF  # G=1


@pytest.mark.parametrize("raw,stype,kind,busy", [
    (0x00008B0000000067 | (0x1000 << 16), SystemType.TSS32_BUSY, "tss", True),
    (0x0000890000000067, SystemType.TSS32_AVAILABLE, "tss", False),
    (0x0000E90000000067, SystemType.TSS32_AVAILABLE, "tss", False),  # seed 002: DPL 3 TSS
    (0x0000820000000FFF, SystemType.LDT, "ldt", False),
    (0x0000810000000067, SystemType.TSS16_AVAILABLE, "tss", False),
])
def test_legacy_system_segments(raw: int, stype: SystemType, kind: str, busy: bool) -> None:
    d = SegmentDescriptor.from_raw(raw)
    assert d.system_type == stype and d.kind == kind and d.busy is busy and not d.s


def test_zero_descriptor_is_null_kind() -> None:
    assert SegmentDescriptor.from_raw(0).kind == DescriptorKind.NULL


# A 64-bit TSS descriptor as Linux builds it (set_tssldt_descriptor): type 9, P, base split
# over both halves. Base 0xfffffe0000003000, limit 0x4087.
TSS64_LO = 0x0000890030004087
TSS64_HI = 0x00000000FFFFFE00


def test_long_system_descriptor_reassembles_the_64_bit_base() -> None:
    d = LongSystemDescriptor.from_raw(TSS64_LO | TSS64_HI << 64)
    assert d.base == 0xFFFFFE0000003000
    assert d.limit == 0x4087
    assert d.type == LongSystemType.TSS64_AVAILABLE and d.kind == "tss" and not d.busy
    assert d.upper_valid and d.present and d.dpl == 0
    made = LongSystemDescriptor.make(0xFFFFFE0000003000, 0x4087)
    assert made.raw == d.raw


def test_long_system_descriptor_upper_type_must_be_zero() -> None:
    d = LongSystemDescriptor.from_raw(TSS64_LO | (TSS64_HI | 0x1F << 40) << 64)
    assert not d.upper_valid


def test_interrupt_gate_64_known_value() -> None:
    # handler 0xffffffff81a00d60, selector 0x10, type 0xE, DPL 0, IST 0 (Linux idt_setup)
    raw = 0x81A08E0000100D60 | 0xFFFFFFFF << 64
    g = Gate64.from_raw(raw)
    assert g.offset == 0xFFFFFFFF81A00D60
    assert g.selector == Selector.from_raw(0x10)
    assert g.type == LongSystemType.INTERRUPT_GATE_64 and g.kind == "interrupt-gate"
    assert (g.dpl, g.ist, g.present) == (0, 0, True)
    assert Gate64.make(0xFFFFFFFF81A00D60, 0x10).raw == raw


def test_gate64_ist_and_trap_and_user_dpl() -> None:
    g = Gate64.make(0xFFFFFFFF80001234, 0x08, LongSystemType.TRAP_GATE_64, dpl=3, ist=2)
    assert (g.ist, g.dpl, g.kind) == (2, 3, DescriptorKind.TRAP_GATE)
    assert g.raw >> 32 & 0x7 == 2


@pytest.mark.parametrize("raw,stype,kind,bits,offset,sel", [
    (0x00108E0000080000 | 0x1234, SystemType.INTERRUPT_GATE_32, "interrupt-gate", 32, 0x00101234, 0x08),
    (0xF0108F0000081234, SystemType.TRAP_GATE_32, "trap-gate", 32, 0xF0101234, 0x08),
    (0x0000850000280000, SystemType.TASK_GATE, "task-gate", 32, 0, 0x28),
    (0x0000860000081234, SystemType.INTERRUPT_GATE_16, "interrupt-gate", 16, 0x1234, 0x08),
    (0x0000EC0300081234, SystemType.CALL_GATE_32, "call-gate", 32, 0x1234, 0x08),
    (0x0000870000081234, SystemType.TRAP_GATE_16, "trap-gate", 16, 0x1234, 0x08),
    # JOS trap.c SETGATE(idt[T_SYSCALL], 0, GD_KT, handler 0xf0103a6e, 3): DPL-3 interrupt gate
    (0xF010EE0000083A6E, SystemType.INTERRUPT_GATE_32, "interrupt-gate", 32, 0xF0103A6E, 0x08),
])
def test_legacy_gates(raw: int, stype: SystemType, kind: str, bits: int, offset: int, sel: int) -> None:
    g = Gate.from_raw(raw)
    assert (g.type, g.kind, g.bits, g.offset, g.selector.raw) == (stype, kind, bits, offset, sel)
    assert g.raw == raw


def test_call_gate_64_in_a_long_mode_gdt_takes_two_slots() -> None:
    g = Gate64.make(0xFFFFFFFF80001000, 0x08, LongSystemType.CALL_GATE_64, dpl=3)
    assert g.raw == 0x8000EC0000081000 | 0xFFFFFFFF << 64  # SDM Figure 5-9: no IST field
    gdt = struct.pack("<Q", 0) + g.raw.to_bytes(16, "little") + struct.pack("<Q", 0x00AF9B000000FFFF)
    entries = decode_gdt(gdt, long_mode=True)
    assert [e.selector for e in entries] == [0x00, 0x08, 0x18]
    assert isinstance(entries[1].descriptor, Gate64)
    assert entries[1].descriptor.kind == DescriptorKind.CALL_GATE and entries[1].size == 16


def test_call_gate_param_count() -> None:
    assert Gate.from_raw(0x0000EC0300081234).param_count == 3


def test_selector_fields() -> None:
    s = Selector.from_raw(0x2B)
    assert (s.index, s.ti, s.rpl, s.offset) == (5, TableIndicator.GDT, 3, 0x28)
    assert Selector.from_raw(0x3).null and not Selector.from_raw(0x8).null
    assert Selector.from_raw(0x0C).ti == TableIndicator.LDT


def test_decode_gdt_long_mode_tss_takes_two_slots() -> None:
    entries = [0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF, TSS64_LO, TSS64_HI, 0x00AFFB000000FFFF]
    data = struct.pack("<6Q", *entries)
    gdt = decode_gdt(data, long_mode=True)
    assert [e.selector for e in gdt] == [0x00, 0x08, 0x10, 0x18, 0x28]
    assert [e.descriptor.kind for e in gdt] == ["null", "code", "data", "tss", "code"]
    assert isinstance(gdt[3].descriptor, LongSystemDescriptor) and not gdt[3].truncated


def test_decode_gdt_legacy_mode_tss_is_8_bytes() -> None:
    data = struct.pack("<3Q", 0, 0x00CF9A000000FFFF, 0x0000890000000067)
    gdt = decode_gdt(data, long_mode=False)
    assert [e.descriptor.kind for e in gdt] == ["null", "code", "tss"]
    assert isinstance(gdt[2].descriptor, SegmentDescriptor)


def test_decode_gdt_truncated_16_byte_descriptor_is_flagged() -> None:
    data = struct.pack("<2Q", 0, TSS64_LO)
    gdt = decode_gdt(data, long_mode=True)
    assert gdt[1].truncated and gdt[1].descriptor.kind == "tss"


def test_decode_gdt_ignores_trailing_partial_slot() -> None:
    assert len(decode_gdt(bytes(8 + 5), long_mode=True)) == 1


def test_decode_descriptor_legacy_gate_in_gdt() -> None:
    assert isinstance(decode_descriptor(struct.pack("<Q", 0x0000EC0300081234), False), Gate)


def test_decode_idt_sizes() -> None:
    g = Gate64.make(0xFFFFFFFF80001000, 0x08)
    idt = decode_idt(struct.pack("<QQ", g.raw & (2**64 - 1), g.raw >> 64) * 3, long_mode=True)
    assert [e.vector for e in idt] == [0, 1, 2] and idt[2].gate == g
    idt32 = decode_idt(struct.pack("<Q", 0x00108E0000081234) * 4, long_mode=False)
    assert len(idt32) == 4 and idt32[3].gate.offset == 0x00101234


def test_bit_view_lists_fields_high_to_low() -> None:
    rows = bit_view(0x00AF9B000000FFFF, SegmentDescriptor.layout)
    names = [r.field.name for r in rows]
    assert names[0] == "BASE_HI" and names[-1] == "LIMIT_LO"
    assert {r.field.name: r.value for r in rows}["L"] == 1
    assert {r.field.name: r.binary for r in rows}["TYPE"] == "1011"


@given(st.integers(0, 2**64 - 1))
def test_segment_descriptor_round_trip(raw: int) -> None:
    assert SegmentDescriptor.from_raw(raw).raw == raw


@given(st.integers(0, 2**64 - 1))
def test_gate_round_trip(raw: int) -> None:
    assert Gate.from_raw(raw).raw == raw


@given(st.integers(0, 2**128 - 1))
def test_16_byte_round_trips(raw: int) -> None:
    assert Gate64.from_raw(raw).raw == raw
    assert LongSystemDescriptor.from_raw(raw).raw == raw


@given(st.integers(0, 2**32 - 1), st.integers(0, 0xFFFFF), st.integers(0, 15), st.booleans(),
       st.integers(0, 3), st.booleans(), st.booleans(), st.booleans())
def test_make_and_decode_agree(base: int, limit: int, typ: int, s: bool, dpl: int, p: bool,
                               long: bool, g: bool) -> None:
    d = SegmentDescriptor.make(base=base, limit=limit, type=typ, s=s, dpl=dpl, present=p,
                               long=long, granularity=g)
    assert (d.base, d.limit_raw, d.type, d.s, d.dpl, d.present, d.long, d.granularity) == (
        base, limit, typ, s, dpl, p, long, g)
