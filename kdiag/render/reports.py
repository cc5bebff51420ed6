"""One report per machine-state command: read through a Target, check, render text and JSON.

The CLI (``kdiag gdt --core dump.elf``) and the gdb extension (``kd gdt``) both call these, so
the two print the same text for the same machine. Each returns a :class:`Report`; the caller
writes ``text`` or ``json.dumps(doc)``.

MSR-dependent checks (SYSCALL/SYSRET selectors against the GDT) run when the caller passes the
MSR values it could read (``msrs``); a backend that reads MSRs only by modifying the guest (gdb)
passes them only when asked to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kdiag.errors import KdiagError, MsrUnavailable
from kdiag.machine.checks import (
    CheckContext,
    Finding,
    Severity,
    check_lstar,
    check_nx,
    check_star,
    run_checks,
)
from kdiag.machine.tables import GdtView, TssView, read_gdt, read_idt, read_tss, segment_users
from kdiag.render import regs, tables
from kdiag.render.findings import Symbolizer
from kdiag.target.base import Target
from kdiag.x86.descriptors import Gate64
from kdiag.x86.msr import Msr, Star

Range = tuple[int, int] | None


@dataclass
class Report:
    text: str
    doc: dict[str, object]
    findings: list[Finding] = field(default_factory=list)

    @property
    def diagnosed(self) -> bool:
        """True when an error or warning was found (CLI exit status 1)."""
        return any(f.severity in (Severity.ERROR, Severity.WARNING) for f in self.findings)


def _try(fn: object) -> object:
    try:
        return fn() if callable(fn) else None
    except KdiagError:
        return None


def gdt_report(target: Target, *, verbose: bool = False, select: Range = None,
               msrs: Mapping[int, int] | None = None) -> Report:
    """``kd gdt``: the GDT with register annotations, segment and SYSCALL/SYSRET checks."""
    st = target.state()
    gdt = read_gdt(target, st)
    ctx = CheckContext(st, target, gdt, msrs=dict(msrs or {}))
    findings = run_checks(ctx, ["sreg", "star"])
    users = segment_users(st)
    return Report(tables.gdt_to_text(gdt, users, findings, verbose, select),
                  tables.gdt_to_json(gdt, users, findings, select), findings)


def _ist_users(entries: Sequence[object]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for e in entries:
        g = getattr(e, "gate", None)
        if isinstance(g, Gate64) and g.present and g.ist:
            out.setdefault(g.ist, []).append(e.vector)  # type: ignore[attr-defined]
    return out


def idt_report(target: Target, *, verbose: bool = False, select: Range = None,
               symbolize: Symbolizer | None = None, show_all: bool = False) -> Report:
    """``kd idt``: gates with symbolized handlers; gate/selector/handler/IST checks."""
    st = target.state()
    idt = read_idt(target, st)
    gdt: GdtView | None = _try(lambda: read_gdt(target, st))  # type: ignore[assignment]
    tss: TssView | None = _try(lambda: read_tss(target, st))  # type: ignore[assignment]
    findings = run_checks(CheckContext(st, target, gdt, idt, tss), ["idt"])
    return Report(tables.idt_to_text(idt, findings, verbose, symbolize, select, show_all),
                  tables.idt_to_json(idt, findings, symbolize, select), findings)


def tss_report(target: Target, *, verbose: bool = False,
               symbolize: Symbolizer | None = None) -> Report:
    """``kd tss``: the current TSS (from TR's cache), which vectors use each IST slot."""
    st = target.state()
    view = read_tss(target, st)
    idt = _try(lambda: read_idt(target, st))
    findings = run_checks(CheckContext(st, target, tss=view), ["tss"])
    users = _ist_users(getattr(idt, "entries", ()))
    doc = tables.tss_to_json(view, findings, symbolize)
    doc["ist_users"] = {f"ist{k}": v for k, v in sorted(users.items())}
    return Report(tables.tss_to_text(view, findings, verbose, symbolize, users), doc, findings)


def cr_report(target: Target, *, verbose: bool = False) -> Report:
    """``kd cr``: CR0/2/3/4/8, EFER, RFLAGS; NX-bit consistency with EFER.NXE."""
    st = target.state()
    findings = check_nx(st, target)
    text = regs.cr_to_text(st, verbose)
    if findings:
        from kdiag.render.findings import findings_to_text

        text += "\n" + findings_to_text(findings)
    doc = regs.cr_to_json(st)
    doc["warnings"] = [f.to_dict() for f in findings]
    return Report(text, doc, findings)


def efer_report(target: Target, *, verbose: bool = False, source: str = "") -> Report:
    """``kd efer``: EFER from the register state (no MSR read needed)."""
    st = target.state()
    findings = check_nx(st, target)
    text = regs.efer_to_text(st.efer, verbose, source)
    if findings:
        from kdiag.render.findings import findings_to_text

        text += "\n" + findings_to_text(findings)
    doc = regs.efer_to_json(st.efer, source)
    doc["warnings"] = [f.to_dict() for f in findings]
    return Report(text, doc, findings)


def sreg_report(target: Target, *, verbose: bool = False) -> Report:
    """``kd sreg``: segment registers and caches, checked against the GDT."""
    st = target.state()
    gdt: GdtView | None = _try(lambda: read_gdt(target, st))  # type: ignore[assignment]
    findings = run_checks(CheckContext(st, target, gdt), ["sreg"]) if gdt else []
    return Report(regs.sreg_to_text(st, gdt, findings, verbose),
                  regs.sreg_to_json(st, gdt, findings), findings)


def msr_report(target: Target, index: int, *, method: str = "",
               symbolize: Symbolizer | None = None, value: int | None = None) -> Report:
    """``kd msr NAME``: one MSR decoded; STAR checked against the GDT, LSTAR for sanity.

    ``value`` skips the read (the caller already has it). Raises ``MsrUnavailable``.
    """
    if value is None:
        value = target.read_msr(index)
    findings: list[Finding] = []
    st = target.state()
    if index == Msr.IA32_STAR:
        gdt = _try(lambda: read_gdt(target, st))
        if isinstance(gdt, GdtView):
            findings = check_star(Star.from_raw(value), gdt, st.efer)
    elif index == Msr.IA32_LSTAR:
        findings = check_lstar(value, st.efer, target)
    elif index == Msr.IA32_EFER:
        findings = check_nx(st, target)
    return Report(regs.msr_to_text(index, value, method, findings, symbolize),
                  regs.msr_to_json(index, value, method, findings, symbolize), findings)


def pat_report(target: Target, *, method: str = "", value: int | None = None) -> Report:
    """``kd pat``: IA32_PAT's eight entries and which PAT/PCD/PWT bits select each."""
    if value is None:
        value = target.read_msr(Msr.IA32_PAT)
    return Report(regs.pat_to_text(value, method), regs.pat_to_json(value, method))


def readable_msrs(target: Target, indices: Sequence[int]) -> dict[int, int]:
    """The MSRs among ``indices`` the target can read (silently skipping the others)."""
    out = {}
    for i in indices:
        try:
            out[i] = target.read_msr(i)
        except MsrUnavailable:
            continue
    return out
