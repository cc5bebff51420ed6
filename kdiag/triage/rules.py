"""The root-cause rules: a table of small functions ``Facts -> list[Cause]``.

Each rule looks at one kind of evidence and returns zero or more causes with ids from
:mod:`kdiag.triage.causes`. Rules never raise for odd guest state and never print; ranking is a
separate pure step (:func:`kdiag.triage.rank.rank`). Memory-backed checks run only when
``facts.target`` is set (live triage); offline they fall back to what the log proves.

References: Intel SDM Vol. 3A 6.12-6.15 (exception delivery, error codes, #DF/#TS/#NP/#SS/#GP/
#PF), 4.7 (#PF error code), 7.7 (64-bit TSS), 6.14.5 (IST); QEMU 7.2 ``target/i386/tcg``.
"""

from __future__ import annotations

from collections.abc import Callable

from kdiag.triage.causes import CAUSE_IDS
from kdiag.triage.chain import ChainEvent
from kdiag.triage.facts import (
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_OSFXSR,
    CR4_PAE,
    CR4_SMAP,
    CR4_SMEP,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    EFER_SCE,
    Facts,
    hx,
    is_canonical,
)
from kdiag.triage.model import Cause, Evidence
from kdiag.x86.exceptions import PageFaultCode, SelectorErrorCode, mnemonic

TYPE_CHECKING = False  # typing's constant without importing typing (start-up cost: kdiag._record)
if TYPE_CHECKING:
    from kdiag.triage.memory import MemCheck

Rule = Callable[[Facts], list[Cause]]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def _cause(cid: str, conf: float, summary: str, evidence: list[Evidence], advice: str,
           role: str = "root", name: str = "") -> Cause:
    assert cid in CAUSE_IDS, cid
    return Cause(cid, round(min(max(conf, 0.0), 1.0), 2), summary, tuple(evidence), advice,
                 role, name)


def _vec(vec: int) -> str:
    return f"vector {vec:#04x}" + (f" ({mnemonic(vec)})" if vec < 32 else "")


def _gate_size(f: Facts) -> int:
    return 16 if f.long_mode else 8


def _delivery_failed(f: Facts) -> bool:
    """More happened after the first fault: its delivery (or a later one) faulted."""
    ex = f.exceptions
    return len(ex) > 1 or f.chain.outcome == "triple-fault"


def _idt_refs(f: Facts) -> list[tuple[ChainEvent, SelectorErrorCode]]:
    out = []
    for ev in f.recorded:
        d = f.decoded(ev)
        if isinstance(d, SelectorErrorCode) and d.idt:
            out.append((ev, d))
    return out


def _sel_refs(f: Facts) -> list[tuple[ChainEvent, SelectorErrorCode]]:
    out = []
    for ev in f.recorded:
        d = f.decoded(ev)
        if isinstance(d, SelectorErrorCode) and not d.idt and not d.is_null:
            out.append((ev, d))
    return out


def _pf(f: Facts, ev: ChainEvent | None) -> PageFaultCode | None:
    if ev is None:
        return None
    d = f.decoded(ev)
    return d if isinstance(d, PageFaultCode) else None


def _leaf_access(f: Facts, va: int):  # type: ignore[no-untyped-def]
    """Effective rights of ``va`` through the target's page tables, or None (offline/failed)."""
    st = f.state or f.final
    if f.target is None or st is None or not st.paging:
        return None
    try:
        from kdiag.paging.config import config_from_state
        from kdiag.paging.walker import walk

        w = walk(f.target, va, config_from_state(st))
    except Exception:  # noqa: BLE001 - a failed walk just leaves the question open
        return None
    return w.access if w.ok else None


def _first_pf(f: Facts) -> ChainEvent | None:
    """The first #PF with a record, if it is the first fault of the chain."""
    first = f.first
    if first is not None and first.vector == 14 and first.record is not None:
        return first
    return None


# ---------------------------------------------------------------------------------------------
# IDT


@rule
def idt_missing(f: Facts) -> list[Cause]:
    st = f.state or f.final
    if st is None or st.idtr is None or not st.cr0 & CR0_PE:
        return []
    idtr = st.idtr
    ev: list[Evidence] = []
    refs = _idt_refs(f)
    escalated = _delivery_failed(f)
    conf = 0.0
    summary = ""
    if idtr.limit == 0:
        summary = f"no IDT loaded: IDTR limit is 0 (base {idtr.base:#x}), so every exception " \
                  "and interrupt faults on delivery"
        ev.append(f.ev_dump(f"IDT= base {idtr.base:#x} limit {idtr.limit:#x}"))
        conf = 0.95 if escalated else 0.8
    elif idtr.base == 0 and idtr.limit in (0x3FF, 0xFFFF):
        summary = "the IDTR still holds the real-mode IVT (base 0, limit " \
                  f"{idtr.limit:#x}) in {'long' if f.long_mode else 'protected'} mode: no lidt " \
                  "was executed"
        ev.append(f.ev_dump(f"IDT= base 0 limit {idtr.limit:#x} with CR0.PE=1"))
        conf = 0.9 if escalated else 0.75
    else:
        return []
    for e, d in refs[:2]:
        ev.append(f.ev_record(e, f"{f.describe_event(e)}: error code = {d.describe()}"))
    if not f.has_chain_records and f.chain.outcome == "triple-fault":
        where = "live machine state, no log" if f.live else "register dump before reset"
        ev.append(Evidence(f"the CPU triple-faulted with this IDTR ({where})",
                           f.final_pos, "dump"))
    cr2 = f.final_cr2
    if cr2 is not None and idtr.base == 0 and cr2 < 0x400 and f.protected and cr2 != 0:
        ev.append(f.ev_dump(f"CR2={cr2:#x} lies in the real-mode IVT: a gate read faulted",
                            final=True))
    first = f.first
    vec = first.vector if first is not None and first.vector is not None else None
    handler = f"the #DF handler (vector 8){'' if vec is None else f' and {mnemonic(vec)}'}"
    advice = (f"Load an IDT with lidt before anything can fault or interrupts are enabled: "
              f"limit = {_gate_size(f)}*entries-1 ({'16' if f.long_mode else '8'}-byte gates), "
              f"covering at least vectors 0-31 with present gates, {handler} included. "
              "Check that the IDTR operand is the 10-byte (64-bit) / 6-byte pseudo-descriptor "
              "and that lidt ran on this CPU (each CPU loads its own IDTR).")
    # root when the first fault is itself a failed IDT access (e.g. an IRQ delivered with no
    # IDT); escalation when some other fault came first and only its delivery failed
    ff_ref = first is not None and any(e is first for e, _ in refs)
    return [_cause("idt-missing", conf, summary, ev, advice,
                   role="root" if ff_ref else "escalation", name="idt_missing")]


