"""One report per machine-state command: read through a Target, check, render text and JSON.

The CLI (``kdiag gdt --core dump.elf``) and the gdb extension (``kd gdt``) both call these, so
the two print the same text for the same machine. Each returns a :class:`Report`; the caller
writes ``text`` or ``json.dumps(doc)``.

MSR-dependent checks (SYSCALL/SYSRET selectors against the GDT) run when the caller passes the
MSR values it could read (``msrs``); a backend that reads MSRs only by modifying the guest (gdb)
passes them only when asked to.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

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
from kdiag.render.findings import Symbolizer, findings_to_text
from kdiag.target.base import Target
from kdiag.x86.msr import Msr, Star
from kdiag.x86.state import CpuState

Range = tuple[int, int] | None


class Report:
    """A command's result. ``text`` and ``doc`` are rendered on first use (a command prints
    one of them), from strings/dicts or from functions producing them."""

    def __init__(self, text: str | Callable[[], str],
                 doc: dict[str, object] | Callable[[], dict[str, object]],
                 findings: Sequence[Finding] = ()) -> None:
        self._text = text
        self._doc = doc
        self.findings = list(findings)

    @property
    def text(self) -> str:
        if callable(self._text):
            self._text = self._text()
        return self._text

    @text.setter
    def text(self, value: str) -> None:
        self._text = value

    @property
    def doc(self) -> dict[str, object]:
        if callable(self._doc):
            self._doc = self._doc()
        return self._doc

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
    return Report(lambda: tables.gdt_to_text(gdt, users, findings, verbose, select),
                  lambda: tables.gdt_to_json(gdt, users, findings, select), findings)


def _ist_users(target: Target, st: CpuState) -> dict[int, list[int]]:
    """IST index -> vectors of present 64-bit gates using it, straight from the IDT bytes
    (byte 4 bits 0-2 = IST, byte 5 bit 7 = P; SDM Figure 6-8)."""
    out: dict[int, list[int]] = {}
    if st.idtr is None or not st.efer & (1 << 10):
        return out
    try:
        raw = target.read_virt(st.idtr.base, min(st.idtr.limit + 1, 4096))
    except KdiagError:
        return out
    raw = raw[:len(raw) // 16 * 16]
    ists = raw[4::16].translate(_LOW3)  # one byte per gate: its IST field
    for m in _NONZERO.finditer(ists):  # only the gates with an IST (usually a handful)
        vec = m.start()
        if raw[vec * 16 + 5] & 0x80:
            out.setdefault(ists[vec], []).append(vec)
    return out


_LOW3 = bytes(b & 7 for b in range(256))
_NONZERO = re.compile(rb"[^\x00]")


def idt_report(target: Target, *, verbose: bool = False, select: Range = None,
               symbolize: Symbolizer | None = None, show_all: bool = False) -> Report:
    """``kd idt``: gates with symbolized handlers; gate/selector/handler/IST checks."""
    st = target.state()
    idt = read_idt(target, st)
    gdt: GdtView | None = _try(lambda: read_gdt(target, st))  # type: ignore[assignment]
    tss: TssView | None = _try(lambda: read_tss(target, st))  # type: ignore[assignment]
    findings = run_checks(CheckContext(st, target, gdt, idt, tss), ["idt"])
    return Report(lambda: tables.idt_to_text(idt, findings, verbose, symbolize, select, show_all),
                  lambda: tables.idt_to_json(idt, findings, symbolize, select), findings)


def tss_report(target: Target, *, verbose: bool = False, symbolize: Symbolizer | None = None,
               view: TssView | None = None) -> Report:
    """``kd tss``: the current TSS (from TR's cache), which vectors use each IST slot.
    ``view``: the TSS the caller already read from ``target`` at this state (not read again)."""
    st = target.state()
    view = view or read_tss(target, st)
    findings = run_checks(CheckContext(st, target, tss=view), ["tss"])
    users = _ist_users(target, st)

    def doc() -> dict[str, object]:
        d = tables.tss_to_json(view, findings, symbolize)
        d["ist_users"] = {f"ist{k}": v for k, v in sorted(users.items())}
        return d

    return Report(lambda: tables.tss_to_text(view, findings, verbose, symbolize, users), doc,
                  findings)


EFER_INFERRED_NOTE = ("(EFER inferred from the CPU mode: a QEMU core does not save it, so SCE "
                      "is unknown; `kd core FILE` in gdb saves the real value beside the core)")


def _efer_inferred(target: Target) -> bool:
    return bool(getattr(target, "efer_inferred", False))


def cr_report(target: Target, *, verbose: bool = False) -> Report:
    """``kd cr``: CR0/2/3/4/8, EFER, RFLAGS; NX-bit consistency with EFER.NXE."""
    st = target.state()
    findings = check_nx(st, target)
    inferred = _efer_inferred(target)

    def text() -> str:
        out = regs.cr_to_text(st, verbose)
        out += "\n" + findings_to_text(findings) if findings else ""
        return out + ("\n" + EFER_INFERRED_NOTE if inferred else "")

    def doc() -> dict[str, object]:
        d = regs.cr_to_json(st)
        d["warnings"] = [f.to_dict() for f in findings]
        if inferred:
            d["efer_inferred"] = True
        return d

    return Report(text, doc, findings)


def efer_report(target: Target, *, verbose: bool = False, source: str = "") -> Report:
    """``kd efer``: EFER from the register state (no MSR read needed)."""
    st = target.state()
    findings = check_nx(st, target)
    inferred = _efer_inferred(target)

    def text() -> str:
        out = regs.efer_to_text(st.efer, verbose, source)
        out += "\n" + findings_to_text(findings) if findings else ""
        return out + ("\n" + EFER_INFERRED_NOTE if inferred else "")

    def doc() -> dict[str, object]:
        d = regs.efer_to_json(st.efer, source)
        d["warnings"] = [f.to_dict() for f in findings]
        if inferred:
            d["efer_inferred"] = True
        return d

    return Report(text, doc, findings)


def sreg_report(target: Target, *, verbose: bool = False) -> Report:
    """``kd sreg``: segment registers and caches, checked against the GDT."""
    st = target.state()
    gdt: GdtView | None = _try(lambda: read_gdt(target, st))  # type: ignore[assignment]
    findings = run_checks(CheckContext(st, target, gdt), ["sreg"]) if gdt else []
    return Report(lambda: regs.sreg_to_text(st, gdt, findings, verbose),
                  lambda: regs.sreg_to_json(st, gdt, findings), findings)


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
