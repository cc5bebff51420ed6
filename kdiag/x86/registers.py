"""Control and flag registers: CR0, CR3, CR4, EFER, RFLAGS (and XCR-free, MSR-free decoding).

Each register is a frozen dataclass keeping ``raw`` (so ``from_raw(x).raw == x`` always, reserved
bits included) with an ``IntFlag`` of the architecturally defined bits named as the SDM names
them. Bit layouts are the ``*_LAYOUT`` tables; renderers walk them for the Bochs-style line
(``CR0=0x80000011: PG cd nw ac wp ne ET ts em mp PE``) and for the verbose bit view.

References: Intel SDM Vol. 3A 2.5 "Control Registers" (Figure 2-7, CR0/CR3/CR4), 2.2.1 and
Vol. 4 "IA32_EFER" (Extended Feature Enable Register), Vol. 1 3.4.3 "EFLAGS Register".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag
from typing import ClassVar, Self

from kdiag.x86.bits import Field, Layout, defined_mask


class Cr0Flag(IntFlag):
    """CR0 bits (SDM Vol. 3A 2.5)."""

    PE = 1 << 0  # protection enable
    MP = 1 << 1  # monitor coprocessor
    EM = 1 << 2  # emulation
    TS = 1 << 3  # task switched
    ET = 1 << 4  # extension type (hardwired 1)
    NE = 1 << 5  # numeric error
    WP = 1 << 16  # write protect (supervisor writes honour R/W)
    AM = 1 << 18  # alignment mask
    NW = 1 << 29  # not write-through
    CD = 1 << 30  # cache disable
    PG = 1 << 31  # paging


class Cr4Flag(IntFlag):
    """CR4 bits (SDM Vol. 3A 2.5, Figure 2-7)."""

    VME = 1 << 0
    PVI = 1 << 1
    TSD = 1 << 2
    DE = 1 << 3
    PSE = 1 << 4
    PAE = 1 << 5
    MCE = 1 << 6
    PGE = 1 << 7
    PCE = 1 << 8
    OSFXSR = 1 << 9
    OSXMMEXCPT = 1 << 10
    UMIP = 1 << 11
    LA57 = 1 << 12
    VMXE = 1 << 13
    SMXE = 1 << 14
    FSGSBASE = 1 << 16
    PCIDE = 1 << 17
    OSXSAVE = 1 << 18
    KL = 1 << 19
    SMEP = 1 << 20
    SMAP = 1 << 21
    PKE = 1 << 22
    CET = 1 << 23
    PKS = 1 << 24
    UINTR = 1 << 25
    LAM_SUP = 1 << 28


class EferFlag(IntFlag):
    """IA32_EFER (MSR 0xC0000080) bits (SDM Vol. 3A 2.2.1, Table 2-1; AMD APM Vol. 2 3.1.7)."""

    SCE = 1 << 0  # SYSCALL enable
    LME = 1 << 8  # IA-32e mode enable
    LMA = 1 << 10  # IA-32e mode active (read-only)
    NXE = 1 << 11  # execute-disable bit enable
    SVME = 1 << 12  # AMD: secure virtual machine
    LMSLE = 1 << 13  # AMD: long mode segment limit enable
    FFXSR = 1 << 14  # AMD: fast FXSAVE/FXRSTOR
    TCE = 1 << 15  # AMD: translation cache extension


class RflagsFlag(IntFlag):
    """RFLAGS bits (SDM Vol. 1 3.4.3); IOPL (bits 12-13) is a field, not a flag."""

    CF = 1 << 0
    PF = 1 << 2
    AF = 1 << 4
    ZF = 1 << 6
    SF = 1 << 7
    TF = 1 << 8
    IF = 1 << 9
    DF = 1 << 10
    OF = 1 << 11
    NT = 1 << 14
    RF = 1 << 16
    VM = 1 << 17
    AC = 1 << 18
    VIF = 1 << 19
    VIP = 1 << 20
    ID = 1 << 21


def _flag_layout(flag_type: type[IntFlag], extra: tuple[Field, ...] = ()) -> Layout:
    fields = [Field(str(m.name), m.value.bit_length() - 1, m.value.bit_length() - 1)
              for m in flag_type]
    return tuple(sorted([*fields, *extra], key=lambda f: f.lo))


CR0_LAYOUT: Layout = _flag_layout(Cr0Flag)
CR4_LAYOUT: Layout = _flag_layout(Cr4Flag)
EFER_LAYOUT: Layout = _flag_layout(EferFlag)
RFLAGS_LAYOUT: Layout = _flag_layout(RflagsFlag, (Field("IOPL", 12, 13, "I/O privilege level"),))


@dataclass(frozen=True)
class FlagRegister:
    """Base for registers that are mostly flags: ``raw`` plus the typed view of it."""

    raw: int

    NAME: ClassVar[str] = ""
    LAYOUT: ClassVar[Layout] = ()
    FLAGS: ClassVar[type[IntFlag]] = IntFlag

    @classmethod
    def from_raw(cls, raw: int) -> Self:
        return cls(raw)

    @property
    def flags(self) -> IntFlag:
        """The defined flag bits that are set, as the register's IntFlag type."""
        return self.FLAGS(self.raw & defined_mask(f for f in self.LAYOUT if f.width == 1))

    @property
    def reserved_bits(self) -> int:
        """Bits set in ``raw`` that no field defines (reserved; usually must be zero)."""
        return self.raw & ~defined_mask(self.LAYOUT)

    def __contains__(self, flag: object) -> bool:
        return isinstance(flag, int) and bool(self.raw & flag) and (self.raw & flag) == flag