@rule
def idt_gate_invalid(f: Facts) -> list[Cause]:
    st = f.state or f.final
    if st is None or st.idtr is None or st.idtr.limit == 0:
        return []
    if st.idtr.base == 0 and st.idtr.limit in (0x3FF, 0xFFFF):
        return []
    out: list[Cause] = []
    size = _gate_size(f)
    seen: set[int] = set()
    for ev, d in _idt_refs(f):
        vec = d.idt_vector()
        if vec is None or vec in seen:
            continue
        seen.add(vec)
        evid = [f.ev_record(ev, f"{f.describe_event(ev)}: error code = {d.describe()}")]
        end = vec * size + size - 1
        if end > st.idtr.limit:
            summary = (f"the gate for {_vec(vec)} lies beyond the IDT "
                       f"limit {st.idtr.limit:#x} (needs {end:#x})")
            evid.append(f.ev_dump(f"IDT= base {st.idtr.base:#x} limit {st.idtr.limit:#x}"))
            advice = (f"Make the IDT cover vector {vec:#04x}: limit = {size}*256-1 = "
                      f"{size * 256 - 1:#x} for a full table, and fill the gate.")
            conf = 0.9
        elif ev.vector == 11:
            summary = f"the IDT gate for {_vec(vec)} is not present"
            advice = (f"Set the present bit (and a handler) in IDT entry {vec:#04x}; check that "
                      "the gate-building code runs before interrupts are enabled and that "
                      "nothing overwrites the IDT.")
            conf = 0.9
        else:
            summary = (f"the IDT gate for {_vec(vec)} is unusable: wrong "
                       "type, or its DPL forbids INT n from this CPL")
            advice = ("Gates must be interrupt (0xE) or trap (0xF) gates; for INT n from ring 3 "
                      "the gate DPL must be 3.")
            conf = 0.75
        trig = f.chain.trigger
        role = "root" if ev is f.first else "escalation"
        if trig is not None and trig.vector == vec:
            role = "root"  # the trigger itself could not be delivered
            conf = min(0.95, conf + 0.05)
            evid.append(f.ev_record(trig, f"delivering {'IRQ' if trig.kind == 'irq' else 'INT'} "
                                          f"{vec:#04x} from cpl={trig.cpl} started the chain"))
        if f.target is not None and st is not None:
            from kdiag.triage.memory import gate_problems, read_gate

            gr = read_gate(f.target, st, vec)
            if gr.gate is not None:
                probs = gate_problems(gr.gate, st, trig.cpl if trig else None,
                                      bool(trig and trig.kind == "int"))
                evid.append(Evidence(f"IDT[{vec:#04x}] at {gr.address:#x}: "
                                     + ("; ".join(probs) if probs else "looks valid now"),
                                     None, "memory"))
                if probs:
                    conf = max(conf, 0.9)
            elif gr.problem:
                evid.append(Evidence(f"IDT[{vec:#04x}]: {gr.problem}", None, "memory"))
        out.append(_cause("idt-gate-invalid", conf, summary, evid, advice, role=role,
                          name="idt_gate_invalid"))
    # live: the first fault's and #DF's gates, even without an IDT-referencing error code
    if f.target is not None and st is not None and f.first is not None and not seen:
        from kdiag.triage.memory import gate_problems, read_gate

        for vec in dict.fromkeys(v for v in (f.first.vector, 8) if v is not None):
            gr = read_gate(f.target, st, vec)
            probs = gate_problems(gr.gate, st, None, False) if gr.gate is not None else (
                [gr.problem] if gr.problem else [])
            if probs and f.chain.outcome == "triple-fault":
                out.append(_cause(
                    "idt-gate-invalid", 0.7,
                    f"the IDT gate for {mnemonic(vec)} is unusable: {'; '.join(probs)}",
                    [Evidence(f"IDT[{vec:#04x}] at {gr.address:#x}: {'; '.join(probs)}", None,
                              "memory")],
                    f"Fill IDT entry {vec:#04x} with a present interrupt gate to a mapped "
                    "handler in a valid code segment.", role="escalation",
                    name="idt_gate_invalid"))
    return out


# ---------------------------------------------------------------------------------------------
# GDT / descriptors / TSS


def _beyond_gdt(f: Facts, sel: int) -> bool:
    st = f.state or f.final
    return bool(st is not None and st.gdtr is not None and not sel & 4
                and (sel & 0xFFF8) + 7 > st.gdtr.limit)


@rule
def gdt_selector(f: Facts) -> list[Cause]:
    st = f.state or f.final
    if st is None or not st.cr0 & CR0_PE:
        return []
    out: list[Cause] = []
    for ev, d in _sel_refs(f):
        evid = [f.ev_record(ev, f"{f.describe_event(ev)}: error code = {d.describe()}")]
        if d.table == "GDT" and _beyond_gdt(f, d.selector):
            gl = st.gdtr.limit if st.gdtr else 0
            evid.append(f.ev_dump(f"GDT= base {hx(st.gdtr.base if st.gdtr else None)} "
                                  f"limit {gl:#x}: the last selector is {gl + 1 - 8:#06x}"))
            out.append(_cause(
                "gdt-selector-invalid", 0.9,
                f"selector {d.selector:#06x} is beyond the GDT limit {gl:#x} "
                f"({mnemonic(ev.vector or 13)} on loading it)", evid,
                "The selector indexes past the end of the GDT: check the selector constants "
                "against the GDT layout (index*8), and the GDTR limit (size-1) given to lgdt; "
                "a far jump/retf/iretq with a stale selector after switching GDTs does this."))
        elif d.table == "LDT" and (st.ldtr is None or st.ldtr.selector & 0xFFFC == 0):
            evid.append(f.ev_dump("LDT= selector 0: no LDT loaded"))
            out.append(_cause(
                "gdt-selector-invalid", 0.85,
                f"selector {d.selector:#06x} has TI=1 (LDT) but no LDT is loaded", evid,
                "Bit 2 of a selector selects the LDT; use GDT selectors (TI=0) or load an LDT."))
        elif ev.vector == 11:
            out.append(_cause(
                "gdt-selector-invalid", 0.8,
                f"the descriptor for selector {d.selector:#06x} is not present", evid,
                "Set the P bit of the descriptor, or fix the selector that names it."))
        else:
            desc_note = ""
            conf = 0.6
            if f.target is not None:
                from kdiag.triage.memory import read_descriptor

                desc, why = read_descriptor(f.target, st, d.selector)
                desc_note = why or f"descriptor: {desc}"
                evid.append(Evidence(f"{d.table}[{d.selector >> 3}]: {desc_note}", None, "memory"))
                conf = 0.75
            out.append(_cause(
                "descriptor-type-invalid", conf,
                f"selector {d.selector:#06x} is inside the {d.table} but its descriptor does not "
                f"fit the use ({mnemonic(ev.vector or 13)})", evid,
                "Check the descriptor's type (code for CS, writable data for SS, TSS for TR), "
                "its DPL against CPL/RPL, and the L/D bits of 64-bit code (L=1, D=0)."))
    # segment caches against the GDT limit
    for name in ("cs", "ss", "ds", "es", "fs", "gs"):
        sc = st.segments.get(name)
        if sc is None or sc.selector & 0xFFFC == 0:
            continue
        if _beyond_gdt(f, sc.selector):
            gl = st.gdtr.limit if st.gdtr else 0
            out.append(_cause(
                "gdt-selector-invalid", 0.7 if name in ("cs", "ss") else 0.5,
                f"{name.upper()}={sc.selector:#06x} lies beyond the current GDT limit {gl:#x}: "
                "the GDT changed after the segment was loaded, and the next reload "
                "(interrupt return, far jump) will fault",
                [f.ev_dump(f"{name.upper()} ={sc.selector:04x}, GDT limit {gl:#x}")],
                "Reload the segment registers (far jump for CS, mov for data, iretq frame) "
                "with selectors of the new GDT right after lgdt, and keep the old GDT's "
                "selectors valid in the new one.", role="context"))
    return out


