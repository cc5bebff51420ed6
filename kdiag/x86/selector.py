"""Segment selectors (Intel SDM Vol. 3A 3.4.2, Figure 3-6).

A selector is 16 bits: RPL (0-1), TI (2: 0 = GDT, 1 = LDT), index (3-15). The descriptor it
names sits at byte ``index * 8`` of the table, so the selector with RPL and TI cleared is also
the byte offset (``0x28`` is GDT entry 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import cache

from kdiag.x86.bits import Field, Layout

SELECTOR_LAYOUT: Layout = (
    Field("RPL", 0, 1, "requested privilege level"),
    Field("TI", 2, 2, "table indicator: 0 GDT, 1 LDT"),
    Field("INDEX", 3, 15, "descriptor index"),
)


class TableIndicator(IntEnum):
    GDT = 0
    LDT = 1


@dataclass(frozen=True)
class Selector:
    """A decoded segment selector; ``raw`` is the 16-bit value."""

    raw: int
    index: int
    ti: TableIndicator
    rpl: int

    @classmethod
    def from_raw(cls, raw: int) -> Selector:
        if not 0 <= raw <= 0xFFFF:
            raise ValueError(f"selector {raw:#x} is not 16 bits")
        return _decode(raw)

    @property
    def offset(self) -> int:
        """Byte offset of the descriptor in its table (index * 8)."""
        return self.index * 8

    @property
    def null(self) -> bool:
        """Index 0 in the GDT: the null selector (SDM 3.4.2), whatever the RPL."""
        return self.index == 0 and self.ti == TableIndicator.GDT

    def __str__(self) -> str:
        table = "LDT" if self.ti else "GDT"
        return f"{self.raw:#06x} ({table}[{self.index}], RPL={self.rpl})"


@cache
def _decode(raw: int) -> Selector:
    """Selectors are immutable values from a 64 Ki space: decode each one once."""
    return Selector(raw, raw >> 3, _TI[(raw >> 2) & 1], raw & 3)


_TI = (TableIndicator.GDT, TableIndicator.LDT)
