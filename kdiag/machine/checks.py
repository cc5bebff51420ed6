"""Consistency checks over the live descriptor tables, in the developer's words.

Each check returns :class:`Finding` values: an ``id`` from the fixed vocabulary below, a
severity, a one-sentence message that says what will go wrong and when, and the ``evidence``
(the table entries and registers it rests on, quoted). ``refs`` name the rows concerned so the
renderers can flag them in the tables.

Vocabulary (stable; tests and JSON consumers rely on it):

=========================  ==================================================================
``star-syscall``           SYSCALL's CS/SS (STAR[47:32], +8) are not 64-bit kernel code / data
``star-sysret``            SYSRET's SS/CS (STAR[63:48]+8, +16) are not user data / 64-bit code
                           (the diary's lesson: user data must come right before user code)
``star-sysret32``          (note) the GDT has 32-bit user code, but SYSRET to compatibility mode
                           would load another descriptor as CS
``lstar-invalid``          SCE is on but LSTAR is zero, non-canonical or unmapped
``segment-beyond-gdt``     a segment register's selector lies beyond the GDT limit (a stale
                           selector from the firmware's GDT, the diary's CS 0x38)
``segment-wrong-type``     a selector names a descriptor of the wrong type/DPL for its register
``segment-stale``          (note) the cached descriptor differs from the GDT entry now
``idt-limit``              the IDT limit cuts off CPU exception vectors
``idt-gate-not-present``   an exception vector's gate is not present
``idt-gate-type``          a gate type the CPU rejects in this mode (e.g. 32-bit gate in long mode)
``idt-gate-selector``      a gate's selector is not a present 64-bit (or 32-bit) code segment
``idt-handler-address``    a handler offset is non-canonical or unmapped
``idt-ist-empty``          a gate uses IST n but the TSS's IST n slot is zero
``tr-not-loaded``          long mode with TR never loaded (no RSP0, no IST)
``tss-limit``              TR's limit is below the 0x67 a TSS needs
``tss-stack``              RSP0 or an IST slot is zero, non-canonical or unmapped
``nx-without-nxe``         page-table entries set bit 63 (NX) while EFER.NXE=0 (reserved-bit #PF)
=========================  ==================================================================

References: Intel SDM Vol. 2B SYSCALL/SYSRET; Vol. 3A 3.4.5 (descriptors), 5.5-5.8
(privilege checks), 6.10-6.14 (IDT, 64-bit gates, IST), 7.7 (64-bit TSS), 4.5 (IA-32e paging,
Table 4-14 ff.: bit 63 is XD when NXE=1, reserved otherwise).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from kdiag.errors import KdiagError
from kdiag.machine.tables import GdtView, IdtView, TssView, is_mapped, mapped_pages
from kdiag.target.base import Target
from kdiag.x86.bits import is_canonical
from kdiag.x86.describe import short_descriptor
from kdiag.x86.descriptors import (
    Descriptor,
    DescriptorKind,
    Gate64,
    IdtEntry,
    LongSystemType,
    SegmentDescriptor,
    SystemType,
)
from kdiag.x86.msr import Star
from kdiag.x86.selector import Selector
from kdiag.x86.state import SEGMENT_NAMES, CpuMode, CpuState, SegmentCache
from kdiag.x86.tss import Tss64


class Severity(StrEnum):
    ERROR = "error"  # will fault as soon as the path is taken
    WARNING = "warning"  # very likely a bug
    NOTE = "note"  # unusual, harmless until some rarely used path


@dataclass(frozen=True)
class Finding:
    """One diagnosis. ``refs``: (``"gdt"``/``"idt"``/``"tss"``/``"sreg"``, key) pairs."""

    id: str
    severity: Severity
    message: str
    evidence: tuple[str, ...] = ()
    refs: tuple[tuple[str, int | str], ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "severity": str(self.severity), "message": self.message,
                "evidence": list(self.evidence)}


# CPU exception vectors the processor actually raises (SDM Vol. 3A Table 6-1). 9 (coprocessor
# segment overrun), 15 and 22-31 are reserved; 20 (#VE) and 21 (#CP) need features.
EXCEPTION_VECTORS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19)
EXCEPTION_NAMES = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD",
                   7: "#NM", 8: "#DF", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF",
                   16: "#MF", 17: "#AC", 18: "#MC", 19: "#XM", 20: "#VE", 21: "#CP"}


def _sel(value: int) -> str:
    return f"0x{value:04x}"


def _entry(gdt: GdtView, selector: int) -> str:
    return f"{gdt.name.lower()}[{_sel(selector & ~7)}] = {short_descriptor(gdt.lookup(selector))}"


def _vectors(vecs: Iterable[int]) -> str:
    return ", ".join(f"{v:#04x}" + (f" {EXCEPTION_NAMES[v]}" if v in EXCEPTION_NAMES else "")
                     for v in vecs)


# --------------------------------------------------------------------------------------------
# SYSCALL / SYSRET


def _is_code64(d: Descriptor | None, dpl: int) -> bool:
    return (isinstance(d, SegmentDescriptor) and d.is_code and d.long and not d.db
            and d.dpl == dpl and d.present)


def _is_data(d: Descriptor | None, dpl: int) -> bool:
    return (isinstance(d, SegmentDescriptor) and d.is_data and d.writable and d.dpl == dpl
            and d.present)


def check_star(star: Star, gdt: GdtView, efer: int) -> list[Finding]:
    """SYSCALL/SYSRET selectors implied by IA32_STAR against the GDT (SDM Vol. 2B).

    The CPU loads fixed descriptor caches and never reads the GDT here, so a wrong layout does
    not fault on SYSRET itself; it faults later, the first time the selector is reloaded from the
    GDT (an interrupt returning with iretq, a context switch), which makes it hard to trace.
    """
    if star.raw == 0 and not efer & 1:
        return []
    out: list[Finding] = []
    kcs, kss = star.syscall_cs, star.syscall_ss
    ucs, uss, ucs32 = star.sysret_cs64, star.sysret_ss, star.sysret_cs32
    star_ev = (f"IA32_STAR = {star.raw:#018x}: SYSCALL CS={_sel(kcs)} SS={_sel(kss)}; "
               f"SYSRET CS={_sel(ucs)} SS={_sel(uss)} (32-bit CS={_sel(ucs32)})")
    bad = []
    if not _is_code64(gdt.lookup(kcs), 0):
        bad.append(f"CS={_sel(kcs)} is {short_descriptor(gdt.lookup(kcs))} "
                   "(needs 64-bit code, DPL 0)")
    if not _is_data(gdt.lookup(kss), 0):
        bad.append(f"SS={_sel(kss)} is {short_descriptor(gdt.lookup(kss))} "
                   "(needs writable data, DPL 0)")
    if bad:
        out.append(Finding(
            "star-syscall", Severity.WARNING,
            "SYSCALL loads selectors that do not match the GDT: " + "; ".join(bad)
            + ". STAR[47:32] must name the 64-bit kernel code descriptor, with kernel data "
            "right after it.",
            (star_ev, _entry(gdt, kcs), _entry(gdt, kss)),
            (("gdt", kcs & ~7), ("gdt", kss & ~7))))
    bad = []
    d_ss, d_cs = gdt.lookup(uss), gdt.lookup(ucs)
    if not _is_data(d_ss, 3):
        bad.append(f"SS={_sel(uss)} lands on {short_descriptor(d_ss)} (needs writable data, DPL 3)")
    if not _is_code64(d_cs, 3):
        bad.append(f"CS={_sel(ucs)} lands on {short_descriptor(d_cs)} (needs 64-bit code, DPL 3)")
    if bad:
        hint = ""
        if (isinstance(d_ss, SegmentDescriptor) and d_ss.is_code
                and isinstance(d_cs, SegmentDescriptor) and d_cs.is_data):
            hint = (" Your GDT has user code before user data; SYSRET takes SS from "
                    "STAR[63:48]+8 and CS from STAR[63:48]+16, so put the user data descriptor "
                    "first and the 64-bit user code right after it.")
        out.append(Finding(
            "star-sysret", Severity.WARNING,
            "SYSRET's selectors do not match the GDT: " + "; ".join(bad) + "." + hint
            + " The wrong selectors fault at the next reload (iretq #GP).",
            (star_ev, _entry(gdt, uss), _entry(gdt, ucs)),
            (("gdt", uss & ~7), ("gdt", ucs & ~7))))
    d32 = gdt.lookup(ucs32)
    has_user32 = any(isinstance(e.descriptor, SegmentDescriptor) and e.descriptor.code_bits == 32
                     and e.descriptor.dpl == 3 and e.descriptor.present for e in gdt.entries)
    if has_user32 and not (isinstance(d32, SegmentDescriptor) and d32.is_code
                           and d32.code_bits == 32 and d32.dpl == 3):
        out.append(Finding(
            "star-sysret32", Severity.NOTE,
            f"SYSRET to 32-bit user code (sysretl) would load CS={_sel(ucs32)}, which is "
            f"{short_descriptor(d32)}; harmless unless you return to compatibility mode.",
            (star_ev, _entry(gdt, ucs32)), (("gdt", ucs32 & ~7),)))
    return out


def check_lstar(lstar: int, efer: int, target: Target | None) -> list[Finding]:
    """With EFER.SCE=1, IA32_LSTAR must be a canonical, mapped entry point."""
    if not efer & 1:
        return []
    why = None
    if lstar == 0:
        why = "is zero"
    elif not is_canonical(lstar):
        why = "is not canonical (SYSCALL raises #GP)"
    elif target is not None and \
            mapped_pages(target, [lstar]).get(lstar >> 12) is False:  # pages known: no read
        why = "is not mapped (SYSCALL faults with #PF at the entry point)"
    if why is None:
        return []
    return [Finding("lstar-invalid", Severity.WARNING,
                    f"EFER.SCE is set but the SYSCALL entry point IA32_LSTAR={lstar:#x} {why}.",
                    (f"IA32_LSTAR = {lstar:#018x}", f"EFER = {efer:#x}"))]


# --------------------------------------------------------------------------------------------
# segment registers


def _cache_attrs(seg: SegmentCache) -> tuple[int, int, int, bool, bool, bool]:
    return (seg.type & 0xE, int(not seg.system), seg.dpl, seg.present, seg.long,
            seg.default_big)


def _desc_attrs(d: SegmentDescriptor) -> tuple[int, int, int, bool, bool, bool]:
    return (d.type & 0xE, int(d.s), d.dpl, d.present, d.long, d.db)


def check_segments(state: CpuState, gdt: GdtView) -> list[Finding]:
    """Each segment register's selector against the GDT (SDM Vol. 3A 3.4.3, 5.5-5.6).

    The hidden cache keeps working after the GDT changes; the fault comes at the next reload
    (``iretq`` reloads CS and SS, which is why a stale CS surfaces in the timer interrupt).
    """
    if state.mode == CpuMode.REAL or state.rflags & (1 << 17):
        return []
    out: list[Finding] = []
    cpl = state.effective_cpl
    lm = state.mode in (CpuMode.LONG, CpuMode.COMPAT)
    for name in SEGMENT_NAMES:
        seg = state.segments.get(name)
        if seg is None:
            continue
        sel = Selector.from_raw(seg.selector & 0xFFFF)
        reg = name.upper()
        if sel.ti:
            continue  # LDT-relative; the LDT view covers it
        if sel.null:
            if name == "cs" or (name == "ss" and not (lm and cpl < 3)):
                out.append(Finding("segment-wrong-type", Severity.ERROR,
                                   f"{reg} holds the null selector {_sel(seg.selector)}.",
                                   (f"{reg} = {_sel(seg.selector)}",), (("sreg", name),)))
            continue
        if not gdt.contains(sel.raw):
            out.append(Finding(
                "segment-beyond-gdt", Severity.ERROR,
                f"{reg}={_sel(sel.raw)} points beyond the GDT limit {gdt.limit:#x} "
                f"(entry {sel.index}, the table has {(gdt.limit + 1) // 8}). The cached "
                f"descriptor still works, but the next reload of {reg} "
                + ("(iretq, an interrupt return, a far return) " if name in ("cs", "ss") else "")
                + f"raises #GP({sel.raw & ~3:#x}). Reload {reg} after lgdt"
                + (" (far return or far jump to the new kernel code selector)." if name == "cs"
                   else "."),
                (f"{reg} = {_sel(seg.selector)} (cached: base={seg.base:#x} "
                 f"flags={seg.flags:#010x})", f"GDTR = {gdt.base:#x} limit {gdt.limit:#x}"),
                (("sreg", name),)))
            continue
        d = gdt.lookup(sel.raw)
        assert d is not None
        problem = None
        if not isinstance(d, SegmentDescriptor) or not d.s:
            problem = f"is {short_descriptor(d)}, not a code or data segment"
        elif name == "cs":
            if not d.is_code:
                problem = "is a data segment"
            elif lm and state.mode == CpuMode.LONG and not d.long:
                problem = f"is {d.code_bits}-bit code but the CPU runs 64-bit code (CS.L=1 cached)"
            elif not d.conforming and d.dpl != cpl:
                problem = f"has DPL {d.dpl} but CPL is {cpl}"
        elif name == "ss":
            if not d.writable:
                problem = "is not a writable data segment"
            elif d.dpl != cpl:
                problem = f"has DPL {d.dpl} but CPL is {cpl}"
        elif d.is_code and not d.readable:
            problem = "is execute-only code (data registers need data or readable code)"
        if problem is None and not d.present:
            problem = "is not present"
        if problem:
            out.append(Finding(
                "segment-wrong-type", Severity.ERROR,
                f"{reg}={_sel(sel.raw)} names gdt[{_sel(sel.offset)}], which {problem}; "
                f"reloading {reg} will fault.",
                (f"{reg} = {_sel(seg.selector)}", _entry(gdt, sel.raw)), (("sreg", name),
                                                                           ("gdt", sel.offset))))
            continue
        assert isinstance(d, SegmentDescriptor)
        if _cache_attrs(seg) != _desc_attrs(d) and seg.flags != 0:
            out.append(Finding(
                "segment-stale", Severity.NOTE,
                f"{reg}'s cached descriptor (flags {seg.flags:#010x}) differs from "
                f"gdt[{_sel(sel.offset)}] now ({short_descriptor(d)}): the GDT changed after "
                f"{reg} was loaded; the next reload picks up the new entry.",
                (f"{reg} = {_sel(seg.selector)} cached flags {seg.flags:#010x}",
                 _entry(gdt, sel.raw)), (("sreg", name), ("gdt", sel.offset))))
    return out


# --------------------------------------------------------------------------------------------
# IDT

_OK_GATES: dict[bool, frozenset[object]] = {
    True: frozenset({LongSystemType.INTERRUPT_GATE_64, LongSystemType.TRAP_GATE_64}),
    False: frozenset({SystemType.INTERRUPT_GATE_16, SystemType.INTERRUPT_GATE_32,
                      SystemType.TRAP_GATE_16, SystemType.TRAP_GATE_32, SystemType.TASK_GATE}),
}


_IDT_MEMO: dict[tuple[object, ...], tuple[Finding, ...]] = {}


def _handler_addresses(idt: IdtView) -> tuple[int, ...]:
    """Handler offsets of the present, well-typed, canonical gates (the ones whose pages
    check_idt probes), computed once per IDT content."""
    key = (idt.raw, idt.long_mode, len(idt.entries))
    hit = _HANDLERS.get(key)
    if hit is None:
        hit = _HANDLERS[key] = _handlers(idt.entries, idt.long_mode)
        if len(_HANDLERS) > 16:
            _HANDLERS.pop(next(iter(_HANDLERS)))
    return hit


_HANDLERS: dict[tuple[object, ...], tuple[int, ...]] = {}


def _handlers(entries: tuple[IdtEntry, ...], lm: bool) -> tuple[int, ...]:
    ok_types = _OK_GATES[lm]
    return tuple(e.gate.offset for e in entries
                 if e.gate.present and e.gate.type in ok_types
                 and e.gate.kind != DescriptorKind.TASK_GATE
                 and not (isinstance(e.gate, Gate64) and not e.gate.upper_valid)
                 and not (lm and not is_canonical(e.gate.offset)))


def check_idt(idt: IdtView, gdt: GdtView | None, tss: TssView | None,
              target: Target | None) -> list[Finding]:
    """Gates of the IDT against the GDT, the TSS and the page tables (SDM 6.10-6.14).

    The handler pages are probed first, in one batch; the rest depends only on the tables'
    bytes and those answers, so an unchanged IDT (the usual case from one stop to the next)
    is checked once per process."""
    page_ok: dict[int, bool | None] = {}
    if target is not None:
        page_ok = mapped_pages(target, list(_handler_addresses(idt)))
    tss64 = tss.tss if tss is not None and isinstance(tss.tss, Tss64) else None
    key = (idt.base, idt.limit, idt.long_mode, idt.raw,
           (gdt.name, gdt.limit, gdt.long_mode, gdt.raw) if gdt is not None else None,
           tuple(tss64.ist) if tss64 is not None else None,
           tuple(sorted(page_ok.items())), target is None)
    hit = _IDT_MEMO.get(key)
    if hit is not None:
        return list(hit)
    out = _check_idt(idt, gdt, tss, target, dict(page_ok))
    if len(_IDT_MEMO) >= 16:
        _IDT_MEMO.pop(next(iter(_IDT_MEMO)))
    _IDT_MEMO[key] = tuple(out)
    return out


def _check_idt(idt: IdtView, gdt: GdtView | None, tss: TssView | None,
               target: Target | None, page_ok: dict[int, bool | None]) -> list[Finding]:
    out: list[Finding] = []
    lm = idt.long_mode
    covered = [v for v in EXCEPTION_VECTORS if idt.covers(v)]
    cut = [v for v in EXCEPTION_VECTORS if not idt.covers(v)]
    if cut:
        out.append(Finding(
            "idt-limit", Severity.ERROR,
            f"The IDT limit {idt.limit:#x} does not cover exception vector(s) {_vectors(cut)}: "
            f"delivering one raises #GP, then #DF, then a triple fault. With {idt.gate_size}-byte "
            f"gates the limit must be at least {32 * idt.gate_size - 1:#x} (all 256: "
            f"{256 * idt.gate_size - 1:#x}).",
            (f"IDTR = {idt.base:#x} limit {idt.limit:#x}",)))
    by_vec = {e.vector: e.gate for e in idt.entries}
    missing = [v for v in covered if not by_vec[v].present]
    if missing:
        out.append(Finding(
            "idt-gate-not-present", Severity.ERROR if 8 in missing or 13 in missing
            or 14 in missing else Severity.WARNING,
            f"Exception vector(s) {_vectors(missing)} have no present gate: the CPU raises "
            "#NP on delivery, which escalates to #DF and a triple fault.",
            tuple(f"idt[{v:#04x}] raw={by_vec[v].raw:#x}" for v in missing[:8]),
            tuple(("idt", v) for v in missing)))
    ok_types = _OK_GATES[lm]
    bad_type: list[int] = []
    bad_sel: dict[int, list[int]] = {}
    noncanon: list[int] = []
    unmapped: dict[int, list[int]] = {}
    ist_empty: dict[int, list[int]] = {}
    sel_ok: dict[int, bool] = {}
    for e in idt.entries:
        g = e.gate
        if not g.present:
            continue
        if g.type not in ok_types or (isinstance(g, Gate64) and not g.upper_valid):
            bad_type.append(e.vector)
            continue
        if g.kind == DescriptorKind.TASK_GATE:
            continue
        if gdt is not None and not g.selector.ti:
            sel = g.selector.raw
            if sel not in sel_ok:
                d = gdt.lookup(sel)
                sel_ok[sel] = isinstance(d, SegmentDescriptor) and d.is_code and d.present and (
                    d.long and not d.db if lm else True)
            if not sel_ok[sel]:
                bad_sel.setdefault(sel, []).append(e.vector)
        if lm and not is_canonical(g.offset):
            noncanon.append(e.vector)
        elif target is not None:
            page = g.offset >> 12
            if page not in page_ok:
                page_ok[page] = is_mapped(target, g.offset)
            if page_ok[page] is False:
                unmapped.setdefault(g.offset, []).append(e.vector)
        if isinstance(g, Gate64) and g.ist and tss is not None and isinstance(tss.tss, Tss64):
            if tss.tss.ist_entry(g.ist) == 0:
                ist_empty.setdefault(g.ist, []).append(e.vector)
    if bad_type:
        want = "64-bit interrupt or trap gates" if lm else "interrupt, trap or task gates"
        out.append(Finding(
            "idt-gate-type", Severity.ERROR,
            f"Vector(s) {_vectors(bad_type)} hold gate types the CPU rejects here (it needs "
            f"{want}); delivery raises #GP.",
            tuple(f"idt[{v:#04x}] type={int(by_vec[v].type):#x} raw={by_vec[v].raw:#x}"
                  for v in bad_type[:8]), tuple(("idt", v) for v in bad_type)))
    for sel, vecs in bad_sel.items():
        assert gdt is not None
        need = "a present 64-bit code segment" if lm else "a present code segment"
        out.append(Finding(
            "idt-gate-selector", Severity.ERROR,
            f"Vector(s) {_vectors(vecs)} use selector {_sel(sel)}, which is "
            f"{short_descriptor(gdt.lookup(sel))}; a gate needs {need}. Delivery raises "
            f"#GP({sel & ~3:#x}).",
            (_entry(gdt, sel), f"e.g. idt[{vecs[0]:#04x}] selector={_sel(sel)}"),
            tuple(("idt", v) for v in vecs) + (("gdt", sel & ~7),)))
    if noncanon:
        out.append(Finding(
            "idt-handler-address", Severity.ERROR,
            f"Vector(s) {_vectors(noncanon)} point to non-canonical handler addresses "
            "(delivery raises #GP); the offset halves are probably filled in wrongly.",
            tuple(f"idt[{v:#04x}] offset={by_vec[v].offset:#x}" for v in noncanon[:8]),
            tuple(("idt", v) for v in noncanon)))
    for addr, vecs in unmapped.items():
        out.append(Finding(
            "idt-handler-address", Severity.ERROR,
            f"Vector(s) {_vectors(vecs)} point to {addr:#x}, which is not mapped: delivery "
            "ends in #PF at the handler, then #DF.",
            (f"idt[{vecs[0]:#04x}] offset={addr:#x} (no translation)",),
            tuple(("idt", v) for v in vecs)))
    for n, vecs in ist_empty.items():
        out.append(Finding(
            "idt-ist-empty", Severity.ERROR,
            f"Vector(s) {_vectors(vecs)} switch to IST{n}, but TSS.IST{n} is 0: the CPU would "
            "push the frame just below address 0 (#PF, then #DF or a triple fault).",
            (f"idt[{vecs[0]:#04x}] IST={n}", f"TSS.IST{n} = 0x0"),
            tuple(("idt", v) for v in vecs) + (("tss", f"ist{n}"),)))
    return out


# --------------------------------------------------------------------------------------------
# TSS


def check_tss(view: TssView, target: Target | None, user_mode: bool = True) -> list[Finding]:
    """The current TSS's stack pointers (SDM 7.7, 6.14.4-6.14.5)."""
    out: list[Finding] = []
    if not view.loaded:
        if view.long_mode:
            out.append(Finding(
                "tr-not-loaded", Severity.WARNING,
                "TR holds the null selector: no TSS is loaded, so an interrupt from user mode "
                "(no RSP0) or through an IST gate cannot switch stacks. Load one with ltr.",
                (f"TR = {_sel(view.tr.selector)}",)))
        return out
    tr = view.tr
    if view.short or tr.limit < 0x67:
        out.append(Finding(
            "tss-limit", Severity.ERROR,
            f"TR's limit {tr.limit:#x} is below 0x67: a TSS needs 104 bytes; ltr and stack "
            "switches through it raise #TS.",
            (f"TR = {_sel(tr.selector)} base={tr.base:#x} limit={tr.limit:#x}",),
            (("tss", "limit"),)))
    tss = view.tss
    if not isinstance(tss, Tss64):
        return out
    slots = [("rsp0", tss.rsp[0])] + [(f"ist{i + 1}", v) for i, v in enumerate(tss.ist)]
    page_ok = mapped_pages(target, [v - 8 for _, v in slots if v and is_canonical(v)]) \
        if target is not None else {}
    for name, value in slots:
        label = name.upper()
        if value == 0:
            if name == "rsp0" and user_mode:
                out.append(Finding(
                    "tss-stack", Severity.WARNING,
                    "TSS.RSP0 is 0: the first interrupt or exception from user mode (CPL 3) "
                    "switches to a stack at address 0 and faults (#PF, then #DF).",
                    (f"TSS at {tr.base:#x}: RSP0 = 0x0",), (("tss", name),)))
            continue
        if not is_canonical(value):
            out.append(Finding(
                "tss-stack", Severity.ERROR,
                f"TSS.{label}={value:#x} is not canonical: switching to it raises #SS/#GP.",
                (f"TSS at {tr.base:#x}: {label} = {value:#x}",), (("tss", name),)))
            continue
        page = ((value - 8) & ((1 << 64) - 1)) >> 12
        ok = page_ok[page] if page in page_ok else (
            is_mapped(target, value - 8) if target is not None else None)
        if ok is False:
            out.append(Finding(
                "tss-stack", Severity.ERROR,
                f"TSS.{label}={value:#x}: the stack below it is not mapped; the first push on "
                "a stack switch faults (#PF; from an IST gate usually a triple fault).",
                (f"TSS at {tr.base:#x}: {label} = {value:#x}; {value - 8:#x} has no translation",),
                (("tss", name),)))
    return out