@rule
def descriptor_types(f: Facts) -> list[Cause]:
    st = f.state or f.final
    if st is None or not st.cr0 & CR0_PE or st.mode == "real":
        return []
    out: list[Cause] = []
    cs = st.segments.get("cs")
    if cs is not None and cs.flags and (cs.system or not cs.is_code):
        out.append(_cause(
            "descriptor-type-invalid", 0.6,
            f"CS={cs.selector:#06x} holds a non-code descriptor (flags {cs.flags:#010x})",
            [f.ev_dump(f"CS ={cs.selector:04x} flags {cs.flags:08x}")],
            "CS must be loaded from a code-segment descriptor (type 0x8-0xF, S=1)."))
    if cs is not None and f.long_mode and cs.long and cs.default_big:
        out.append(_cause(
            "descriptor-type-invalid", 0.6,
            f"CS={cs.selector:#06x} has both L=1 and D=1, which is reserved in IA-32e mode",
            [f.ev_dump(f"CS flags {cs.flags:08x}")],
            "64-bit code segments need L=1, D=0 (e.g. 0x00af9a000000ffff)."))
    tr = st.tr
    if tr is not None and tr.selector & 0xFFFC and tr.flags and (
            not tr.system or tr.type not in (0x1, 0x3, 0x9, 0xB)):
        out.append(_cause(
            "descriptor-type-invalid", 0.55,
            f"TR={tr.selector:#06x} does not hold a TSS descriptor (type {tr.type:#x})",
            [f.ev_dump(f"TR ={tr.selector:04x} flags {tr.flags:08x}")],
            "ltr needs a TSS descriptor (type 9, available)."))
    return out


def _privilege_change(f: Facts) -> ChainEvent | None:
    """The first chain event that was delivered from ring 3 (needs TSS.RSP0)."""
    for ev in f.chain.events:
        if ev.record is not None and ev.record.cpl == 3:
            return ev
    return None


@rule
def tss_rules(f: Facts) -> list[Cause]:
    st = f.state or f.final
    if st is None or not st.cr0 & CR0_PE:
        return []
    out: list[Cause] = []
    ts = f.first_recorded(10)
    if ts is not None:
        d = f.decoded(ts)
        out.append(_cause(
            "tss-invalid", 0.85,
            f"#TS: the TSS or a selector in it is invalid ({d.describe() if d else ''})",
            [f.ev_record(ts, f.describe_event(ts))],
            "Check the TSS descriptor (type 9, limit >= 0x67), ltr, and for 32-bit tasks the "
            "SS0/ESP0 fields."))
    pc = _privilege_change(f)
    tr = st.tr
    if pc is not None and tr is not None:
        bad = ""
        if tr.selector & 0xFFFC == 0:
            bad = "TR is 0: ltr was never executed"
        elif tr.limit < 0x67:
            bad = f"TR limit {tr.limit:#x} < 0x67"
        if bad:
            out.append(_cause(
                "tss-invalid", 0.85,
                f"an interrupt from ring 3 needs the TSS for the ring-0 stack, but {bad}",
                [f.ev_record(pc, f"{f.describe_event(pc)}: delivered from CPL 3"),
                 f.ev_dump(f"TR ={tr.selector:04x} base {tr.base:#x} limit {tr.limit:#x}")],
                "Build a TSS with RSP0 (ESP0/SS0 in 32-bit) pointing at a mapped kernel stack, "
                "install its descriptor in the GDT and load it with ltr before entering user "
                "mode."))
    return out


@rule
def kernel_stack(f: Facts) -> list[Cause]:
    st = f.state or f.final
    pc = _privilege_change(f)
    if st is None or pc is None:
        return []
    mask = (1 << 64) - 1 if f.long_mode else 0xFFFFFFFF
    out: list[Cause] = []
    for ev in f.recorded:
        if ev.vector not in (12, 14) or ev.record is None or ev.record.cpl != 3:
            continue
        pf = _pf(f, ev)
        cr2 = ev.cr2
        usp = ev.sp
        if ev.vector == 14 and (pf is None or pf.user or cr2 is None):
            continue  # a user access, not the CPU pushing the frame
        near_user = cr2 is not None and usp is not None and usp - 0x100 <= cr2 <= usp + 0x40
        if near_user:
            continue
        evid = [f.ev_record(pc, f"{f.describe_event(pc)}: entered from CPL 3"),
                f.ev_record(ev, f"{f.describe_event(ev)}: a supervisor write while the CPU "
                                "pushed the interrupt frame on the ring-0 stack")]
        conf = 0.85
        rsp0_zero = cr2 is not None and (mask - cr2) < 0x40
        if rsp0_zero:
            conf = 0.95
            summary = (f"TSS.RSP0 is 0: the frame push from ring 3 wrapped to {cr2:#x}"
                       if f.long_mode else f"TSS.ESP0 is 0: the frame push wrapped to {cr2:#x}")
        else:
            summary = (f"the ring-0 stack from the TSS (RSP0) is not mapped or invalid: pushing "
                       f"the frame faulted at {hx(cr2)}")
        if f.target is not None:
            from kdiag.triage.memory import read_tss, translate_va

            tss, why = read_tss(f.target, st)
            if tss is not None:
                rsp0 = tss.rsp[0] if hasattr(tss, "rsp") else tss.fields["ESP0"]  # type: ignore[union-attr]
                pa, why2 = translate_va(f.target, st, (rsp0 - 8) & mask)
                evid.append(Evidence(f"TSS.RSP0 = {rsp0:#x}"
                                     + (f" (not mapped: {why2})" if pa is None else
                                        f" (maps to {pa:#x})"), None, "memory"))
                if rsp0 == 0 or pa is None:
                    conf = 0.95
            else:
                evid.append(Evidence(f"TSS: {why}", None, "memory"))
        out.append(_cause(
            "kernel-stack-invalid", conf, summary, evid,
            "Set TSS.RSP0 (ESP0 and SS0 for 32-bit) to the top of a mapped kernel stack for this "
            "CPU before the first switch to user mode, and update it on every task switch; "
            "check that the TSS descriptor's base is the TSS you filled in."))
        break
    return out


