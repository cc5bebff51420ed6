"""The one memory/register access protocol every live or offline decode goes through.

Backends: ``kdiag.target.fake.FakeTarget`` (tests, the reference), ``kdiag.target.core``
(QEMU ``dump-guest-memory`` ELF core), ``gdbext.target.GdbTarget`` (gdb remote to QEMU's
gdbstub) and ``qmp_tools.target.QmpTarget`` (QMP). All pass ``tests/unit/test_target_contract``.

Contract:
- ``read_phys(pa, size)`` returns exactly ``size`` bytes or raises ``MemoryReadError``.
- ``read_virt(va, size)`` translates through the guest's own page tables (current CR3 and
  paging mode) page by page, returns exactly ``size`` bytes or raises ``TranslationError`` /
  ``MemoryReadError``. With paging off, virtual == physical.
- ``state()`` returns the current ``CpuState``; backends may cache it until the guest runs.
- ``read_msr(index)`` returns the 64-bit value or raises ``MsrUnavailable`` saying why.
- No method resumes, resets or modifies the guest, except a documented MSR injection that
  restores everything it touched.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from kdiag.x86.state import CpuState


@runtime_checkable
class Target(Protocol):
    """Read access to one stopped x86 CPU and its machine's memory."""

    name: str

    def read_phys(self, pa: int, size: int) -> bytes:
        """Read ``size`` bytes of guest-physical memory at ``pa``."""
        ...

    def read_virt(self, va: int, size: int) -> bytes:
        """Read ``size`` bytes of guest-virtual memory at ``va`` via the guest's page tables."""
        ...

    def state(self) -> CpuState:
        """The CPU's registers, including system registers and segment caches."""
        ...

    def read_msr(self, index: int) -> int:
        """Read MSR ``index`` or raise ``MsrUnavailable``."""
        ...
