"""Text and JSON renderings of a triage :class:`~kdiag.triage.model.Diagnosis`.

``to_text``: the verdict first, then the chain, the location, the ranked causes with their
evidence and advice, the decisive registers and notes. ``to_json``: the DESIGN.md schema
(``outcome``, ``cpu``, ``mode``, ``trigger``, ``chain``, ``first_fault``, ``registers``,
``location``, ``causes``, ``resets_before``, ``notes``) plus ``verdict``, ``log``,
``resets_before_exact`` and ``memory`` (live or core triage: the page walks of RIP/RSP/CR2, the
IDT gates, GDT entries and TSS stacks read, each with ``ok`` and, when wrong, the ``entry``) and
``backtrace`` (live or core with an ELF: the ``kdiag bt --json`` document of the stack at the
fault, else null). Addresses and register values are hex strings.
"""

from __future__ import annotations

from kdiag.qemulog.records import LogPos
from kdiag.triage.chain import ChainEvent
from kdiag.triage.model import Cause, Diagnosis, Evidence, Location
from kdiag.x86.exceptions import decode_error_code
from kdiag.x86.state import CpuState, SegmentCache

TYPE_CHECKING = False  # typing's constant without importing typing (start-up cost: kdiag._record)
if TYPE_CHECKING:
    from typing import Any

    from kdiag.triage.memory import MemCheck

__all__ = ["to_json", "to_text"]

_GPR64 = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
          "r12", "r13", "r14", "r15", "rip", "rflags")
_GPR32 = {"rax": "eax", "rbx": "ebx", "rcx": "ecx", "rdx": "edx", "rsi": "esi", "rdi": "edi",
          "rbp": "ebp", "rsp": "esp", "rip": "eip", "rflags": "eflags"}


def _h(v: int | None) -> str | None:
    return None if v is None else f"{v:#x}"


def _pos_json(pos: LogPos | None) -> dict[str, int | None]:
    return {"log_line": pos.line if pos else None, "log_offset": pos.offset if pos else None}


def _long_mode(diag: Diagnosis) -> bool:
    st = diag.registers
    return bool(st is not None and st.efer & (1 << 10))


def _event_json(ev: ChainEvent, long_mode: bool) -> dict[str, Any]:
    dec = None
    if ev.vector is not None and ev.error_code is not None:
        d = decode_error_code(ev.vector, ev.error_code, long_mode=long_mode)
        dec = d.to_json() if d is not None else None
    rec = ev.record
    out: dict[str, Any] = {
        "kind": ev.kind,
        "vector": _h(ev.vector),
        "mnemonic": ev.mnemonic,
        "error_code": _h(ev.error_code) if rec is not None else None,
        "error_code_decoded": dec,
        "software_int": rec.is_int if rec is not None else None,
        "cpl": ev.cpl,
        "cs": _h(ev.cs),
        "ip": _h(ev.ip),
        "pc": _h(ev.pc),
        "ss": _h(ev.ss),
        "sp": _h(ev.sp),
        "cr2": _h(ev.cr2),
        "note": ev.note or None,
    }
    out.update(_pos_json(ev.pos))
    return out


def _seg_json(sc: SegmentCache | None) -> dict[str, str] | None:
    if sc is None:
        return None
    return {"selector": f"{sc.selector:#06x}", "base": f"{sc.base:#x}", "limit": f"{sc.limit:#x}",
            "flags": f"{sc.flags:#010x}"}


def registers_json(st: CpuState, width: int) -> dict[str, Any]:
    regs: dict[str, Any] = {}
    for name in _GPR64:
        if name in st.gpr:
            regs[name] = f"{st.gpr[name]:#x}"
            if width == 32 and name in _GPR32:
                regs[_GPR32[name]] = f"{st.gpr[name] & 0xFFFFFFFF:#x}"
    for name in ("cr0", "cr2", "cr3", "cr4", "efer"):
        regs[name] = f"{getattr(st, name):#x}"
    for name, tr in (("gdtr", st.gdtr), ("idtr", st.idtr)):
        regs[name] = {"base": f"{tr.base:#x}", "limit": f"{tr.limit:#x}"} if tr else None
    for name in ("es", "cs", "ss", "ds", "fs", "gs"):
        regs[name] = _seg_json(st.segments.get(name))
    regs["tr"] = _seg_json(st.tr)
    regs["ldtr"] = _seg_json(st.ldtr)
    regs["cpl"] = st.cpl
    regs["halted"] = st.halted
    regs["width"] = width or None
    return regs