@rule
def stack(f: Facts) -> list[Cause]:
    out: list[Cause] = []
    mask = (1 << 64) - 1 if f.long_mode else 0xFFFFFFFF
    for ev in f.recorded:
        rec = ev.record
        if rec is None:
            continue
        if ev.vector == 12:
            out.append(_cause(
                "stack-invalid", 0.75, f"#SS: stack segment fault at SP={hx(rec.sp)}",
                [f.ev_record(ev, f.describe_event(ev))],
                "The stack pointer is non-canonical (64-bit) or outside the SS limit, or SS is "
                "not present."))
            break
        if ev.vector != 14 or rec.cr2 is None or rec.sp is None:
            continue
        pf = _pf(f, ev)
        if pf is None or pf.fetch or (rec.cpl == 3 and not pf.user):
            continue
        cr2, sp = rec.cr2, rec.sp
        if sp - 0x80 <= cr2 < sp + 0x10 or (sp & ~0xFFF) - 0x1000 <= cr2 < (sp & ~0xFFF) \
                and sp - cr2 < 0x1100:
            overflow = cr2 <= sp
            summary = (f"stack overflow: a push/write at CR2={cr2:#x}, at or just below "
                       f"RSP={sp:#x}, hit a non-present page (the guard page below the stack, or "
                       "an unmapped stack)" if overflow
                       else f"the stack at RSP={sp:#x} is not mapped (CR2={cr2:#x})")
            evid = [f.ev_record(ev, f"{f.describe_event(ev)}: CR2 - SP = {cr2 - sp:+#x}")]
            if f.chain.outcome == "triple-fault":
                evid.append(Evidence("with no usable stack the #PF and #DF frames cannot be "
                                     "pushed either: double then triple fault", None, "log"))
            out.append(_cause(
                "stack-invalid", 0.9 if f.chain.outcome == "triple-fault" else 0.8, summary,
                evid,
                "Make the stack bigger or find the runaway recursion / large local array; give "
                "#DF (and NMI/#MC) an IST stack in the TSS so a stack overflow reaches a "
                "handler instead of triple-faulting."))
            break
        if sp & mask == 0 or (f.long_mode and not is_canonical(sp, f.la57)):
            out.append(_cause(
                "stack-invalid", 0.7, f"RSP={sp:#x} is not a usable stack pointer",
                [f.ev_record(ev, f.describe_event(ev))],
                "Set up RSP to the top of a mapped stack before calling into C or enabling "
                "interrupts."))
            break
    # register state alone (cpu_reset dump): CR2 just below RSP
    st = f.final
    if not out and not f.has_chain_records and st is not None and st.paging:
        sp, cr2 = st.rsp, st.cr2
        if sp and sp - 0x80 <= cr2 < sp + 0x10:
            out.append(_cause(
                "stack-invalid", 0.6,
                f"CR2={cr2:#x} is right at RSP={sp:#x}: the last page fault was a stack access "
                "(overflow or unmapped stack)",
                [f.ev_dump(f"RSP={sp:#x} CR2={cr2:#x}", final=True)],
                "Check the stack size and the guard page; give #DF an IST stack."))
    return out


# ---------------------------------------------------------------------------------------------
# paging


def _cr3_changed(f: Facts) -> tuple[int, int] | None:
    prior = f.chain.prior_dump
    st = f.state
    if prior is None or st is None:
        return None
    old = prior.cr.get("cr3")
    if old is not None and old != st.cr3:
        return old, st.cr3
    return None


@rule
def paging_consistency(f: Facts) -> list[Cause]:
    st = f.state or f.final
    if st is None:
        return []
    out: list[Cause] = []
    probs: list[str] = []
    if st.efer & EFER_LMA and not st.cr4 & CR4_PAE:
        probs.append("EFER.LMA=1 with CR4.PAE=0")
    if st.efer & EFER_LMA and not st.cr0 & CR0_PG:
        probs.append("EFER.LMA=1 with CR0.PG=0")
    if st.efer & EFER_LME and st.cr0 & CR0_PG and not st.efer & EFER_LMA:
        probs.append("EFER.LME=1 and CR0.PG=1 but LMA=0 (PAE was off when paging was enabled)")
    if st.cr0 & CR0_PG and not st.cr0 & CR0_PE:
        probs.append("CR0.PG=1 with CR0.PE=0")
    if probs:
        out.append(_cause(
            "paging-setup", 0.7, "inconsistent paging control registers: " + "; ".join(probs),
            [f.ev_dump(f"CR0={st.cr0:#x} CR4={st.cr4:#x} EFER={st.efer:#x}")],
            "Enter long mode in the SDM order (9.8.5): CR4.PAE=1, load CR3 with a PML4, "
            "EFER.LME=1, then CR0.PG=1; LMA follows."))
    # the first fault is an instruction fetch at RIP with everything unmapped
    first = _first_pf(f)
    pf = _pf(f, first)
    if first is not None and pf is not None and not pf.present and first.cr2 == first.ip:
        evid = [f.ev_record(first, f"{f.describe_event(first)}: CR2 == IP, an instruction "
                                   "fetch from a non-present page")]
        conf = 0.0
        changed = _cr3_changed(f)
        if changed:
            evid.append(Evidence(f"CR3 changed from {changed[0]:#x} to {changed[1]:#x} since "
                                 "the previous record", f.chain.decisive_pos, "dump"))
            conf = 0.85
        loc = f.location
        if loc is not None and loc.previous and "cr3" in loc.previous[-1]:
            evid.append(Evidence(f"the instruction before the fault is `{loc.previous[-1]}`",
                                 None, "elf"))
            conf = 0.9
        if loc is not None and loc.previous and "cr0" in loc.previous[-1]:
            evid.append(Evidence(f"the instruction before the fault is `{loc.previous[-1]}` "
                                 "(paging was just enabled)", None, "elf"))
            conf = 0.9
        fcr2 = f.final_cr2
        idtr = (f.final or st).idtr
        if fcr2 is not None and idtr is not None and idtr.limit and \
                idtr.base <= fcr2 <= idtr.base + idtr.limit:
            evid.append(f.ev_dump(f"CR2={fcr2:#x} at the end lies inside the IDT "
                                  f"({idtr.base:#x}+{idtr.limit:#x}): the gate read faulted "
                                  "too", final=True))
            conf = max(conf, 0.8)
        if f.image is not None and first.ip is not None and f.image.contains(first.ip):
            evid.append(Evidence(f"IP {first.ip:#x} is inside the kernel image, so it should be "
                                 "mapped", None, "elf"))
            conf = max(conf, 0.7)
        if conf:
            out.append(_cause(
                "paging-setup", min(conf, 0.85),
                f"the running code at {hx(first.ip)} is not mapped by the page tables in "
                f"CR3={st.cr3:#x}: a CR3 load (or enabling paging) switched to tables that do "
                "not map the kernel", evid,
                "The new page tables must map the code doing the switch (identity map it, or "
                "jump to the higher half first), the stack, the IDT/GDT and the TSS. Dump them "
                "with `kdiag pt` and compare against the kernel's load addresses."))
    # CR2 inside the IDT or GDT at the end of the chain (gate/descriptor read faulted)
    fin = f.final
    if fin is not None and fin.paging and f.chain.outcome == "triple-fault" and \
            not _memory_checks(f):  # with memory, live_memory names the IDT/GDT entries
        fcr2 = fin.cr2
        for nm, tr in (("IDT", fin.idtr), ("GDT", fin.gdtr)):
            if tr is None or tr.limit == 0 or not tr.base <= fcr2 <= tr.base + tr.limit:
                continue
            if any(c.id == "paging-setup" and "not mapped by" in c.summary for c in out):
                break
            out.append(_cause(
                "paging-setup", 0.75,
                f"the {nm} at {tr.base:#x} is not mapped: the last page fault (CR2={fcr2:#x}) "
                f"was the CPU reading the {nm}",
                [f.ev_dump(f"CR2={fcr2:#x} inside {nm}={tr.base:#x}+{tr.limit:#x}", final=True)],
                f"Map the {nm} in every address space (the kernel half of each page table) and "
                f"load {nm}R with its virtual address after paging is on."))
    return out


