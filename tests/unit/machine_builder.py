"""Build a small, healthy IA-32e machine in a FakeTarget (tests start from it and break one thing).

Physical layout (RAM 64 MiB; the page tables identity-map all of it with 2 MiB pages, so
virtual == physical below 64 MiB and anything above is unmapped):

    0x001000  GDT  null, kcode64 0x08, kdata 0x10, ucode32 0x18, udata 0x20, ucode64 0x28,
                   TSS64 0x30 (16 bytes) -> limit 0x3f.  STAR: SYSCALL 0x08, SYSRET base 0x18
    0x002000  IDT  256 x 16-byte interrupt gates -> HANDLER_BASE + 16*v, selector 0x08;
                   #DF (8) uses IST1, 0x80 is DPL 3
    0x003000  TSS  RSP0 = 0x080000, IST1 = 0x090000, IOPB = 0x68
    0x010000  PML4 -> 0x011000 PDPT -> 0x012000 PD (32 x 2 MiB, NX on entries >= 16 when asked)
    0x100000  handlers
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from kdiag._record import replace
from kdiag.target.fake import FakeTarget
from kdiag.x86.descriptors import Gate64, LongSystemDescriptor, LongSystemType, SegmentDescriptor
from kdiag.x86.state import CpuState, SegmentCache, TableRegister
from kdiag.x86.tss import Tss64

RAM = 64 << 20
GDT_BASE = 0x1000
IDT_BASE = 0x2000
TSS_BASE = 0x3000
PML4 = 0x10000
HANDLER_BASE = 0x100000
RSP0 = 0x80000
IST1 = 0x90000
LSTAR = 0x101000

KCODE = SegmentDescriptor.from_raw(0x00AF9B000000FFFF)
KDATA = SegmentDescriptor.from_raw(0x00CF93000000FFFF)
UCODE32 = SegmentDescriptor.from_raw(0x00CFFB000000FFFF)
UDATA = SegmentDescriptor.from_raw(0x00CFF3000000FFFF)
UCODE64 = SegmentDescriptor.from_raw(0x00AFFB000000FFFF)
STAR = (0x18 << 48) | (0x08 << 32)


def tss_descriptor(busy: bool = True) -> LongSystemDescriptor:
    return LongSystemDescriptor.make(TSS_BASE, 0x67, LongSystemType.TSS64_BUSY if busy
                                     else LongSystemType.TSS64_AVAILABLE)


def default_gdt() -> list[int]:
    """The GDT as a list of qwords (the TSS descriptor takes two)."""
    t = tss_descriptor()
    return [0, KCODE.raw, KDATA.raw, UCODE32.raw, UDATA.raw, UCODE64.raw, t.low, t.high]


def default_idt() -> list[Gate64]:
    gates = []
    for v in range(256):
        gates.append(Gate64.make(HANDLER_BASE + 16 * v, 0x08, ist=1 if v == 8 else 0,
                                 dpl=3 if v == 0x80 else 0))
    return gates


def seg_cache(selector: int, desc: SegmentDescriptor | None) -> SegmentCache:
    """What QEMU caches after loading ``selector`` (flags = descriptor bits 32-63, base 0)."""
    if desc is None:
        return SegmentCache(selector, 0, 0, 0)
    flags = (desc.raw >> 32) & 0x00FFFF00  # as QEMU's register dump prints it
    return SegmentCache(selector, desc.base, desc.limit, flags)


@dataclass
class Machine:
    """Knobs for the machine; ``build()`` writes it into a fresh FakeTarget."""

    gdt: list[int] = field(default_factory=default_gdt)
    gdt_limit: int | None = None
    idt: list[Gate64] = field(default_factory=default_idt)
    idt_limit: int = 256 * 16 - 1
    tss: Tss64 = field(default_factory=lambda: Tss64.make(rsp=(RSP0, 0, 0),
                                                          ist=(IST1, 0, 0, 0, 0, 0, 0), iopb=0x68))
    efer: int = 0xD01  # SCE LME LMA NXE
    cr0: int = 0x80010033
    cr4: int = 0x000006A0  # PAE PGE OSFXSR OSXMMEXCPT
    segments: dict[str, SegmentCache] = field(default_factory=lambda: {
        "cs": seg_cache(0x08, KCODE), "ss": seg_cache(0x10, KDATA), "ds": seg_cache(0x10, KDATA),
        "es": seg_cache(0x10, KDATA), "fs": seg_cache(0, None), "gs": seg_cache(0, None)})
    tr: SegmentCache = field(default_factory=lambda: SegmentCache(0x30, TSS_BASE, 0x67, 0x8B00))
    msrs: dict[int, int] = field(default_factory=lambda: {
        0xC0000080: 0xD01, 0xC0000081: STAR, 0xC0000082: LSTAR, 0xC0000084: 0x47700,
        0x277: 0x0007010600070406, 0x1B: 0xFEE00900})
    nx_pages: bool = True  # set NX on PD entries 16..31 (data), as a W^X kernel would
    rip: int = HANDLER_BASE + 0x800

    def state(self) -> CpuState:
        gpr = {n: 0 for n in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10",
                              "r11", "r12", "r13", "r14", "r15")}
        gpr.update(rip=self.rip, rsp=RSP0 - 0x100, rflags=0x246)
        limit = self.gdt_limit if self.gdt_limit is not None else len(self.gdt) * 8 - 1
        return CpuState(
            gpr=gpr, cr0=self.cr0, cr2=0, cr3=PML4, cr4=self.cr4, efer=self.efer,
            segments=dict(self.segments), gdtr=TableRegister(GDT_BASE, limit),
            idtr=TableRegister(IDT_BASE, self.idt_limit), tr=self.tr,
            ldtr=SegmentCache(0, 0, 0xFFFF, 0x8200), cr8=0, fs_base=0, gs_base=0,
            kernel_gs_base=0, cpl=self.segments["cs"].selector & 3)

    def build(self) -> FakeTarget:
        t = FakeTarget(self.state(), ram_size=RAM, msrs=dict(self.msrs))
        t.write_phys(GDT_BASE, struct.pack(f"<{len(self.gdt)}Q", *self.gdt))
        idt = b"".join(struct.pack("<QQ", g.raw & (2**64 - 1), g.raw >> 64) for g in self.idt)
        t.write_phys(IDT_BASE, idt)
        t.write_phys(TSS_BASE, self.tss.raw)
        # 4-level identity map of RAM with 2 MiB pages
        t.write_u64(PML4, 0x11000 | 0x3)
        t.write_u64(0x11000, 0x12000 | 0x3)
        for i in range(RAM >> 21):
            nx = 1 << 63 if self.nx_pages and i >= 16 else 0
            t.write_u64(0x12000 + 8 * i, (i << 21) | 0x83 | nx)
        for v in range(256):  # handlers: iretq
            t.write_phys(HANDLER_BASE + 16 * v, b"\x48\xcf")
        return t

    def with_(self, **changes: object) -> Machine:
        return replace(self, **changes)  # type: ignore[arg-type]