def _location_json(loc: Location | None) -> dict[str, Any] | None:
    if loc is None:
        return None
    return {
        "address": f"{loc.address:#x}", "link_address": _h(loc.link_address), "via": loc.via,
        "elf": loc.elf, "symbol": loc.symbol, "offset": _h(loc.offset), "file": loc.file,
        "line": loc.line, "instruction": loc.instruction,
        "bytes": loc.insn_bytes.hex(" ") if loc.insn_bytes else None,
        "mode_bits": loc.mode_bits, "previous": list(loc.previous),
        "source": [{"line": n, "text": t} for n, t in loc.source],
        "memory_operands": [f"{a:#x}" for a in loc.mem_addresses],
    }


def _evidence_json(e: Evidence) -> dict[str, Any]:
    out: dict[str, Any] = {"text": e.text, "source": e.source}
    out.update(_pos_json(e.pos))
    return out


def _cause_json(c: Cause) -> dict[str, Any]:
    return {"id": c.id, "confidence": c.confidence, "summary": c.summary,
            "evidence": [_evidence_json(e) for e in c.evidence], "advice": c.advice,
            "role": c.role, "rule": c.rule}


def _memcheck_json(m: MemCheck) -> dict[str, Any]:
    return {"kind": m.kind, "name": m.name, "address": _h(m.address), "ok": m.ok,
            "text": m.text, "entry": m.entry, "stop": m.stop, "level": m.level}