@rule
def page_fault_kind(f: Facts) -> list[Cause]:
    first = _first_pf(f)
    pf = _pf(f, first)
    if first is None or pf is None or first.record is None:
        return []
    rec = first.record
    if rec.cpl == 3 and not pf.user:
        return []  # a CPU access (frame push, gate/TSS read) entering ring 0: kernel_stack rule
    cr2 = rec.cr2 if rec.cr2 is not None else 0
    st = f.state
    base = [f.ev_record(first, f"{f.describe_event(first)}: {pf.describe()}")]
    out: list[Cause] = []
    if pf.rsvd:
        ev = list(base)
        conf = 0.85
        hint = ("a paging-structure entry has a reserved bit set: the XD bit (63) without "
                "EFER.NXE, physical-address bits above MAXPHYADDR, PS=1 in a PML4E, or garbage "
                "(a table page that was never cleared)")
        if st is not None and not st.efer & EFER_NXE and f.long_mode:
            ev.append(f.ev_dump(f"EFER={st.efer:#x}: NXE=0, so bit 63 (XD) is reserved"))
            conf = 0.95
            hint = "an entry has the XD bit (63) set while EFER.NXE=0"
        out.append(_cause("reserved-bit", conf, f"reserved bit in the page tables for {cr2:#x}: "
                          + hint, ev,
                          "Enable EFER.NXE before using XD, or clear bit 63; zero every new "
                          "page-table page; keep physical addresses below MAXPHYADDR."))
        return out
    if cr2 < 0x1000 and not pf.present:
        what = "call through a null function pointer" if rec.ip == cr2 else \
            f"{'write to' if pf.write else 'read from'} a null pointer (+{cr2:#x})"
        out.append(_cause("null-pointer", 0.9, f"{what}: CR2={cr2:#x} is in the first page",
                          base, "Check the pointer before use; the first page is left unmapped "
                                "on purpose to catch this."))
        return out
    nx_advice = ("Clear XD on the pages holding code (the kernel's .text, trampolines, user "
                 "code); check the loader's segment permissions (p_flags X) and that code is not "
                 "run from the stack or heap.")
    us_advice = ("Set U/S=1 on every level (PML4E, PDPTE, PDE, PTE) for pages user code may "
                 "touch; otherwise this is user code dereferencing a kernel pointer.")
    if pf.present and pf.fetch and pf.user:
        # P=1 U=1 I=1 is what both an XD page and a supervisor-only page give a ring-3 fetch
        access = _leaf_access(f, cr2)
        if access is not None:
            ev = base + [Evidence(f"page walk of {cr2:#x}: user={access.user}, "
                                  f"executable={access.executable}", None, "memory")]
            if not access.user:
                out.append(_cause("user-supervisor-violation", 0.95,
                                  f"ring-3 instruction fetch from {cr2:#x}, a supervisor-only "
                                  "page", ev, us_advice))
            if not access.executable:
                out.append(_cause("nx-violation", 0.95, f"ring-3 instruction fetch from {cr2:#x}, "
                                  "which is mapped execute-disable (XD)", ev, nx_advice))
            if out:
                return out
        amb = ("the error code (P=1 U=1 I=1) is the same for an XD page and a supervisor-only "
               "page; walk the page tables (kdiag pt / kd walk) to tell")
        out.append(_cause("nx-violation", 0.7, f"ring-3 instruction fetch from {cr2:#x} refused: "
                          "the page is execute-disable (XD) or supervisor-only",
                          base + [Evidence(amb, None, "log")], nx_advice))
        out.append(_cause("user-supervisor-violation", 0.7,
                          f"ring-3 instruction fetch from {cr2:#x} refused: the page is "
                          "supervisor-only (U/S=0) or execute-disable",
                          base + [Evidence(amb, None, "log")], us_advice))
        return out
    if pf.present and pf.fetch:
        if st is not None and st.cr4 & CR4_SMEP and cr2 < 1 << 47:
            out.append(_cause(
                "user-supervisor-violation", 0.6,
                f"ring-0 instruction fetch from the user page {cr2:#x} with CR4.SMEP=1", base,
                "SMEP forbids running user pages in ring 0: a kernel jump to a user address."))
        out.append(_cause(
            "nx-violation", 0.9,
            f"instruction fetch from {cr2:#x}, which is mapped execute-disable (XD)", base,
            nx_advice))
        return out
    if pf.present and pf.user:
        out.append(_cause(
            "user-supervisor-violation", 0.85,
            f"ring-3 code {'wrote' if pf.write else 'accessed'} {cr2:#x}, a supervisor-only page "
            "(U/S=0 in some paging level)", base, us_advice))
        return out
    if pf.present and pf.write:
        ev = list(base)
        if st is not None and not pf.user and st.cr0 & CR0_WP:
            ev.append(f.ev_dump("CR0.WP=1: supervisor writes honour read-only pages"))
        out.append(_cause(
            "write-protect-violation", 0.85, f"write to {cr2:#x}, a read-only page", ev,
            "Map the page writable (R/W=1 at every level) or stop writing there (.rodata, "
            "code, copy-on-write pages)."))
        return out
    if pf.present and st is not None and not pf.user:
        smep = bool(st.cr4 & CR4_SMEP)
        smap = bool(st.cr4 & CR4_SMAP)
        if (smep and pf.fetch) or smap:
            out.append(_cause(
                "user-supervisor-violation", 0.6,
                f"supervisor access to {cr2:#x} refused: SMEP/SMAP forbid touching user pages "
                "from ring 0", base + [f.ev_dump(f"CR4={st.cr4:#x} (SMEP={int(smep)}, "
                                                 f"SMAP={int(smap)})")],
                "Use stac/clac around intended user accesses (SMAP) and never execute user "
                "pages in ring 0 (SMEP)."))
            return out
    if not pf.present:
        if rec.ip == cr2 or pf.fetch:
            loc = f.location
            after = ""
            if loc is not None and loc.previous and ("cr3" in loc.previous[-1]
                                                    or "cr0" in loc.previous[-1]):
                after = f" (right after `{loc.previous[-1].split(': ', 1)[-1]}`: see paging-setup)"
            out.append(_cause(
                "code-unmapped", 0.9 if rec.ip == cr2 else 0.8,
                f"instruction fetch from {cr2:#x}, which is not mapped{after}", base,
                "A jump/call/return went to an unmapped address: a bad function pointer, a "
                "corrupted return address, or code the page tables do not cover (kernel "
                "linked at a different address than it was loaded)."))
        elif rec.sp is not None and rec.sp - 0x80 <= cr2 < rec.sp + 0x10:
            pass  # the stack rule explains it
        else:
            out.append(_cause(
                "data-unmapped", 0.75,
                f"{'write to' if pf.write else 'read from'} {cr2:#x}, which is not mapped", base,
                "Map the page before touching it (heap, MMIO, the physical-memory window) or "
                "find where the bad pointer came from (use-after-free, wrong physmap offset)."))
    return out


# ---------------------------------------------------------------------------------------------
# other first faults