# --------------------------------------------------------------------------------------------
# EFER.NXE vs. page tables


def check_nx(state: CpuState, target: Target, max_tables: int = 512) -> list[Finding]:
    """With EFER.NXE=0, bit 63 of a present paging entry is reserved (SDM Vol. 3A 4.5, 4.4):
    any access through it raises #PF with the RSVD bit. Scans at most ``max_tables`` tables."""
    if not state.paging or state.efer & (1 << 11) or not state.cr4 & (1 << 5):
        return []
    lm = bool(state.efer & (1 << 10))
    hits: list[str] = []
    read = _PageReader(target)
    if lm:
        levels = 5 if state.cr4 & (1 << 12) else 4
        names = ["PML5", "PML4", "PDPT", "PD", "PT"][5 - levels:]
        stack: list[tuple[int, int, str]] = [(state.cr3 & 0x000FFFFFFFFFF000, 0, "")]
        seen = 0
        while stack and seen < max_tables and len(hits) < 4:
            pa, depth, path = stack.pop()
            table = read(pa)
            seen += 1
            if table is None:
                continue
            for i, e in enumerate(struct.unpack("<512Q", table)):
                if not e & 1:
                    continue
                here = f"{path}{names[depth]}[{i}]"
                if e >> 63:
                    hits.append(f"{here} = {e:#018x} at {pa + 8 * i:#x}")
                leaf = depth == levels - 1 or (depth >= levels - 3 and e & 0x80)
                if not leaf:
                    stack.append((e & 0x000FFFFFFFFFF000, depth + 1, here + " > "))
    else:  # 32-bit PAE: 4 PDPTEs at CR3[31:5]
        pdpt = read(state.cr3 & 0xFFFFF000)
        if pdpt is not None:
            off = state.cr3 & 0xFE0
            for i, e in enumerate(struct.unpack_from("<4Q", pdpt, off)):
                if not e & 1:
                    continue
                pd = read(e & 0x000FFFFFFFFFF000)
                if pd is None:
                    continue
                for j, pde in enumerate(struct.unpack("<512Q", pd)):
                    if pde & 1 and pde >> 63:
                        hits.append(f"PDPT[{i}] > PD[{j}] = {pde:#018x}")
                        if len(hits) >= 4:
                            break
    if not hits:
        return []
    return [Finding(
        "nx-without-nxe", Severity.ERROR,
        "Page-table entries set bit 63 (NX) but EFER.NXE is 0, where that bit is reserved: "
        "every access through them raises #PF with the RSVD error bit. Set EFER.NXE (wrmsr "
        "0xC0000080) before loading CR3, or do not set NX.",
        (f"EFER = {state.efer:#x} (NXE=0)", *hits))]


