"""Translate one linear address level by level, the way the CPU does (SDM Vol. 3A 4.3-4.5).

``walk(target, va, config)`` returns a :class:`Walk`: every level visited (table address,
index, raw entry, decoded flags), the effective access rights (R/W and U/S ANDed over all
levels, XD ORed; SDM 4.6), the memory type the PAT selects for the final page (12.12.3), and
either the physical address or the level where translation stops and why. A non-present
entry, a reserved bit, a non-canonical address are results, not exceptions; only a failed
read of a table (e.g. a pointer beyond RAM) is a stop reason of its own, ``table-unreadable``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from kdiag.errors import MemoryReadError
from kdiag.paging.config import PagingConfig
from kdiag.paging.tables import TableCache
from kdiag.x86.pat import MemoryType
from kdiag.x86.pte import (
    EntryKind,
    Level,
    PageEntry,
    PagingMode,
    decode_with_masks,
    is_canonical,
)

if TYPE_CHECKING:
    from kdiag.target.base import Target


class StopReason(StrEnum):
    """Why a walk ends without a physical address."""

    NOT_PRESENT = "not-present"
    RESERVED = "reserved-bit"  # a reserved bit is set (#PF with RSVD=1)
    NX_RESERVED = "nx-without-nxe"  # XD set while EFER.NXE=0 (also #PF RSVD)
    PS_RESERVED = "ps-reserved"  # PS=1 where the level does not allow it (#PF RSVD)
    NON_CANONICAL = "non-canonical"  # #GP, no walk at all
    OUT_OF_RANGE = "outside-linear-space"  # above 4 GiB in a 32-bit mode
    UNREADABLE = "table-unreadable"  # the next table cannot be read (beyond RAM)


@dataclass(frozen=True)
class Access:
    """Effective rights of a mapping (SDM Vol. 3A 4.6).

    ``writable``/``user``: R/W and U/S ANDed over every level (PAE PDPTEs excepted);
    ``executable``: no XD anywhere on the path (always True without EFER.NXE). ``kernel_write``:
    what a CPL0 write may do, which with CR0.WP=0 ignores R/W.
    """

    writable: bool
    user: bool
    executable: bool
    kernel_write: bool

    @property
    def rwx(self) -> str:
        return "r" + ("w" if self.writable else "-") + ("x" if self.executable else "-")


@dataclass(frozen=True)
class WalkStep:
    """One level of a walk: the table read, the index used, the entry found there.

    ``note`` flags entries that point back into the hierarchy: a recursive self-map (the entry
    references the table it sits in) or a loop (it references an ancestor table).
    """

    level: Level
    table: int
    index: int
    entry_addr: int
    entry: PageEntry
    note: str | None = None


@dataclass(frozen=True)
class Walk:
    """The outcome of translating ``va`` under ``config``.

    On success ``pa`` is the physical address, ``page_size`` the size of the page that maps
    it, ``page_base`` its physical base. On failure ``pa`` is None, ``stop`` names the reason,
    ``detail`` says it in words and ``stop_level`` is the level of the offending entry (None
    for a non-canonical address).
    """

    va: int
    config: PagingConfig
    steps: tuple[WalkStep, ...]
    pa: int | None
    page_size: int = 0
    access: Access | None = None
    memtype: MemoryType | None = None
    stop: StopReason | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.pa is not None

    @property
    def stop_level(self) -> Level | None:
        if self.stop is None or not self.steps:
            return None
        if self.stop is StopReason.UNREADABLE:
            return self.steps[-1].level  # the entry whose pointer could not be followed
        return self.steps[-1].level

    @property
    def leaf(self) -> WalkStep | None:
        return self.steps[-1] if self.ok and self.steps else None

    @property
    def page_base(self) -> int | None:
        return None if self.pa is None else self.pa & ~(self.page_size - 1)


def _bit_list(mask: int) -> str:
    return ", ".join(str(b) for b in range(64) if mask >> b & 1)


def _reserved_reason(entry: PageEntry) -> tuple[StopReason, str]:
    lv = entry.level.name
    if entry.nx_reserved and entry.reserved == 1 << 63:
        return StopReason.NX_RESERVED, f"{lv} entry has XD (bit 63) set while EFER.NXE=0"
    if entry.ps_reserved and entry.reserved == 0x80:
        return StopReason.PS_RESERVED, f"{lv} entry has PS=1, which is reserved at this level"
    return StopReason.RESERVED, f"{lv} entry has reserved bit(s) {_bit_list(entry.reserved)} set"


def walk(target: Target, va: int, config: PagingConfig, *,
         cache: TableCache | None = None) -> Walk:
    """Translate ``va`` through the tables ``config`` names, recording every level."""
    params = config.params
    mode = params.mode
    if mode is PagingMode.NONE:
        acc = Access(True, True, True, True)
        return Walk(va, config, (), va, 0, acc, None, None, "paging disabled: linear = physical")
    if mode in (PagingMode.BITS32, PagingMode.PAE):
        if not 0 <= va < 1 << 32:
            return Walk(va, config, (), None, stop=StopReason.OUT_OF_RANGE,
                        detail=f"{va:#x} is beyond the 32-bit linear address space")
    elif not is_canonical(va, params.va_bits):
        return Walk(va, config, (), None, stop=StopReason.NON_CANONICAL,
                    detail=f"{va:#x} is not canonical for {mode.value} paging "
                           f"(bits 63:{params.va_bits - 1} must be equal); access raises #GP")
    # no shared cache: a one-off translation reads one entry per level, nothing more
    reader = cache if cache is not None else TableCache(target, whole_pages=False)
    masks = params.masks
    table = config.top
    path: list[int] = []
    steps: list[WalkStep] = []
    writable = user = True
    nx = False
    for mk in masks:
        lv = mk.level
        idx = lv.index(va)
        eaddr = table + idx * lv.entry_size
        try:
            raw = reader.entry(eaddr, lv.entry_size)
        except MemoryReadError as err:
            what = "CR3" if not steps else f"{steps[-1].level.name}[{steps[-1].index}]"
            return Walk(va, config, tuple(steps), None, stop=StopReason.UNREADABLE,
                        detail=f"{lv.name} table at {table:#x} (from {what}) cannot be read: "
                               f"{err}")
        path.append(table)
        entry = decode_with_masks(raw, mk, params.nxe)
        note = None
        if entry.kind is EntryKind.TABLE and entry.addr in path:
            if entry.addr == table:
                note = f"recursive self-map: points to this {lv.name} itself"
            else:
                anc = masks[path.index(entry.addr)].level.name
                note = f"loop: points back to the {anc} at {entry.addr:#x}"
        if entry.soft_reserved:
            note = (f"bit(s) {_bit_list(entry.soft_reserved)} are reserved in a PAE PDPTE: "
                    "QEMU ignores them, a real CPU raises #GP when MOV CR3 loads it")
        steps.append(WalkStep(lv, table, idx, eaddr, entry, note))
        if entry.kind is EntryKind.NOT_PRESENT:
            return Walk(va, config, tuple(steps), None, stop=StopReason.NOT_PRESENT,
                        detail=f"{lv.name}[{idx}] at {eaddr:#x} is not present")
        if entry.reserved:
            reason, text = _reserved_reason(entry)
            return Walk(va, config, tuple(steps), None, stop=reason, detail=text)
        if lv.access_bits:
            writable = writable and entry.writable
            user = user and entry.user
            nx = nx or (params.nxe and entry.nx)
        if entry.kind is EntryKind.PAGE:
            size = entry.page_size
            pa = entry.addr + (va & (size - 1))
            types = config.pat_types
            mt = types[entry.pat_index] if types is not None else None
            acc = Access(writable, user, not nx, writable or not params.wp)
            return Walk(va, config, tuple(steps), pa, size, acc, mt)
        table = entry.addr
    raise AssertionError("paging hierarchy without a last level")  # pragma: no cover
