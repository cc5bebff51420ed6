"""CPU state as plain values: what a Target reports and what a QEMU register dump holds.

These are the common currency between backends (gdb, QMP, core dump, fake, ``-d`` logs) and
everything that reasons about a stopped CPU. Field names follow QEMU's ``x86_cpu_dump_state``
(``target/i386/cpu-dump.c``, QEMU 7.2) and the Intel SDM register names.
"""

from __future__ import annotations

from enum import StrEnum

from kdiag._record import field, record

PhysAddr = int
VirtAddr = int

SEGMENT_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")


class CpuMode(StrEnum):
    """Execution mode, derived from CR0.PE, EFER.LMA and CS.L (Intel SDM Vol. 3A 2.2)."""

    REAL = "real"
    PROTECTED = "protected"  # 16/32-bit protected mode (also legacy mode with paging)
    COMPAT = "compat"  # IA-32e compatibility mode: LMA=1, CS.L=0
    LONG = "long"  # IA-32e 64-bit mode: LMA=1, CS.L=1


@record(frozen=True)
class SegmentCache:
    """A segment register with its hidden descriptor cache, as QEMU prints it.

    ``flags`` is QEMU's packed descriptor high-dword attribute word (``SEL BASE LIMIT FLAGS``
    in the dump, e.g. ``00af9b00`` for a 64-bit code segment): bits 8-15 hold the access byte
    (type, S, DPL, P) and bits 20-23 AVL/L/D/G, matching descriptor bits 40-55 shifted by 32.
    """

    selector: int
    base: int
    limit: int
    flags: int

    @property
    def dpl(self) -> int:
        return (self.flags >> 13) & 3

    @property
    def present(self) -> bool:
        return bool(self.flags & (1 << 15))

    @property
    def system(self) -> bool:
        """True for system descriptors (TSS, LDT, gates): S bit clear."""
        return not self.flags & (1 << 12)

    @property
    def type(self) -> int:
        return (self.flags >> 8) & 0xF

    @property
    def long(self) -> bool:
        return bool(self.flags & (1 << 21))

    @property
    def default_big(self) -> bool:
        return bool(self.flags & (1 << 22))

    @property
    def is_code(self) -> bool:
        return not self.system and bool(self.type & 0x8)


@record(frozen=True)
class TableRegister:
    """GDTR or IDTR: linear base and limit (limit is the last valid byte offset)."""

    base: int
    limit: int


@record(frozen=True)
class CpuState:
    """A snapshot of one CPU's registers.

    ``gpr`` maps lower-case names (``rax``..``r15``, ``rip``, ``rflags``; 32-bit dumps fill
    ``rax`` etc. with the zero-extended E-register values) to ints. Optional fields are None
    when the source does not provide them (e.g. a ``-d int`` log has no MSRs besides EFER).
    """

    gpr: dict[str, int]
    cr0: int
    cr2: int
    cr3: int
    cr4: int
    efer: int
    segments: dict[str, SegmentCache] = field(default_factory=dict)
    gdtr: TableRegister | None = None
    idtr: TableRegister | None = None
    tr: SegmentCache | None = None
    ldtr: SegmentCache | None = None
    cr8: int | None = None
    fs_base: int | None = None
    gs_base: int | None = None
    kernel_gs_base: int | None = None
    cpl: int | None = None
    cpu_index: int = 0
    halted: bool | None = None

    @property
    def rip(self) -> int:
        return self.gpr.get("rip", 0)

    @property
    def rsp(self) -> int:
        return self.gpr.get("rsp", 0)

    @property
    def rflags(self) -> int:
        return self.gpr.get("rflags", 0)

    @property
    def mode(self) -> CpuMode:
        """Intel SDM Vol. 3A 2.2: PE=0 real; LMA=1 with CS.L long, else compat; else protected."""
        if not self.cr0 & 1:
            return CpuMode.REAL
        if self.efer & (1 << 10):
            cs = self.segments.get("cs")
            return CpuMode.LONG if cs is None or cs.long else CpuMode.COMPAT
        return CpuMode.PROTECTED

    @property
    def paging(self) -> bool:
        return bool(self.cr0 & (1 << 31)) and bool(self.cr0 & 1)

    @property
    def effective_cpl(self) -> int:
        """CPL: as reported, else CS.RPL (SDM 5.5; equal except in transitions)."""
        if self.cpl is not None:
            return self.cpl
        cs = self.segments.get("cs")
        return cs.selector & 3 if cs else 0