class _PageReader:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.cache: dict[int, bytes | None] = {}

    def __call__(self, pa: int) -> bytes | None:
        if pa not in self.cache:
            try:
                self.cache[pa] = self.target.read_phys(pa, 4096)
            except KdiagError:
                self.cache[pa] = None
        return self.cache[pa]


# --------------------------------------------------------------------------------------------


@dataclass
class CheckContext:
    """What a set of checks may consult; anything missing is simply skipped."""

    state: CpuState
    target: Target | None = None
    gdt: GdtView | None = None
    idt: IdtView | None = None
    tss: TssView | None = None
    msrs: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def run_checks(ctx: CheckContext, topics: Iterable[str]) -> list[Finding]:
    """Run the checks for ``topics`` (``gdt``, ``sreg``, ``idt``, ``tss``, ``star``, ``nx``)."""
    out: list[Finding] = []
    topics = set(topics)
    efer = ctx.state.efer
    steps: list[tuple[str, Callable[[], list[Finding]]]] = []
    if ctx.gdt is not None:
        gdt = ctx.gdt
        steps.append(("sreg", lambda: check_segments(ctx.state, gdt)))
        star = ctx.msrs.get(0xC0000081)
        if star is not None:
            steps.append(("star", lambda: check_star(Star.from_raw(star), gdt, efer)))
    lstar = ctx.msrs.get(0xC0000082)
    if lstar is not None:
        steps.append(("star", lambda: check_lstar(lstar, efer, ctx.target)))
    if ctx.idt is not None:
        idt = ctx.idt
        steps.append(("idt", lambda: check_idt(idt, ctx.gdt, ctx.tss, ctx.target)))
    if ctx.tss is not None:
        tss = ctx.tss
        steps.append(("tss", lambda: check_tss(tss, ctx.target)))
    if ctx.target is not None:
        target = ctx.target
        steps.append(("nx", lambda: check_nx(ctx.state, target)))
    for topic, fn in steps:
        if topic in topics:
            out.extend(fn())
    return out


__all__ = ["CheckContext", "Finding", "Severity", "check_idt", "check_lstar", "check_nx",
           "check_segments", "check_star", "check_tss", "run_checks"]
