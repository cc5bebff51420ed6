"""Test helpers: build page tables for any paging mode in a FakeTarget.

``Builder(mode)`` owns a FakeTarget whose CpuState selects that mode; ``map(va, pa, size, flags)``
creates intermediate tables on demand (flags ``upper`` on them) and writes the leaf entry.
Raw ``set_entry`` lets tests write anything, including garbage.
"""

from __future__ import annotations

from kdiag.target.fake import FakeTarget
from kdiag.x86.pte import (
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_LA57,
    CR4_PAE,
    CR4_PSE,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    PagingMode,
    paging_levels,
)
from kdiag.x86.state import CpuState

P, RW, US, PWT, PCD, A, D, PS, G = 1, 2, 4, 8, 16, 32, 64, 128, 256
PAT_LARGE = 1 << 12
XD = 1 << 63


def regs_for(mode: PagingMode, *, pse: bool = False, nxe: bool = True, wp: bool = True
             ) -> tuple[int, int, int]:
    cr0 = CR0_PE | CR0_PG | (CR0_WP if wp else 0)
    cr4 = CR4_PSE if pse else 0
    efer = 0
    if mode in (PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5):
        cr4 |= CR4_PAE
        efer |= EFER_NXE if nxe else 0
    if mode in (PagingMode.LEVEL4, PagingMode.LEVEL5):
        efer |= EFER_LME | EFER_LMA
    if mode is PagingMode.LEVEL5:
        cr4 |= CR4_LA57
    return cr0, cr4, efer


class Builder:
    def __init__(self, mode: PagingMode, *, pse: bool = False, nxe: bool = True,
                 wp: bool = True, ram_size: int = 1 << 32, table_base: int = 0x100000,
                 msrs: dict[int, int] | None = None) -> None:
        self.mode = mode
        self.pse = pse
        self.levels = paging_levels(mode, pse)
        self.esz = mode.entry_size
        self.next_table = table_base
        cr0, cr4, efer = regs_for(mode, pse=pse, nxe=nxe, wp=wp)
        self.top = self.alloc()
        self.cr0, self.cr4, self.efer = cr0, cr4, efer
        self.target = FakeTarget(self.state(), ram_size=ram_size, msrs=msrs)

    def state(self, cr3: int | None = None) -> CpuState:
        return CpuState(gpr={}, cr0=self.cr0, cr2=0, cr3=self.top if cr3 is None else cr3,
                        cr4=self.cr4, efer=self.efer)

    def alloc(self) -> int:
        pa = self.next_table
        self.next_table += 4096
        return pa

    def entry_addr(self, table: int, index: int) -> int:
        return table + index * self.esz

    def read_entry(self, table: int, index: int) -> int:
        data = self.target.read_phys(self.entry_addr(table, index), self.esz)
        return int.from_bytes(data, "little")

    def set_entry(self, table: int, index: int, raw: int) -> None:
        if self.esz == 4:
            self.target.write_u32(self.entry_addr(table, index), raw)
        else:
            self.target.write_u64(self.entry_addr(table, index), raw)

    def table_for(self, va: int, depth: int, upper: int = P | RW | US) -> int:
        """The table at ``depth`` on the path of ``va``, creating intermediates."""
        table = self.top
        for d in range(depth):
            lv = self.levels[d]
            idx = lv.index(va)
            raw = self.read_entry(table, idx)
            if not raw & P:
                child = self.alloc()
                flags = P if self.mode is PagingMode.PAE and d == 0 else upper
                self.set_entry(table, idx, child | flags)
                table = child
            else:
                table = raw & 0x000FFFFFFFFFF000 if self.esz == 8 else raw & 0xFFFFF000
        return table

    def map(self, va: int, pa: int, size: int = 4096, flags: int = P | RW,
            upper: int = P | RW | US) -> None:
        """Map one page of ``size`` (4K/2M/4M/1G) at ``va`` -> ``pa`` with leaf ``flags``."""
        for depth, lv in enumerate(self.levels):
            span = lv.page_size if not lv.last else 4096
            if span == size:
                table = self.table_for(va, depth, upper)
                raw = pa | flags | (0 if lv.last else PS)
                if self.esz == 4 and not lv.last:  # PSE-36
                    raw = (pa & 0xFFC00000) | ((pa >> 32) & 0xFF) << 13 | flags | PS
                self.set_entry(table, lv.index(va), raw)
                return
        raise ValueError(f"no level maps {size:#x} pages in {self.mode}")

    def map_range(self, va: int, pa: int, length: int, size: int = 4096,
                  flags: int = P | RW, upper: int = P | RW | US) -> None:
        for off in range(0, length, size):
            self.map(va + off, pa + off, size, flags, upper)
