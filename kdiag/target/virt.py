"""Virtual reads in terms of physical reads, shared by every backend without a native path.

Translation uses ``kdiag.paging.translate`` (the walker) with the target's own CR3 and mode;
the read is split at 4 KiB boundaries so each page is translated separately.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kdiag.target.base import Target
    from kdiag.x86.state import CpuState

PAGE = 4096


def read_virt_paged(target: Target, va: int, size: int, state: CpuState | None = None) -> bytes:
    """Read ``size`` bytes at virtual ``va`` through the page tables of ``state`` (default: the
    target's own state; triage passes the state of the fault it judges).

    Raises ``TranslationError`` for an unmapped page, ``MemoryReadError`` for a failed read.
    With paging disabled (CR0.PG=0) virtual addresses are physical.
    """
    from kdiag.paging.translate import translate  # paging sits above target in the layers

    if state is None:
        state = target.state()
    if not state.paging:
        return target.read_phys(va, size)
    out = bytearray()
    addr = va
    end = va + size
    while addr < end:
        n = min(end - addr, PAGE - addr % PAGE)
        pa = translate(target, addr, state)
        out += target.read_phys(pa, n)
        addr += n
    return bytes(out)