@dataclass(frozen=True)
class Cr0(FlagRegister):
    """CR0 (SDM Vol. 3A 2.5)."""

    NAME: ClassVar[str] = "CR0"
    LAYOUT: ClassVar[Layout] = CR0_LAYOUT
    FLAGS: ClassVar[type[IntFlag]] = Cr0Flag

    @property
    def protected(self) -> bool:
        return bool(self.raw & Cr0Flag.PE)

    @property
    def paging(self) -> bool:
        return bool(self.raw & Cr0Flag.PG)

    @property
    def write_protect(self) -> bool:
        return bool(self.raw & Cr0Flag.WP)


@dataclass(frozen=True)
class Cr4(FlagRegister):
    """CR4 (SDM Vol. 3A 2.5)."""

    NAME: ClassVar[str] = "CR4"
    LAYOUT: ClassVar[Layout] = CR4_LAYOUT
    FLAGS: ClassVar[type[IntFlag]] = Cr4Flag


@dataclass(frozen=True)
class Efer(FlagRegister):
    """IA32_EFER, MSR 0xC0000080 (SDM Vol. 3A 2.2.1)."""

    NAME: ClassVar[str] = "EFER"
    LAYOUT: ClassVar[Layout] = EFER_LAYOUT
    FLAGS: ClassVar[type[IntFlag]] = EferFlag

    @property
    def long_mode_active(self) -> bool:
        return bool(self.raw & EferFlag.LMA)

    @property
    def nx_enabled(self) -> bool:
        return bool(self.raw & EferFlag.NXE)

    @property
    def syscall_enabled(self) -> bool:
        return bool(self.raw & EferFlag.SCE)


@dataclass(frozen=True)
class Rflags(FlagRegister):
    """RFLAGS/EFLAGS (SDM Vol. 1 3.4.3). Bit 1 is reserved and always reads 1."""

    NAME: ClassVar[str] = "RFLAGS"
    LAYOUT: ClassVar[Layout] = RFLAGS_LAYOUT
    FLAGS: ClassVar[type[IntFlag]] = RflagsFlag

    @property
    def iopl(self) -> int:
        return (self.raw >> 12) & 3

    @property
    def interrupts_enabled(self) -> bool:
        return bool(self.raw & RflagsFlag.IF)

    @property
    def reserved_bits(self) -> int:
        return super().reserved_bits & ~0x2  # bit 1 is the fixed "1"


# CR3 (SDM Vol. 3A 4.5, Table 4-12 and 4-13): with CR4.PCIDE=0 bits 3/4 are PWT/PCD; with
# PCIDE=1 bits 0-11 are the PCID. Bits 12..MAXPHYADDR-1 are the PML4/PML5 (or PDPT/PD) base.
CR3_LAYOUT: Layout = (
    Field("PWT", 3, 3, "page-level write-through"),
    Field("PCD", 4, 4, "page-level cache disable"),
    Field("BASE", 12, 51, "physical address of the top paging structure >> 12"),
    Field("LAM_U57", 61, 61), Field("LAM_U48", 62, 62),
)
CR3_PCID_LAYOUT: Layout = (
    Field("PCID", 0, 11, "process-context identifier"),
    Field("BASE", 12, 51, "physical address of the top paging structure >> 12"),
    Field("LAM_U57", 61, 61), Field("LAM_U48", 62, 62),
)


@dataclass(frozen=True)
class Cr3:
    """CR3 (SDM Vol. 3A 4.5). ``pcid`` is None when CR4.PCIDE=0 (then ``pwt``/``pcd`` apply).

    ``base`` is the physical address of the top-level paging structure. In 32-bit PAE paging the
    PDPT base is bits 5-31 (32-byte aligned); ``pae_base`` gives that view.
    """

    raw: int
    base: int
    pcid: int | None
    pwt: bool
    pcd: bool

    @classmethod
    def from_raw(cls, raw: int, pcide: bool = False) -> Cr3:
        base = raw & 0x000F_FFFF_FFFF_F000
        if pcide:
            return cls(raw, base, raw & 0xFFF, False, False)
        return cls(raw, base, None, bool(raw & 0x8), bool(raw & 0x10))

    @property
    def pae_base(self) -> int:
        return self.raw & 0xFFFF_FFE0

    @property
    def layout(self) -> Layout:
        return CR3_PCID_LAYOUT if self.pcid is not None else CR3_LAYOUT
