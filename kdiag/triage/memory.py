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
from kdiag.target.virt import read_virt_paged
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
    try:
        return read_virt_paged(target, va, size, state), ""
    except KdiagError as err:
        return None, str(err)
    except (ValueError, IndexError) as err:
        return None, f"page walk failed: {err}"


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


# ---------------------------------------------------------------------------------------------
# live inspection: the entries a failed delivery touched (gdb `kd triage`, QMP watch, a core)


@dataclass(frozen=True)
class MemCheck:
    """One memory-backed check of live triage, for the report's "Memory" section.

    ``kind``: ``walk`` (a page walk of ``name`` = RIP/RSP/CR2/a handler/RSP0), ``idt-gate``,
    ``gdt-entry`` or ``tss``. ``ok`` False means this is what is wrong; ``entry`` then names
    the offending entry (``PML4[0x1ff]``, ``IDT[0x08]``, ``GDT[0x28]``, ``TSS.RSP0``) and
    ``text`` says it in one line, e.g. "PML4[0x1ff] at 0x1500ff8 = 0x0 is not present while
    walking RIP 0xffffffff80001847".
    """

    kind: str
    name: str
    address: int | None
    ok: bool
    text: str
    entry: str | None = None
    stop: str | None = None       # walker StopReason value for a failed walk
    level: str | None = None      # paging level of ``entry`` for a failed walk


