"""``translate(target, va)``: the physical address of a linear address, or a TranslationError.

The small entry point the Target backends use for virtual reads (``kdiag.target.virt``). It
reads one entry per level (no PAT MSR, no whole tables) and follows the mode of the given or
current CpuState: 32-bit with/without PSE, PAE, 4-level, 5-level (SDM Vol. 3A 4.3-4.5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kdiag.errors import TranslationError
from kdiag.paging.config import config_from_state
from kdiag.paging.tables import TableCache
from kdiag.paging.walker import walk

if TYPE_CHECKING:
    from kdiag.target.base import Target
    from kdiag.x86.state import CpuState


def translate(target: Target, va: int, state: CpuState | None = None, *,
              cache: TableCache | None = None) -> int:
    """Physical address for ``va`` under ``state`` (default: ``target.state()``).

    With paging off, returns ``va``. Raises ``TranslationError`` carrying ``va``, the ``level``
    where the walk stopped and the ``reason`` (a ``StopReason`` value) otherwise.
    """
    if state is None:
        state = target.state()
    if not state.paging:
        return va
    maxphyaddr = int(getattr(target, "maxphyaddr", 52) or 52)
    result = walk(target, va, config_from_state(state, maxphyaddr=maxphyaddr), cache=cache)
    if result.pa is None:
        level = result.stop_level
        raise TranslationError(f"cannot translate {va:#x}: {result.detail}", va=va,
                               level=level.name if level is not None else None,
                               reason=result.stop.value if result.stop else None)
    return result.pa