@rule
def non_canonical(f: Facts) -> list[Cause]:
    if not f.long_mode:
        return []
    first = f.first
    if first is None or first.vector not in (12, 13) or first.record is None:
        return []
    if first.error_code not in (0, None):
        return []
    st = f.state
    evid = [f.ev_record(first, f.describe_event(first) + ": error code 0")]
    conf = 0.0
    addr = None
    loc = f.location
    if loc is not None and loc.mem_addresses:
        bad = [a for a in loc.mem_addresses if not is_canonical(a, f.la57)]
        if bad:
            addr = bad[0]
            evid.append(Evidence(f"`{loc.instruction}` accesses {addr:#x}, which is not "
                                 "canonical", None, "elf"))
            conf = 0.95
    if not conf and st is not None:
        regs = [(k, v) for k, v in st.gpr.items()
                if k not in ("rflags",) and not is_canonical(v, f.la57)]
        if regs:
            evid.append(f.ev_dump("non-canonical registers: "
                                  + ", ".join(f"{k.upper()}={v:#x}" for k, v in regs)))
            conf = 0.7
            addr = regs[0][1]
    if not conf:
        return []
    return [_cause(
        "non-canonical-address", conf,
        f"a memory access used the non-canonical address {hx(addr)} (bits 63:{56 if f.la57 else 47}"
        " must all equal the top implemented bit)", evid,
        "Find where the pointer came from: an uninitialised or corrupted pointer, a physical "
        "address used without the physmap offset, or a sign-extension bug in address math.")]


@rule
def invalid_opcode(f: Facts) -> list[Cause]:
    first = f.first
    if first is None or first.vector != 6:
        return []
    st = f.state
    evid = [f.ev_record(first, f.describe_event(first))] if first.record else []
    summary = f"invalid opcode at {hx(first.ip)}"
    advice = ("#UD: a ud2 (BUG()/__builtin_trap/unreachable), an instruction the CPU mode does not "
              "allow, SSE/AVX before CR4.OSFXSR/OSXSAVE are set, syscall with EFER.SCE=0, or "
              "executing data (bad jump target).")
    conf = 0.85
    loc = f.location
    if loc is not None and loc.instruction:
        ins = loc.instruction
        evid.append(Evidence(f"the instruction is `{ins}` ({loc.mode_bits}-bit)", None, "elf"))
        mnem = ins.split()[0] if ins.split() else ""
        if mnem == "ud2":
            summary = f"ud2 executed at {hx(first.ip)} (a deliberate trap: BUG()/unreachable)"
            conf = 0.95
        elif mnem in ("syscall", "sysret", "sysretq") and st is not None and \
                not st.efer & EFER_SCE:
            summary = f"{mnem} with EFER.SCE=0 at {hx(first.ip)}"
            evid.append(f.ev_dump(f"EFER={st.efer:#x}: SCE=0"))
            conf = 0.95
        elif st is not None and not st.cr4 & CR4_OSFXSR and (
                "xmm" in ins or mnem.startswith(("movap", "movup", "movdq", "pxor", "xorp"))):
            summary = f"SSE instruction `{ins}` with CR4.OSFXSR=0"
            evid.append(f.ev_dump(f"CR4={st.cr4:#x}: OSFXSR=0"))
            advice = ("Enable SSE (CR0.EM=0, CR0.MP=1, CR4.OSFXSR=1, CR4.OSXMMEXCPT=1) before "
                      "running compiler-generated code, or build the kernel with -mno-sse.")
            conf = 0.95
        elif ins == "(bad)":
            summary = f"the bytes at {hx(first.ip)} are not a valid instruction (jumped into data?)"
    return [_cause("invalid-opcode", conf, summary, evid, advice)]


@rule
def divide_error(f: Facts) -> list[Cause]:
    first = f.first
    if first is None or first.vector != 0:
        return []
    evid = [f.ev_record(first, f.describe_event(first))] if first.record else []
    if f.location is not None and f.location.instruction:
        evid.append(Evidence(f"the instruction is `{f.location.instruction}`", None, "elf"))
    return [_cause("divide-error", 0.9, f"divide error at {hx(first.ip)}: division by zero or "
                   "a quotient too large for the destination", evid,
                   "Check the divisor (and for div/idiv the high half in EDX/RDX: it must be "
                   "zero- or sign-extended, e.g. xor edx, edx / cqo).")]


@rule
def general_protection(f: Facts) -> list[Cause]:
    first = f.first
    if first is None or first.vector != 13 or first.record is None:
        return []
    d = f.decoded(first)
    if isinstance(d, SelectorErrorCode) and not d.is_null:
        return []  # selector/IDT rules explain it
    evid = [f.ev_record(first, f.describe_event(first) + ": error code 0")]
    summary = f"general protection fault at {hx(first.ip)} with error code 0"
    if f.location is not None and f.location.instruction:
        evid.append(Evidence(f"the instruction is `{f.location.instruction}`", None, "elf"))
        summary += f" on `{f.location.instruction}`"
    if first.record.cpl == 3:
        summary += " in ring 3 (privileged instruction or I/O without IOPL?)"
    return [_cause("general-protection", 0.5, summary, evid,
                   "Error code 0 means no selector was involved: a privileged instruction at "
                   "CPL>0, wrmsr/rdmsr of a bad MSR or value, a non-canonical address, a segment "
                   "limit violation, writing reserved CR bits, or an iretq with a bad frame.")]


@rule
def irq_vector_conflict(f: Facts) -> list[Cause]:
    """A hardware IRQ delivered on an exception vector: the PIC was not remapped."""
    trig = f.chain.trigger
    if trig is None or trig.kind != "irq" or trig.vector is None or trig.vector >= 32:
        return []
    return [_cause(
        "idt-gate-invalid", 0.8,
        f"hardware IRQ delivered on vector {trig.vector:#04x} ({mnemonic(trig.vector)}): the "
        "8259 PIC still uses the BIOS vectors 0x08-0x0f, which collide with CPU exceptions",
        [f.ev_record(trig, f"Servicing hardware INT={trig.vector:#04x}")],
        "Remap the PIC (ICW2 = 0x20/0x28) or mask it before enabling interrupts.",
        role="context")]


# ---------------------------------------------------------------------------------------------
# state-only (cpu_reset dump without -d int)