def walk_check(target: Target, state: CpuState, va: int, name: str, *,
               need_exec: bool = False, need_write: bool = False,
               need_user: bool = False, cache: object | None = None) -> MemCheck:
    """Walk ``va`` through the guest's page tables; name the entry that stops it.

    ``need_*`` add the rights the access needs (a fetch needs no XD, a push needs R/W, ring 3
    needs U/S on every level): a present mapping without them is reported as not ok too.
    """
    if not state.paging:
        return MemCheck("walk", name, va, True, f"{name} {va:#x}: paging is off (linear = "
                        "physical)")
    from kdiag.paging.config import config_from_state
    from kdiag.paging.walker import walk

    maxphy = int(getattr(target, "maxphyaddr", 52) or 52)
    try:
        w = walk(target, va, config_from_state(state, maxphyaddr=maxphy),
                 cache=cache)  # type: ignore[arg-type]
    except KdiagError as err:
        return MemCheck("walk", name, va, False, f"{name} {va:#x}: page walk failed: {err}")
    except (ValueError, IndexError) as err:
        return MemCheck("walk", name, va, False, f"{name} {va:#x}: page walk failed: {err}")
    if not w.ok:
        stop = w.stop.value if w.stop is not None else None
        if not w.steps:
            return MemCheck("walk", name, va, False, f"{w.detail} ({name})", None, stop)
        st = w.steps[-1]
        ent = f"{st.level.name}[{st.index:#x}]"
        if stop == "not-present":
            why = "is not present"
        elif stop == "table-unreadable":
            why = f"points to a table that cannot be read ({w.detail})"
        else:
            why = f"is invalid: {w.detail}"
        text = (f"{ent} at {st.entry_addr:#x} = {st.entry.raw:#x} {why} while walking {name} "
                f"{va:#x} (CR3={state.cr3:#x})")
        return MemCheck("walk", name, va, False, text, ent, stop, st.level.name)
    acc = w.access
    leaf = w.leaf
    size = w.page_size
    sz = f"{size >> 30} GiB" if size >= 1 << 30 else (
        f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB")
    rights = f"{'user' if acc and acc.user else 'supervisor'} {acc.rwx if acc else '?'}"
    base = f"{name} {va:#x} -> {w.pa:#x} ({sz} page, {rights})"
    bad: list[str] = []
    if acc is not None:
        if need_exec and not acc.executable:
            bad.append("execute-disable (XD)")
        if need_write and not acc.writable and (need_user or state.cr0 & (1 << 16)):
            bad.append("read-only")
        if need_user and not acc.user:
            bad.append("supervisor-only (U/S=0)")
    if bad:
        # the offending level: the first entry lacking U/S, or with XD; else the leaf
        bad_ent: str | None = f"{leaf.level.name}[{leaf.index:#x}]" if leaf is not None \
            else None
        for s in w.steps:
            e = s.entry
            if ("supervisor-only (U/S=0)" in bad and s.level.access_bits and not e.user) or (
                    "execute-disable (XD)" in bad and s.level.access_bits and e.nx):
                bad_ent = f"{s.level.name}[{s.index:#x}]"
                break
        return MemCheck("walk", name, va, False,
                        f"{base}: {' and '.join(bad)} (entry {bad_ent})", bad_ent, "rights",
                        None)
    return MemCheck("walk", name, va, True, base)


def gate_check(target: Target, state: CpuState, vector: int, from_cpl: int | None = None,
               software: bool = False) -> MemCheck:
    """Read and judge IDT[vector] (SDM 6.10-6.14); a failed read names the page entry."""
    from kdiag.x86.exceptions import mnemonic

    label = f"IDT[{vector:#04x}]"
    who = f"{label} ({mnemonic(vector)})" if vector < 32 else label
    gr = read_gate(target, state, vector)
    if gr.gate is None:
        if "cannot be read" in gr.problem and state.paging:
            wc = walk_check(target, state, gr.address, f"{label}")
            if not wc.ok:
                return MemCheck("idt-gate", who, gr.address, False,
                                f"{who} cannot be read: {wc.text}", wc.entry or label, wc.stop,
                                wc.level)
        text = f"{who} at {gr.address:#x}: {gr.problem}"
        return MemCheck("idt-gate", who, gr.address, False, text, label)
    g = gr.gate
    probs = gate_problems(g, state, from_cpl, software)
    ist = getattr(g, "ist", 0)
    desc = (f"{getattr(g, 'kind', '?')}, P={int(g.present)}, DPL={g.dpl}, "
            f"selector {g.selector.raw:#06x}, handler {g.offset:#x}"
            + (f", IST{ist}" if ist else ""))
    if probs:
        return MemCheck("idt-gate", who, gr.address, False,
                        f"{who} at {gr.address:#x}: {'; '.join(probs)} ({desc})", label)
    return MemCheck("idt-gate", who, gr.address, True, f"{who} at {gr.address:#x}: {desc}")


def descriptor_check(target: Target, state: CpuState, selector: int, use: str) -> MemCheck:
    """Read the GDT/LDT descriptor ``selector`` names and judge it for ``use`` (cs/ss/tr/gate)."""
    table = "LDT" if selector & 4 else "GDT"
    label = f"{table}[{selector & 0xFFF8:#x}]"
    who = f"{label} ({use.upper()}={selector:#06x})"
    if selector & 0xFFFC == 0:
        ok = use not in ("cs", "tr", "gate")
        return MemCheck("gdt-entry", who, None, ok,
                        f"{who}: null selector" + ("" if ok else f", invalid for {use.upper()}"),
                        None if ok else label)
    desc, why = read_descriptor(target, state, selector)
    base = (state.ldtr.base if selector & 4 and state.ldtr else
            state.gdtr.base if state.gdtr else 0) + (selector & 0xFFF8)
    if desc is None:
        if why.startswith("cannot read") and state.paging:
            wc = walk_check(target, state, base, label)
            if not wc.ok:
                return MemCheck("gdt-entry", who, base, False, f"{who} cannot be read: "
                                f"{wc.text}", wc.entry or label, wc.stop, wc.level)
        return MemCheck("gdt-entry", who, base, False, f"{who}: {why}", label)
    probs: list[str] = []
    present = getattr(desc, "present", True)
    if not present:
        probs.append("not present (P=0)")
    kind = str(getattr(desc, "kind", ""))
    long_mode = bool(state.efer & (1 << 10))
    if use in ("cs", "gate"):
        if kind != "code":
            probs.append(f"a {kind or 'non-code'} descriptor where a code segment is needed")
        elif long_mode and use == "gate" and not getattr(desc, "long", False):
            probs.append("not a 64-bit code segment (L=0) for a 64-bit handler")
    elif use == "ss":
        if kind != "data" or not getattr(desc, "writable", False):
            probs.append(f"a {kind or '?'} descriptor, SS needs writable data")
    elif use == "tr" and kind != "tss":
        probs.append(f"a {kind or '?'} descriptor, TR needs a TSS")
    text = f"{who} at {base:#x}: {kind or type(desc).__name__}, DPL={getattr(desc, 'dpl', '?')}"
    if probs:
        return MemCheck("gdt-entry", who, base, False, f"{text}: {'; '.join(probs)}", label)
    return MemCheck("gdt-entry", who, base, True, text)


def inspect_state(target: Target, state: CpuState, vectors: tuple[int, ...] = (8,),
                  from_cpl: int | None = None, software: bool = False) -> list[MemCheck]:
    """The memory checks of live triage, in report order (never raises for guest state):

    walks of RIP (a fetch), RSP-8 (the next push) and CR2; the IDT gates of ``vectors`` and
    their handlers; the GDT entries of CS, SS, TR and the gates' selectors; the TSS with the
    stacks a delivery would switch to (RSP0 from ring 3, the gates' IST entries).
    """
    out: list[MemCheck] = []
    if not state.cr0 & 1:
        return out
    long_mode = bool(state.efer & (1 << 10))
    mask = (1 << 64) - 1 if long_mode else 0xFFFFFFFF
    cpl = state.effective_cpl
    cache = None
    if state.paging:
        try:
            from kdiag.paging.tables import TableCache

            cache = TableCache(target)
        except Exception:  # noqa: BLE001 - a cache is an optimisation
            cache = None
    cs = state.segments.get("cs")
    rip_lin = (state.rip + (cs.base if cs is not None and not long_mode else 0)) & mask
    out.append(walk_check(target, state, rip_lin, "RIP", need_exec=True, need_user=cpl == 3,
                          cache=cache))
    out.append(walk_check(target, state, (state.rsp - 8) & mask, "RSP-8", need_write=True,
                          need_user=cpl == 3, cache=cache))
    if state.cr2 and state.paging:
        out.append(walk_check(target, state, state.cr2, "CR2", cache=cache))
    idtr = state.idtr
    if idtr is None or idtr.limit == 0:
        out.append(MemCheck("idt-gate", "IDT", idtr.base if idtr else None, False,
                            "IDTR limit is 0: no gate can be read" if idtr else "IDTR unknown",
                            "IDTR"))
        gates: list[MemCheck] = []
    else:
        gates = [gate_check(target, state, v, from_cpl, software) for v in vectors]
        out += gates
    # the handlers and their code selectors
    ists: set[int] = set()
    for v in vectors:
        if idtr is None or idtr.limit == 0:
            break
        gr = read_gate(target, state, v)
        g = gr.gate
        if g is None or not g.present:
            continue
        out.append(walk_check(target, state, g.offset & mask, f"handler of IDT[{v:#04x}]",
                              need_exec=True, cache=cache))
        if all(c.name != f"GDT[{g.selector.raw & 0xFFF8:#x}] (GATE={g.selector.raw:#06x})"
               for c in out):
            out.append(descriptor_check(target, state, g.selector.raw, "gate"))
        if getattr(g, "ist", 0):
            ists.add(g.ist)  # type: ignore[union-attr]
    if cs is not None:
        out.append(descriptor_check(target, state, cs.selector, "cs"))
    ss = state.segments.get("ss")
    if ss is not None and ss.selector & 0xFFFC:
        out.append(descriptor_check(target, state, ss.selector, "ss"))
    tr = state.tr
    if tr is not None and tr.selector & 0xFFFC:
        out.append(descriptor_check(target, state, tr.selector, "tr"))
    if cpl == 3 or ists:
        tss, why = read_tss(target, state)
        if tss is None:
            out.append(MemCheck("tss", "TSS", tr.base if tr else None, False,
                                f"TSS: {why}", "TR"))
        else:
            stacks: list[tuple[str, int]] = []
            if cpl == 3:
                rsp0 = tss.rsp[0] if isinstance(tss, Tss64) else tss.fields["ESP0"]
                stacks.append(("TSS.RSP0" if isinstance(tss, Tss64) else "TSS.ESP0", rsp0))
            if isinstance(tss, Tss64):
                for n in sorted(ists):
                    stacks.append((f"TSS.IST{n}", tss.ist_entry(n)))
            for label, top in stacks:
                if top == 0:
                    out.append(MemCheck("tss", label, tr.base if tr else None, False,
                                        f"{label} = 0: the CPU would push the frame at "
                                        f"{(top - 8) & mask:#x}", label))
                    continue
                wc = walk_check(target, state, (top - 8) & mask, f"{label}-8", need_write=True,
                                cache=cache)
                out.append(MemCheck("tss", label, tr.base if tr else None, wc.ok,
                                    f"{label} = {top:#x}; {wc.text}",
                                    wc.entry if not wc.ok else None, wc.stop, wc.level))
    return out


def instruction_at(target: Target, state: CpuState) -> tuple[str | None, tuple[int, ...]]:
    """The instruction at CS:RIP read from guest memory, disassembled in the CS mode, and the
    effective addresses of its memory operands (from the registers); (None, ()) if unreadable."""
    from kdiag.triage.location import _disasm_one, _mode_bits

    long_mode = bool(state.efer & (1 << 10))
    mask = (1 << 64) - 1 if long_mode else 0xFFFFFFFF
    cs = state.segments.get("cs")
    lin = (state.rip + (cs.base if cs is not None and not long_mode else 0)) & mask
    code = b""
    for n in (15, PAGE - lin % PAGE):  # a read across into an unmapped page: the first part
        data, _ = read_linear(target, state, lin, min(n, 15))
        if data:
            code = data
            break
    if not code:
        return None, ()
    text, _, mems = _disasm_one(code, state.rip, _mode_bits(state, 64 if long_mode else 32),
                                state, 0)
    return text, mems
