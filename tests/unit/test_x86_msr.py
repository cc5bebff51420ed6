"""MSR names and the STAR/APIC_BASE/FMASK decoders."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdiag.x86.msr import (
    AddressMsr,
    ApicBase,
    Fmask,
    Msr,
    Star,
    decode_msr,
    msr_index,
    msr_name,
)
from kdiag.x86.registers import Efer


def test_linux_star_selectors() -> None:
    # Linux syscall_init: STAR = __USER32_CS << 48 | __KERNEL_CS << 32 = 0x0023001000000000
    s = Star.from_raw(0x0023001000000000)
    assert (s.syscall_cs, s.syscall_ss) == (0x10, 0x18)
    assert (s.sysret_cs32, s.sysret_ss, s.sysret_cs64) == (0x23, 0x2B, 0x33)


def test_star_rpl_handling() -> None:
    s = Star.from_raw(0x001B000B00000000)  # kernel 0x08 written with RPL 3 by mistake
    assert s.syscall_cs == 0x08 and s.sysret_cs64 == 0x2B and s.sysret_ss == 0x23


def test_star_legacy_eip() -> None:
    assert Star.from_raw(0x0023001000101234).syscall_eip == 0x101234


def test_apic_base() -> None:
    a = ApicBase.from_raw(0xFEE00900)
    assert a.bsp and a.enabled and not a.x2apic and a.base == 0xFEE00000
    assert ApicBase.from_raw(0xFEE00D00).x2apic


def test_fmask() -> None:
    f = Fmask.from_raw(0x47700)  # Linux: TF|DF|IF|IOPL|NT|AC
    assert f.clears_if and f.mask.iopl == 3


@pytest.mark.parametrize("text,index", [
    ("pat", 0x277), ("IA32_PAT", 0x277), ("sfmask", 0xC0000084), ("FMASK", 0xC0000084),
    ("0xc0000080", 0xC0000080), ("27", 27), ("apic_base", 0x1B), ("kernel_gs_base", 0xC0000102),
])
def test_msr_index(text: str, index: int) -> None:
    assert msr_index(text) == index


@pytest.mark.parametrize("text", ["nonsense", "0x100000000", "-1"])
def test_msr_index_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        msr_index(text)


def test_msr_name() -> None:
    assert msr_name(0x277) == "IA32_PAT" and msr_name(0x1234) == "MSR_0x1234"


def test_decode_msr_dispatch() -> None:
    assert isinstance(decode_msr(Msr.IA32_STAR, 0), Star)
    assert isinstance(decode_msr(Msr.IA32_EFER, 0x500), Efer)
    lstar = decode_msr(Msr.IA32_LSTAR, 0x0000800000000000)
    assert isinstance(lstar, AddressMsr) and not lstar.canonical
    assert decode_msr(0x10, 1234) == 1234


@given(st.integers(0, 2**64 - 1))
def test_round_trips(raw: int) -> None:
    assert Star.from_raw(raw).raw == raw
    assert ApicBase.from_raw(raw).raw == raw