@rule
def reset_dump_only(f: Facts) -> list[Cause]:
    """What the register state alone says when the log has no interrupt records."""
    st = f.final
    if f.has_chain_records or st is None or f.chain.outcome != "triple-fault":
        return []
    out: list[Cause] = []
    cr2, rip = st.cr2, st.rip
    if st.paging and cr2 == rip and cr2:
        out.append(_cause(
            "code-unmapped", 0.55,
            f"CR2 == RIP ({rip:#x}): the last page fault was an instruction fetch at the "
            "current instruction", [f.ev_dump(f"RIP={rip:#x} CR2={cr2:#x}", final=True)],
            "The code at RIP is not mapped (CR3 switch, jump to an unmapped address).", ))
    elif st.paging and 0 < cr2 < 0x1000 and not (st.idtr and st.idtr.base == 0):
        out.append(_cause(
            "null-pointer", 0.5, f"CR2={cr2:#x}: the last page fault hit the first page",
            [f.ev_dump(f"CR2={cr2:#x}", final=True)],
            "A null-pointer access; CR2 can be stale, so confirm with -d int."))
    elif st.paging and cr2 and st.cpl == 0 and not any(
            t is not None and t.limit and t.base <= cr2 <= t.base + t.limit
            for t in (st.idtr, st.gdtr)) and not (  # CR2 in the IDT/GDT: paging_consistency
            st.rsp - 0x100 <= cr2 <= st.rsp + 0x10):  # CR2 at RSP: the stack rule says so
        out.append(_cause(
            "data-unmapped", 0.35,
            f"CR2={cr2:#x}: the last page fault (maybe the first fault) was at this address",
            [f.ev_dump(f"CR2={cr2:#x} RIP={rip:#x}", final=True)],
            "CR2 holds the address of the last #PF; with -d int the log shows whether it "
            "started the chain."))
    loc = f.location
    if loc is not None and st.paging and not f.live and loc.address == rip:
        # the dump's RIP is the faulting instruction when delivery failed: judge it with the ELF
        in_tables = [nm for nm, t in (("IDT", st.idtr), ("GDT", st.gdtr))
                     if t is not None and t.limit and t.base <= cr2 <= t.base + t.limit]
        prev = loc.previous[-1].split(": ", 1)[-1] if loc.previous else ""
        if "cr3" in prev and (cr2 == rip or in_tables):
            ev = [Evidence(f"the instruction before RIP is `{prev}`", None, "elf"),
                  f.ev_dump(f"RIP={rip:#x} CR2={cr2:#x}", final=True)]
            if in_tables:
                ev.append(f.ev_dump(f"CR2={cr2:#x} lies in the {in_tables[0]}: the CPU could not "
                                    f"read the {in_tables[0]} either", final=True))
            out.append(_cause(
                "code-unmapped", 0.8,
                f"RIP {rip:#x} is the instruction right after `{prev}`: the new page tables do "
                "not map the running code" + (f" (nor the {in_tables[0]})" if in_tables else ""),
                ev, "The new page tables must map the code doing the switch (identity map it, "
                "or jump to the higher half first), the stack, the IDT/GDT and the TSS."))
        for addr in loc.mem_addresses:
            ev = [Evidence(f"the instruction at RIP is `{loc.instruction}`, its memory operand "
                           f"{addr:#x} (from the dump's registers)", None, "elf"),
                  f.ev_dump(f"CR2={cr2:#x}", final=True)]
            if f.long_mode and not is_canonical(addr, f.la57):
                out.append(_cause(
                    "non-canonical-address", 0.75,
                    f"`{loc.instruction}` at RIP accesses {addr:#x}, which is not canonical",
                    ev[:1], "Find where the pointer came from (uninitialised, corrupted, a "
                    "physical address without the physmap offset)."))
                break
            if addr < 0x1000:
                out.append(_cause(
                    "null-pointer", 0.8 if cr2 == addr else 0.6,
                    f"`{loc.instruction}` at RIP dereferences {addr:#x} (a NULL pointer)"
                    + (": CR2 holds that address, the last page fault" if cr2 == addr else ""),
                    ev, "Check the pointer before use; where did it come from (an argument in "
                    "the wrong register, an unset field)?"))
                break
    if st.cpl == 3:
        tr = st.tr
        out.append(_cause(
            "kernel-stack-invalid", 0.55 if tr is not None and tr.selector & 0xFFFC else 0.5,
            "the CPU was in ring 3 when it triple-faulted: entering the kernel needs "
            "TSS.RSP0 and the gate, and one of them failed",
            [f.ev_dump(f"CPL=3, TR ={hx(tr.selector if tr else None)}", final=True)],
            "Check TSS.RSP0 (mapped, 16-byte aligned), the TSS descriptor and ltr, and that the "
            "IDT gates are present; run with -d int to see which exception came first."))
        if tr is not None and tr.selector & 0xFFFC == 0:
            out.append(_cause(
                "tss-invalid", 0.8, "ring 3 with TR=0: no TSS, so no ring-0 stack for interrupts",
                [f.ev_dump("TR =0000", final=True)],
                "Load a TSS with ltr before entering user mode."))
    return out


# ---------------------------------------------------------------------------------------------
# memory-backed (live Target: gdb, QMP, core dump)


def _memory_checks(f: Facts) -> list[MemCheck]:
    checks = f.extra.get("memory")
    return checks if isinstance(checks, list) else []


def _check(f: Facts, name: str) -> MemCheck | None:
    return next((c for c in _memory_checks(f) if c.name == name), None)


