"""Model-specific registers kdiag knows by name, and decoders for the system-call and base MSRs.

Indices and names follow Intel SDM Vol. 4 ("Model-Specific Registers", Table 2-2) and the
SYSCALL/SYSRET description in Vol. 2B (SYSCALL, SYSRET) and Vol. 3A 5.8.8 "Fast System Calls in
64-Bit Mode". AMD calls IA32_FMASK ``SFMASK``; both names are accepted.

- :class:`Star`: IA32_STAR. SYSCALL loads CS from STAR[47:32] (RPL forced to 0) and SS from
  STAR[47:32]+8. SYSRET loads SS from STAR[63:48]+8 and CS from STAR[63:48]+16 (64-bit return)
  or STAR[63:48] (compatibility-mode return), all with RPL 3. That is why a GDT must place the
  user *data* descriptor right before the 64-bit user *code* descriptor.
- :class:`ApicBase`: IA32_APIC_BASE (Vol. 3A 11.4.4, Figure 11-5): BSP, EXTD (x2APIC), EN, base.
- :class:`Fmask`: IA32_FMASK, the RFLAGS bits SYSCALL clears.
- ``IA32_LSTAR``/``IA32_CSTAR``/``IA32_FS_BASE``/``IA32_GS_BASE``/``IA32_KERNEL_GS_BASE``:
  linear addresses (:class:`AddressMsr`), which must be canonical.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from kdiag.x86.bits import Field, Layout, is_canonical, unpack
from kdiag.x86.registers import Efer, Rflags


class Msr(IntEnum):
    """MSR indices (SDM Vol. 4 Table 2-2)."""

    IA32_TSC = 0x10
    IA32_APIC_BASE = 0x1B
    IA32_FEATURE_CONTROL = 0x3A
    IA32_MTRRCAP = 0xFE
    IA32_SYSENTER_CS = 0x174
    IA32_SYSENTER_ESP = 0x175
    IA32_SYSENTER_EIP = 0x176
    IA32_MISC_ENABLE = 0x1A0
    IA32_PAT = 0x277
    IA32_MTRR_DEF_TYPE = 0x2FF
    IA32_EFER = 0xC0000080
    IA32_STAR = 0xC0000081
    IA32_LSTAR = 0xC0000082
    IA32_CSTAR = 0xC0000083
    IA32_FMASK = 0xC0000084
    IA32_FS_BASE = 0xC0000100
    IA32_GS_BASE = 0xC0000101
    IA32_KERNEL_GS_BASE = 0xC0000102
    IA32_TSC_AUX = 0xC0000103


# Short names a user types (``kd msr pat``); the IA32_ prefix is optional everywhere.
MSR_ALIASES = {
    "PAT": Msr.IA32_PAT, "EFER": Msr.IA32_EFER, "STAR": Msr.IA32_STAR, "LSTAR": Msr.IA32_LSTAR,
    "CSTAR": Msr.IA32_CSTAR, "FMASK": Msr.IA32_FMASK, "SFMASK": Msr.IA32_FMASK,
    "APIC_BASE": Msr.IA32_APIC_BASE, "APICBASE": Msr.IA32_APIC_BASE,
    "FS_BASE": Msr.IA32_FS_BASE, "GS_BASE": Msr.IA32_GS_BASE,
    "KERNEL_GS_BASE": Msr.IA32_KERNEL_GS_BASE, "K_GS_BASE": Msr.IA32_KERNEL_GS_BASE,
    "KERNELGSBASE": Msr.IA32_KERNEL_GS_BASE, "TSC": Msr.IA32_TSC, "TSC_AUX": Msr.IA32_TSC_AUX,
    "SYSENTER_CS": Msr.IA32_SYSENTER_CS, "SYSENTER_ESP": Msr.IA32_SYSENTER_ESP,
    "SYSENTER_EIP": Msr.IA32_SYSENTER_EIP, "MISC_ENABLE": Msr.IA32_MISC_ENABLE,
    "MTRRCAP": Msr.IA32_MTRRCAP, "MTRR_DEF_TYPE": Msr.IA32_MTRR_DEF_TYPE,
    "FEATURE_CONTROL": Msr.IA32_FEATURE_CONTROL,
}


def msr_index(text: str) -> int:
    """``"pat"``, ``"IA32_PAT"``, ``"0x277"`` or ``"631"`` -> 0x277. Raises ValueError."""
    t = text.strip()
    key = t.upper().removeprefix("IA32_").removeprefix("MSR_")
    if key in MSR_ALIASES:
        return int(MSR_ALIASES[key])
    try:
        value = int(t, 0)
    except ValueError:
        names = ", ".join(sorted(MSR_ALIASES))
        raise ValueError(f"unknown MSR {text!r}: give a number (0x277) or one of {names}") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"MSR index {value:#x} is not 32 bits")
    return value


def msr_name(index: int) -> str:
    try:
        return Msr(index).name
    except ValueError:
        return f"MSR_{index:#x}"


STAR_LAYOUT: Layout = (
    Field("SYSCALL_EIP", 0, 31, "legacy-mode SYSCALL target EIP"),
    Field("SYSCALL_CS", 32, 47, "SYSCALL CS selector; SS is this + 8"),
    Field("SYSRET_CS", 48, 63, "SYSRET base selector: SS = +8, 64-bit CS = +16, 32-bit CS = +0"),
)


@dataclass(frozen=True)
class Star:
    """IA32_STAR (0xC0000081) and the selectors SYSCALL/SYSRET derive from it (SDM Vol. 2B)."""

    raw: int
    syscall_eip: int
    syscall_base: int
    sysret_base: int

    layout = STAR_LAYOUT

    @classmethod
    def from_raw(cls, raw: int) -> Star:
        f = unpack(raw, STAR_LAYOUT)
        return cls(raw, f["SYSCALL_EIP"], f["SYSCALL_CS"], f["SYSRET_CS"])

    @property
    def syscall_cs(self) -> int:
        """CS loaded by SYSCALL: STAR[47:32] AND 0xFFFC."""
        return self.syscall_base & 0xFFFC

    @property
    def syscall_ss(self) -> int:
        """SS loaded by SYSCALL: STAR[47:32] + 8 (RPL as written, normally 0)."""
        return (self.syscall_base + 8) & 0xFFFF

    @property
    def sysret_cs64(self) -> int:
        """CS loaded by 64-bit SYSRET (REX.W): (STAR[63:48] + 16) OR 3."""
        return ((self.sysret_base + 16) | 3) & 0xFFFF

    @property
    def sysret_cs32(self) -> int:
        """CS loaded by SYSRET to compatibility mode: STAR[63:48] OR 3."""
        return (self.sysret_base | 3) & 0xFFFF

    @property
    def sysret_ss(self) -> int:
        """SS loaded by either SYSRET: (STAR[63:48] + 8) OR 3."""
        return ((self.sysret_base + 8) | 3) & 0xFFFF


APIC_BASE_LAYOUT: Layout = (
    Field("BSP", 8, 8, "processor is the bootstrap processor"),
    Field("EXTD", 10, 10, "x2APIC mode enable"),
    Field("EN", 11, 11, "APIC global enable"),
    Field("BASE", 12, 51, "APIC base physical address >> 12"),
)


@dataclass(frozen=True)
class ApicBase:
    """IA32_APIC_BASE (0x1B), SDM Vol. 3A 11.4.4."""

    raw: int
    bsp: bool
    x2apic: bool
    enabled: bool
    base: int

    layout = APIC_BASE_LAYOUT

    @classmethod
    def from_raw(cls, raw: int) -> ApicBase:
        f = unpack(raw, APIC_BASE_LAYOUT)
        return cls(raw, bool(f["BSP"]), bool(f["EXTD"]), bool(f["EN"]), f["BASE"] << 12)


@dataclass(frozen=True)
class Fmask:
    """IA32_FMASK/SFMASK (0xC0000084): RFLAGS bits SYSCALL clears (SDM Vol. 2B SYSCALL)."""

    raw: int

    @classmethod
    def from_raw(cls, raw: int) -> Fmask:
        return cls(raw)

    @property
    def mask(self) -> Rflags:
        return Rflags(self.raw & 0xFFFFFFFF)

    @property
    def clears_if(self) -> bool:
        return bool(self.raw & (1 << 9))


@dataclass(frozen=True)
class AddressMsr:
    """An MSR holding a linear address (LSTAR, CSTAR, FS/GS/KERNEL_GS_BASE, SYSENTER_EIP)."""

    index: int
    raw: int

    @property
    def canonical(self) -> bool:
        return is_canonical(self.raw)


ADDRESS_MSRS = frozenset({Msr.IA32_LSTAR, Msr.IA32_CSTAR, Msr.IA32_FS_BASE, Msr.IA32_GS_BASE,
                          Msr.IA32_KERNEL_GS_BASE, Msr.IA32_SYSENTER_EIP,
                          Msr.IA32_SYSENTER_ESP})

DecodedMsr = Star | ApicBase | Fmask | AddressMsr | Efer | int


def decode_msr(index: int, raw: int) -> DecodedMsr:
    """The typed value for the MSRs kdiag understands; the raw int for the rest.

    IA32_PAT is decoded by ``kdiag.x86.pat.decode_pat`` (the paging topic).
    """
    if index == Msr.IA32_STAR:
        return Star.from_raw(raw)
    if index == Msr.IA32_APIC_BASE:
        return ApicBase.from_raw(raw)
    if index == Msr.IA32_FMASK:
        return Fmask.from_raw(raw)
    if index == Msr.IA32_EFER:
        return Efer.from_raw(raw)
    if index in ADDRESS_MSRS:
        return AddressMsr(index, raw)
    return raw
