"""TSS decoders: the 64-bit TSS's RSP/IST slots and the 32-bit TSS's named fields."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdiag.x86.tss import TSS_SIZE, Tss32, Tss64


def test_tss64_offsets_follow_figure_7_11() -> None:
    data = bytearray(TSS_SIZE)
    struct.pack_into("<Q", data, 4, 0xFFFF800000010000)  # RSP0
    struct.pack_into("<Q", data, 36, 0xFFFF800000020000)  # IST1
    struct.pack_into("<Q", data, 84, 0xFFFF800000080000)  # IST7
    struct.pack_into("<H", data, 102, 0x68)
    t = Tss64.from_bytes(bytes(data))
    assert t.rsp == (0xFFFF800000010000, 0, 0)
    assert t.ist_entry(1) == 0xFFFF800000020000 and t.ist_entry(7) == 0xFFFF800000080000
    assert t.iopb == 0x68 and not t.io_bitmap_present(0x67)
    assert t.raw == bytes(data)


def test_tss64_make_round_trip() -> None:
    t = Tss64.make(rsp=(1, 2, 3), ist=(4, 5, 6, 7, 8, 9, 10), iopb=0x1000)
    assert Tss64.from_bytes(t.raw) == t
    assert t.rsp == (1, 2, 3) and t.ist == (4, 5, 6, 7, 8, 9, 10) and t.iopb == 0x1000


def test_ist_index_out_of_range() -> None:
    with pytest.raises(ValueError):
        Tss64.make().ist_entry(0)


def test_short_tss_is_rejected() -> None:
    with pytest.raises(ValueError):
        Tss64.from_bytes(bytes(100))


def test_tss32_fields_by_sdm_name() -> None:
    t = Tss32.make(esp0=0xF0118000, ss0=0x10, cr3=0x104000, iopb=104, t=1, ldt=0x30)
    assert t.esp == (0xF0118000, 0, 0) and t.ss == (0x10, 0, 0)
    assert t.fields["CR3"] == 0x104000 and t.fields["LDT"] == 0x30
    assert t.debug_trap and t.iopb == 104


@given(st.binary(min_size=TSS_SIZE, max_size=TSS_SIZE))
def test_raw_is_kept(data: bytes) -> None:
    assert Tss64.from_bytes(data).raw == data
    assert Tss32.from_bytes(data).raw == data