@rule
def live_memory(f: Facts) -> list[Cause]:
    """Judge what the memory checks (:func:`kdiag.triage.memory.inspect_state`) found: the page
    walks of RIP, RSP and CR2 (naming the entry that stops them), the exception gates (0-31,
    #DF's IST) and, from ring 3, TSS.RSP0; and the memory operand of the instruction at RIP."""
    st = f.final if f.live else (f.final or f.state)
    if f.target is None or st is None or not st.cr0 & CR0_PE:
        return []
    from kdiag.triage.memory import (
        gate_problems,
        instruction_at,
        read_gate,
        read_tss,
        translate_va,
        walk_check,
    )

    out: list[Cause] = []
    tgt = f.target
    mask = (1 << 64) - 1 if f.long_mode else 0xFFFFFFFF
    rip_c, rsp_c = _check(f, "RIP"), _check(f, "RSP-8")
    idt_unmapped = ""
    if st.idtr is not None and st.idtr.limit and st.paging:
        wc_idt = walk_check(tgt, st, st.idtr.base, "the IDT base")
        if not wc_idt.ok and wc_idt.stop != "rights":
            idt_unmapped = wc_idt.text
    loc = f.location
    after_cr3 = loc is not None and bool(loc.previous) and "cr3" in loc.previous[-1]
    if rip_c is not None and not rip_c.ok and rip_c.stop != "rights":
        evid = [Evidence(rip_c.text, None, "memory")]
        if after_cr3 and loc is not None:
            evid.append(Evidence(f"the instruction before RIP is `{loc.previous[-1]}`: the CR3 "
                                 "load switched to tables without the running code", None, "elf"))
        out.append(_cause(
            "code-unmapped", 0.9,
            f"RIP {st.rip:#x} is not mapped: {rip_c.entry or 'the walk'} "
            f"{'is not present' if rip_c.stop == 'not-present' else 'stops the walk'}, so the "
            "instruction cannot be fetched", evid,
            "The code at RIP is not in the current page tables: after a CR3 load the new tables "
            "must map the code doing the switch (and the stack, IDT, GDT, TSS); otherwise a "
            "jump/return went to an unmapped address."))
        if (rsp_c is not None and not rsp_c.ok) or idt_unmapped:
            what = " and ".join(x for x in ("the stack" if rsp_c is not None and not rsp_c.ok
                                            else "", "the IDT" if idt_unmapped else "") if x)
            ev2 = [Evidence(rip_c.text, None, "memory")]
            if rsp_c is not None and not rsp_c.ok:
                ev2.append(Evidence(rsp_c.text, None, "memory"))
            if idt_unmapped:
                ev2.append(Evidence(idt_unmapped, None, "memory"))
            out.append(_cause(
                "paging-setup", 0.85,
                f"the page tables in CR3={st.cr3:#x} map neither the running code nor {what}: "
                "nothing could handle the fault, hence the triple fault", ev2,
                "The page tables in CR3 do not map the kernel: check the CR3 value loaded last "
                "and that the new tables map code, stack, IDT, GDT and TSS (`kd pt`).",
                role="escalation"))
    elif rip_c is not None and not rip_c.ok:  # mapped, but the rights refuse the fetch
        ev = [Evidence(rip_c.text, None, "memory")]
        if "execute-disable" in rip_c.text:
            out.append(_cause("nx-violation", 0.9, f"RIP {st.rip:#x} is in an execute-disable "
                              f"page ({rip_c.entry})", ev,
                              "Clear XD on the pages holding code."))
        if "supervisor-only" in rip_c.text:
            out.append(_cause("user-supervisor-violation", 0.9,
                              f"ring-3 RIP {st.rip:#x} is in a supervisor-only page "
                              f"({rip_c.entry} has U/S=0)", ev,
                              "Set U/S=1 on every level for pages user code runs from."))
    if rsp_c is not None and not rsp_c.ok and not out:
        out.append(_cause(
            "stack-invalid", 0.85,
            f"the stack at RSP={st.rsp:#x} is not usable: "
            f"{rsp_c.entry or 'the walk'} stops the next push", [Evidence(rsp_c.text, None,
                                                                           "memory")],
            "Stack overflow into a guard page, or RSP was never set up: make the stack bigger "
            "and give #DF an IST stack so an overflow reaches a handler."))
    # the memory operand of the faulting instruction (live registers are exact at RIP)
    if rip_c is not None and rip_c.ok and f.live:
        text, mems = instruction_at(tgt, st)
        for addr in mems:
            if f.long_mode and not is_canonical(addr, f.la57):
                out.append(_cause(
                    "non-canonical-address", 0.85,
                    f"`{text}` at RIP accesses {addr:#x}, which is not canonical",
                    [Evidence(f"the instruction at RIP {st.rip:#x} (read from memory) is "
                              f"`{text}`; its operand is {addr:#x}", None, "memory")],
                    "Find where the pointer came from (uninitialised, corrupted, a physical "
                    "address without the physmap offset)."))
                break
            wc = walk_check(tgt, st, addr, "the operand")
            if wc.ok:
                continue
            ev = [Evidence(f"the instruction at RIP {st.rip:#x} (read from memory) is "
                           f"`{text}`", None, "memory"), Evidence(wc.text, None, "memory")]
            if addr < 0x1000:
                out.append(_cause("null-pointer", 0.85,
                                  f"`{text}` dereferences {addr:#x}, in the first page (a NULL "
                                  "pointer)", ev,
                                  "Check the pointer before use; where did it come from (an "
                                  "argument in the wrong register, an unset field)?"))
            elif not (st.rsp - 0x100 <= addr <= st.rsp + 0x100):
                out.append(_cause("data-unmapped", 0.75,
                                  f"`{text}` accesses {addr:#x}, which is not mapped "
                                  f"({wc.entry})", ev,
                                  "Map the page before touching it, or find where the bad "
                                  "pointer came from."))
            break
    # exception gates
    if st.idtr is not None and st.idtr.limit and idt_unmapped and not any(
            c.id == "paging-setup" for c in out):
        out.append(_cause(
            "paging-setup", 0.8, f"the IDT at {st.idtr.base:#x} is not mapped: no exception "
            "can be delivered", [Evidence(idt_unmapped, None, "memory")],
            "Map the IDT in the kernel half of every page table.", role="escalation"))
    elif st.idtr is not None and st.idtr.limit and not idt_unmapped:
        bad: list[str] = []
        df_ist = 0
        for vec in range(32):
            if vec in (2, 9, 15) or 20 <= vec <= 31:
                continue  # NMI, reserved, #VE (EPT) and #CP (CET): often left empty on purpose
            gr = read_gate(tgt, st, vec)
            if gr.gate is None:
                bad.append(f"{_vec(vec)}: {gr.problem}")
                continue
            probs = gate_problems(gr.gate, st, None, False)
            if probs:
                bad.append(f"{_vec(vec)}: {'; '.join(probs)}")
            if vec == 8:
                df_ist = getattr(gr.gate, "ist", 0)
        if bad:
            out.append(_cause(
                "idt-gate-invalid", 0.75 if any("#DF" in b for b in bad) else 0.6,
                f"{len(bad)} exception gate{'s' if len(bad) != 1 else ''} unusable"
                + (" (including #DF)" if any("#DF" in b for b in bad) else ""),
                [Evidence(b, None, "memory") for b in bad[:8]],
                "Fill IDT entries 0-19 with present interrupt gates to mapped handlers in the "
                "kernel code segment; #DF above all.", role="escalation"))
        if df_ist and f.long_mode:
            tss, why = read_tss(tgt, st)
            if tss is not None and hasattr(tss, "ist_entry"):
                ist = tss.ist_entry(df_ist)  # type: ignore[union-attr]
                pa, why2 = translate_va(tgt, st, (ist - 8) & mask) if ist else (None, "IST is 0")
                if pa is None:
                    out.append(_cause(
                        "kernel-stack-invalid", 0.8,
                        f"#DF uses IST{df_ist} = {ist:#x}, which is not a usable stack ({why2})",
                        [Evidence(f"IDT[8].IST={df_ist}, TSS.IST{df_ist}={ist:#x}", None,
                                  "memory")],
                        "Point the IST entry at the top of a mapped, dedicated stack."))
            elif why:
                out.append(_cause("tss-invalid", 0.75, f"#DF uses IST{df_ist} but {why}",
                                  [Evidence(why, None, "memory")],
                                  "Load a valid TSS (ltr) before relying on IST stacks."))
    # ring 3: TSS.RSP0 must be a mapped stack
    if st.effective_cpl == 3 and f.live:
        tss, why = read_tss(tgt, st)
        if tss is None:
            out.append(_cause("tss-invalid", 0.8, f"ring 3 without a usable TSS: {why}",
                              [Evidence(why, None, "memory")],
                              "Load a TSS with RSP0 set before entering user mode."))
        else:
            rsp0 = tss.rsp[0] if hasattr(tss, "rsp") else tss.fields["ESP0"]  # type: ignore[union-attr]
            pa, why2 = translate_va(tgt, st, (rsp0 - 8) & mask)
            if rsp0 == 0 or pa is None:
                out.append(_cause(
                    "kernel-stack-invalid", 0.9,
                    f"TSS.RSP0 = {rsp0:#x} is not a usable kernel stack"
                    + (f" ({why2})" if why2 else ""),
                    [Evidence(f"TSS at {st.tr.base if st.tr else 0:#x}: RSP0={rsp0:#x}", None,
                              "memory")],
                    "Set TSS.RSP0 to the top of a mapped kernel stack before entering ring 3."))
    return out


RULE_NAMES = [r.__name__ for r in RULES]

__all__ = ["RULES", "RULE_NAMES", "Rule", "rule"]


def run_rules(f: Facts, rules: list[Rule] | None = None) -> list[Cause]:
    """Apply ``rules`` (default: all) and tag each cause with its rule's name."""
    from kdiag._log import exception

    out: list[Cause] = []
    for r in rules if rules is not None else RULES:
        try:
            found = r(f)
        except Exception:  # a rule bug must not cost the whole diagnosis
            exception(__name__, "triage rule %s failed", r.__name__)
            continue
        for c in found:
            out.append(c if c.rule else Cause(c.id, c.confidence, c.summary, c.evidence,
                                              c.advice, c.role, r.__name__))
    return out

