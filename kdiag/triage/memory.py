"""Memory-backed facts for the rules when a live :class:`~kdiag.target.base.Target` is at hand
(gdb ``kd triage``, QMP watch, a core dump): IDT gates, GDT descriptors, the TSS, and whether an
address translates through the guest's page tables (``kdiag.paging.translate``).

Every helper returns a value or a short problem string; none raises for guest state (a
``TargetError`` from the backend becomes the problem string), so a rule never aborts triage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kdiag.errors import KdiagError
from kdiag.x86.descriptors import (
    Gate,
    Gate64,
    LongSystemDescriptor,
    SegmentDescriptor,
    decode_descriptor,
)
from kdiag.x86.state import CpuState
from kdiag.x86.tss import Tss32, Tss64

if TYPE_CHECKING:
    from kdiag.target.base import Target

PAGE = 4096


def translate_va(target: Target, state: CpuState, va: int) -> tuple[int | None, str]:
    """(physical address, "") or (None, why it does not translate)."""
    if not state.paging:
        return va, ""
    try:
        from kdiag.paging.translate import translate
    except ImportError:  # pragma: no cover - the paging package is part of kdiag
        return None, "no page-table walker available"
    try:
        return translate(target, va, state), ""
    except KdiagError as err:
        return None, str(err)
    except (ValueError, IndexError) as err:
        return None, f"page walk failed: {err}"


def read_linear(target: Target, state: CpuState, va: int, size: int) -> tuple[bytes | None, str]:
    """Read ``size`` bytes at linear ``va`` under ``state``'s paging; (None, why) on failure."""
    out = bytearray()
    addr = va
    end = va + size
    while addr < end:
        n = min(end - addr, PAGE - addr % PAGE)
        pa, why = translate_va(target, state, addr)
        if pa is None:
            return None, why
        try:
            out += target.read_phys(pa, n)
        except KdiagError as err:
            return None, str(err)
        addr += n
    return bytes(out), ""


@dataclass(frozen=True)
class GateRead:
    vector: int
    address: int
    gate: Gate | Gate64 | None
    problem: str = ""


def read_gate(target: Target, state: CpuState, vector: int) -> GateRead:
    long_mode = bool(state.efer & (1 << 10))
    size = 16 if long_mode else 8
    idtr = state.idtr
    if idtr is None:
        return GateRead(vector, 0, None, "IDTR unknown")
    addr = idtr.base + vector * size
    if vector * size + size - 1 > idtr.limit:
        return GateRead(vector, addr, None, f"beyond the IDT limit {idtr.limit:#x}")
    data, why = read_linear(target, state, addr, size)
    if data is None:
        return GateRead(vector, addr, None, f"the gate at {addr:#x} cannot be read: {why}")
    try:
        gate: Gate | Gate64 = Gate64.from_bytes(data) if long_mode else Gate.from_bytes(data)
    except ValueError as err:
        return GateRead(vector, addr, None, f"undecodable gate: {err}")
    return GateRead(vector, addr, gate)


def gate_problems(g: Gate | Gate64, state: CpuState, from_cpl: int | None,
                  software: bool) -> list[str]:
    """What is wrong with a gate for delivering its vector (SDM 6.12.1, 6.14.1)."""
    probs: list[str] = []
    long_mode = isinstance(g, Gate64)
    if g.raw == 0:
        return ["the gate is all zero (never filled in)"]
    if not g.present:
        probs.append("not present (P=0)")
    kind = str(getattr(g, "kind", ""))
    if kind not in ("interrupt-gate", "trap-gate", "task-gate"):
        probs.append(f"type {int(g.type):#x} is not an interrupt/trap gate")
    if long_mode and kind == "task-gate":
        probs.append("task gates do not exist in IA-32e mode")
    if software and from_cpl is not None and g.dpl < from_cpl:
        probs.append(f"DPL {g.dpl} < CPL {from_cpl}: INT n from this ring is refused (#GP)")
    sel = g.selector.raw
    if sel & 0xFFFC == 0 and kind != "task-gate":
        probs.append("null code selector")
    elif state.gdtr is not None and not sel & 4 and (sel | 7) > state.gdtr.limit:
        probs.append(f"selector {sel:#06x} beyond the GDT limit {state.gdtr.limit:#x}")
    if long_mode and isinstance(g, Gate64):
        la57 = bool(state.cr4 & (1 << 12))
        from kdiag.triage.facts import is_canonical

        if not is_canonical(g.offset, la57):
            probs.append(f"handler offset {g.offset:#x} is not canonical")
    return probs


def read_descriptor(target: Target, state: CpuState, selector: int
                    ) -> tuple[SegmentDescriptor | LongSystemDescriptor | Gate | Gate64 | None, str]:
    if selector & 4:
        ldtr = state.ldtr
        if ldtr is None or ldtr.selector & 0xFFFC == 0:
            return None, "TI=1 but no LDT is loaded"
        base, limit = ldtr.base, ldtr.limit
    else:
        if state.gdtr is None:
            return None, "GDTR unknown"
        base, limit = state.gdtr.base, state.gdtr.limit
    off = selector & 0xFFF8
    if off + 7 > limit:
        return None, f"beyond the table limit {limit:#x}"
    data, why = read_linear(target, state, base + off, 16 if off + 15 <= limit else 8)
    if data is None:
        return None, f"cannot read the descriptor: {why}"
    try:
        return decode_descriptor(data, bool(state.efer & (1 << 10))), ""
    except ValueError as err:
        return None, f"undecodable descriptor: {err}"


def read_tss(target: Target, state: CpuState) -> tuple[Tss64 | Tss32 | None, str]:
    tr = state.tr
    if tr is None:
        return None, "TR unknown"
    if tr.selector & 0xFFFC == 0:
        return None, "TR is 0: no ltr was executed"
    if tr.limit < 0x67:
        return None, f"TR limit {tr.limit:#x} < 0x67: too small for a TSS"
    data, why = read_linear(target, state, tr.base, 104)
    if data is None:
        return None, f"cannot read the TSS at {tr.base:#x}: {why}"
    long_mode = bool(state.efer & (1 << 10))
    return (Tss64.from_bytes(data) if long_mode else Tss32.from_bytes(data)), ""
