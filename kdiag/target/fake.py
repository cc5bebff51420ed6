"""FakeTarget: a Target built in Python, the reference backend for the contract suite.

Tests build descriptor tables and page tables in a sparse physical memory and hand the
fake a ``CpuState``. Unwritten memory reads as zero inside ``ram_size`` and raises
``MemoryReadError`` beyond it, like QEMU for unbacked guest-physical addresses.
"""

from __future__ import annotations

import struct

from kdiag.errors import MemoryReadError, MsrUnavailable
from kdiag.target.virt import read_virt_paged
from kdiag.x86.state import CpuState

PAGE = 4096


class FakeTarget:
    """A sparse-memory Target. ``writes`` are test set-up, never done by kdiag itself."""

    name = "fake"

    def __init__(self, state: CpuState, ram_size: int = 1 << 32,
                 msrs: dict[int, int] | None = None) -> None:
        self._state = state
        self.ram_size = ram_size
        self.msrs: dict[int, int] = dict(msrs or {})
        self._pages: dict[int, bytearray] = {}
        self.phys_reads = 0

    # -- set-up helpers for tests -------------------------------------------------------
    def write_phys(self, pa: int, data: bytes) -> None:
        for i, b in enumerate(data):
            addr = pa + i
            page = self._pages.setdefault(addr // PAGE, bytearray(PAGE))
            page[addr % PAGE] = b

    def write_u64(self, pa: int, value: int) -> None:
        self.write_phys(pa, struct.pack("<Q", value & (2**64 - 1)))

    def write_u32(self, pa: int, value: int) -> None:
        self.write_phys(pa, struct.pack("<I", value & 0xFFFFFFFF))

    def set_state(self, state: CpuState) -> None:
        self._state = state

    # -- Target protocol ----------------------------------------------------------------
    def read_phys(self, pa: int, size: int) -> bytes:
        if pa < 0 or size < 0 or pa + size > self.ram_size:
            raise MemoryReadError(
                f"physical read {pa:#x}+{size:#x} outside RAM (size {self.ram_size:#x})",
                addr=pa, size=size)
        self.phys_reads += 1
        out = bytearray()
        addr = pa
        end = pa + size
        while addr < end:
            n = min(end - addr, PAGE - addr % PAGE)
            page = self._pages.get(addr // PAGE)
            out += page[addr % PAGE: addr % PAGE + n] if page is not None else bytes(n)
            addr += n
        return bytes(out)

    def read_virt(self, va: int, size: int) -> bytes:
        return read_virt_paged(self, va, size)

    def state(self) -> CpuState:
        return self._state

    def read_msr(self, index: int) -> int:
        try:
            return self.msrs[index]
        except KeyError:
            raise MsrUnavailable(f"MSR {index:#x} not set in fake target", msr=index) from None