def _fold_repeats(lines: list[str]) -> list[str]:
    """Fold runs of identical frames (``#N  0x... in f``, the same but for N: a recursion) into
    the first one and a count, so a stack overflow does not bury the rest of the report."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        body = lines[i].split(None, 1)[1] if lines[i].startswith("#") else None
        j = i + 1
        while body is not None and j < len(lines) and lines[j].startswith("#") \
                and lines[j].split(None, 1)[1:] == [body]:
            j += 1
        out.append(lines[i])
        if j - i > 2:
            out.append(f"    ... the same frame {j - i - 1} more times (recursion)")
        else:
            out += lines[i + 1:j]
        i = j
    return out


def _backtrace_json(diag: Diagnosis) -> dict[str, Any] | None:
    if diag.backtrace is None:
        return None
    from kdiag.render.backtrace import to_json as bt_json

    return bt_json(diag.backtrace)


def to_json(diag: Diagnosis) -> dict[str, Any]:
    lm = _long_mode(diag)
    ch = diag.chain
    ff: dict[str, Any] | None
    if ch.first_fault is not None:
        ff = _event_json(ch.first_fault, lm)
        ff["inferred"] = False
        if ff["ip"] is None and diag.first_fault_ip is not None:
            ff["ip"] = _h(diag.first_fault_ip)
            ff["inferred"] = True
    elif diag.first_fault_ip is not None:
        st = diag.registers
        ff = {"kind": "unknown", "vector": None, "mnemonic": None, "error_code": None,
              "error_code_decoded": None, "cpl": st.cpl if st else None,
              "cs": _h(st.segments["cs"].selector) if st and "cs" in st.segments else None,
              "ip": _h(diag.first_fault_ip), "sp": _h(st.rsp) if st else None,
              "cr2": _h(st.cr2) if st else None, "inferred": True,
              **_pos_json(diag.registers_pos)}
    else:
        ff = None
    regs = None
    if diag.registers is not None:
        regs = registers_json(diag.registers, diag.registers_width)
        regs["source"] = diag.registers_source or None
        regs.update(_pos_json(diag.registers_pos))
    return {
        "outcome": diag.outcome,
        "verdict": diag.verdict,
        "cpu": diag.cpu,
        "mode": diag.mode,
        "trigger": _event_json(ch.trigger, lm) if ch.trigger is not None else None,
        "chain": [_event_json(e, lm) for e in ch.events],
        "first_fault": ff,
        "registers": regs,
        "location": _location_json(diag.location),
        "causes": [_cause_json(c) for c in diag.causes],
        "resets_before": diag.resets_before,
        "resets_before_exact": diag.resets_before_exact,
        "notes": list(diag.notes),
        "memory": [_memcheck_json(m) for m in diag.memory],
        "backtrace": _backtrace_json(diag),
        "log": {"path": diag.log_path, "size": diag.log_size,
                "scanned_bytes": diag.scanned_bytes} if diag.log_path is not None else None,
    }


# ---------------------------------------------------------------------------------------------
# text


def _where(pos: LogPos | None) -> str:
    if pos is None:
        return ""
    return f"line {pos.line}" if pos.line is not None else f"byte {pos.offset}"


def _event_text(ev: ChainEvent, lm: bool) -> list[str]:
    rec = ev.record
    pos = _where(ev.pos)
    col = f"{pos:>11}  " if pos else " " * 13
    if ev.kind == "triple-fault":
        return [f"{col}TRIPLE FAULT"]
    if ev.kind == "reset":
        return [f"{col}CPU RESET" + (f"  ({ev.note})" if ev.note else "")]
    if rec is None:
        what = f"{ev.mnemonic:<5} " + (f"(no record: {ev.note})" if ev.note else "(no record)")
        return [f"{col}{what}"]
    label = {"irq": "IRQ", "int": "INT"}.get(ev.kind, "")
    name = f"{label} {rec.vector:#04x}" if label else ev.mnemonic
    line = f"{col}{name:<9} v={rec.vector:02x} e={rec.error_code:04x} cpl={rec.cpl}"
    if rec.cs is not None and rec.ip is not None:
        line += f" IP={rec.cs:04x}:{rec.ip:#x}"
    if rec.ss is not None and rec.sp is not None:
        line += f" SP={rec.ss:04x}:{rec.sp:#x}"
    if rec.cr2 is not None:
        line += f" CR2={rec.cr2:#x}"
    out = [line]
    if ev.vector is not None and ev.kind == "exception":
        d = decode_error_code(ev.vector, rec.error_code, long_mode=lm)
        if d is not None and (rec.error_code or ev.vector == 14):
            out.append(" " * 13 + f"  error code: {d.describe()}")
    return out


def _regs_text(st: CpuState, width: int) -> list[str]:
    g = st.gpr
    w = 16 if width == 64 else 8
    names = _GPR64[:16] if width == 64 else ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp",
                                             "rsp")
    out: list[str] = []
    row: list[str] = []
    for n in names:
        label = n.upper() if width == 64 else _GPR32.get(n, n).upper()
        row.append(f"{label:<3}={g.get(n, 0):0{w}x}")
        if len(row) == 4:
            out.append("  " + " ".join(row))
            row = []
    if row:
        out.append("  " + " ".join(row))
    ip = "RIP" if width == 64 else "EIP"
    fl = "RFL" if width == 64 else "EFL"
    out.append(f"  {ip}={st.rip:0{w}x} {fl}={st.rflags:08x} CPL={st.cpl}"
               + (" HLT=1" if st.halted else ""))
    for n in ("es", "cs", "ss", "ds", "fs", "gs"):
        sc = st.segments.get(n)
        if sc is not None:
            out.append(f"  {n.upper()} ={sc.selector:04x} {sc.base:0{w}x} {sc.limit:08x} "
                       f"{sc.flags:08x}")
    for n, sc2 in (("TR", st.tr), ("LDT", st.ldtr)):
        if sc2 is not None:
            out.append(f"  {n:<3}={sc2.selector:04x} {sc2.base:0{w}x} {sc2.limit:08x} "
                       f"{sc2.flags:08x}")
    for n, tr in (("GDT", st.gdtr), ("IDT", st.idtr)):
        if tr is not None:
            out.append(f"  {n}=     {tr.base:0{w}x} {tr.limit:08x}")
    out.append(f"  CR0={st.cr0:08x} CR2={st.cr2:0{w}x} CR3={st.cr3:0{w}x} CR4={st.cr4:08x} "
               f"EFER={st.efer:016x}")
    return out


def _wrap(text: str, indent: str, width: int = 100, cont: str | None = None) -> list[str]:
    """Word-wrap ``text``: the first line starts with ``indent``, later ones with ``cont``."""
    words = text.split()
    lines: list[str] = []
    cur = indent
    nxt = indent if cont is None else cont
    for word in words:
        if len(cur) + len(word) + 1 > width and cur.strip():
            lines.append(cur.rstrip())
            cur = nxt
        cur += word + " "
    if cur.strip():
        lines.append(cur.rstrip())
    return lines


def to_text(diag: Diagnosis, registers: bool = True) -> str:
    lm = _long_mode(diag)
    ch = diag.chain
    head = diag.outcome.upper().replace("-", " ")
    ctx = []
    if diag.log_path:
        ctx.append(diag.log_path)
    if diag.cpu is not None:
        ctx.append(f"CPU {diag.cpu}")
    if diag.mode:
        ctx.append(f"{diag.mode} mode")
    out = [f"{head}" + (f"  ({', '.join(ctx)})" if ctx else "")]
    out += _wrap(diag.verdict, "  ")
    if ch.events:
        out.append("")
        out.append("Chain:")
        for ev in ch.events:
            out += _event_text(ev, lm)
    loc = diag.location
    if loc is not None:
        out.append("")
        via = " (physical load address: code running before the jump to its link address)" \
            if loc.via == "paddr" else ""
        out.append(f"Location: {loc.address:#x} in {loc.where}{via}")
        if loc.instruction:
            b = f"  [{loc.insn_bytes.hex(' ')}]" if loc.insn_bytes else ""
            for p in loc.previous:
                out.append(f"    {p}")
            out.append(f"  > {loc.link_address or loc.address:#x}: {loc.instruction}{b}"
                       f"  ({loc.mode_bits}-bit)")
        if loc.source:
            out.append(f"  {loc.file}:")
            for n, t in loc.source:
                mark = ">" if n == loc.line else " "
                out.append(f"  {mark}{n:6} | {t}")
    if diag.causes:
        out.append("")
        out.append("Causes (most likely first):")
        for i, c in enumerate(diag.causes, 1):
            role = "" if c.role == "root" else f", {c.role}"
            out += _wrap(f"{i}. {c.id} ({c.confidence:.2f}{role}): {c.summary}", "  ", cont="     ")
            for e in c.evidence:
                w = _where(e.pos)
                src = f"{w}: " if w else (f"[{e.source}] " if e.source != "log" else "")
                out += _wrap(f"- {src}{e.text}", "     ", cont="       ")
            if c.advice:
                out += _wrap(f"advice: {c.advice}", "     ")
    if diag.backtrace is not None and diag.backtrace.frames:
        from kdiag.render.backtrace import to_text as bt_text

        out.append("")
        out.append("Backtrace (the same unwinder as kd bt):")
        out += ["  " + line for line in _fold_repeats(bt_text(diag.backtrace).splitlines())]
    if diag.memory:
        out.append("")
        out.append("Memory (read from the machine):")
        for m in diag.memory:
            out += _wrap(f"{'ok ' if m.ok else 'BAD'} {m.text}", "  ", cont="      ")
    if registers and diag.registers is not None:
        out.append("")
        src = {"first-fault": "at the first fault", "chain": "from the chain",
               "cpu-reset": "logged before the reset", "partial": "partial",
               "live": "live"}.get(diag.registers_source, diag.registers_source)
        w = _where(diag.registers_pos)
        out.append(f"Registers ({src}{', after ' + w if w else ''}):")
        out += _regs_text(diag.registers, diag.registers_width or 64)
    if diag.notes:
        out.append("")
        out.append("Notes:")
        for note in diag.notes:
            out += _wrap(f"- {note}", "  ", cont="    ")
    return "\n".join(out) + "\n"
