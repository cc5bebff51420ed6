"""Control registers, EFER, segment registers, MSRs and the PAT as text and JSON.

Text follows Bochs' ``creg``/``sreg``: flag names upper-case when set, lower-case when clear::

    CR0=0x80010033: PG cd nw am WP NE ET ts em MP PE
    EFER=0x00000d01: tce ffxsr lmsle svme NXE LMA LME SCE
    cs=0x0008 base=0x0000000000000000 limit=0xffffffff flags=0x00af9b00: Code segment, ..., 64-bit, DPL=0

JSON: ``cr`` -> ``{"cr0": {"raw": "0x..", "flags": ["PG", ...]}, "cr2": .., "cr3": {"raw",
"base", "pcid"|"pwt"/"pcd"}, "cr4", "cr8", "efer", "rflags"}``; ``sreg`` -> ``{"cs": {"selector",
"base", "limit", "flags", "dpl", "kind", "description", "gdt"}, ...}``; ``msr`` -> ``{"name",
"index", "value", "decoded", "method"}``; ``pat`` -> ``{"raw", "entries": [{"index", "pat",
"pcd", "pwt", "type"}]}``.
"""

from __future__ import annotations

from collections.abc import Sequence

from kdiag.machine.checks import Finding
from kdiag.machine.tables import GdtView, cache_descriptor
from kdiag.render.findings import (
    Symbolizer,
    findings_to_json,
    findings_to_text,
    hexs,
    symbol_suffix,
)
from kdiag.x86.bits import Field, bit_view
from kdiag.x86.describe import describe_descriptor, flag_line, short_descriptor
from kdiag.x86.msr import AddressMsr, ApicBase, Fmask, Msr, Star, decode_msr, msr_name
from kdiag.x86.registers import Cr0, Cr3, Cr4, Efer, FlagRegister, Rflags
from kdiag.x86.state import SEGMENT_NAMES, CpuState, SegmentCache


def _flagreg_text(reg: FlagRegister, digits: int = 8) -> str:
    return f"{reg.NAME}=0x{reg.raw:0{digits}x}: {flag_line(reg.raw, reg.LAYOUT)}"


def _verbose(raw: int, layout: Sequence[Field]) -> list[str]:
    return ["    " + "  ".join(f"{r.field.name}[{r.field.bits}]={r.value:#x}"
                               for r in bit_view(raw, layout))]


def _flagreg_json(reg: FlagRegister) -> dict[str, object]:
    set_names = [f.name for f in reg.LAYOUT if f.width == 1 and f.get(reg.raw)]
    out: dict[str, object] = {"raw": hexs(reg.raw), "flags": set_names}
    if reg.reserved_bits:
        out["reserved_bits"] = hexs(reg.reserved_bits)
    if isinstance(reg, Rflags):
        out["iopl"] = reg.iopl
    return out


def cr3_text(cr3: Cr3) -> str:
    if cr3.pcid is not None:
        detail = f"base={cr3.base:#x} PCID={cr3.pcid}"
    else:
        detail = f"base={cr3.base:#x} {'PCD' if cr3.pcd else 'pcd'} {'PWT' if cr3.pwt else 'pwt'}"
    return f"CR3=0x{cr3.raw:016x}: {detail}"


def cr_to_text(state: CpuState, verbose: bool = False) -> str:
    """CR0, CR2, CR3, CR4, CR8, EFER and RFLAGS, one line each (Bochs ``creg``)."""
    cr0, cr4 = Cr0.from_raw(state.cr0), Cr4.from_raw(state.cr4)
    cr3 = Cr3.from_raw(state.cr3, pcide=bool(state.cr4 & (1 << 17)))
    efer, rfl = Efer.from_raw(state.efer), Rflags.from_raw(state.rflags)
    lines = [_flagreg_text(cr0)]
    if verbose:
        lines += _verbose(cr0.raw, cr0.LAYOUT)
    lines.append(f"CR2=0x{state.cr2:016x}")
    lines.append(cr3_text(cr3))
    if verbose:
        lines += _verbose(cr3.raw, cr3.layout)
    lines.append(_flagreg_text(cr4))
    if verbose:
        lines += _verbose(cr4.raw, cr4.LAYOUT)
    if state.cr8 is not None:
        lines.append(f"CR8=0x{state.cr8:x}")
    lines.append(_flagreg_text(efer))
    if verbose:
        lines += _verbose(efer.raw, efer.LAYOUT)
    lines.append(_flagreg_text(rfl))
    lines.append(f"mode: {state.mode}, CPL={state.effective_cpl}, paging "
                 + ("on" if state.paging else "off"))
    return "\n".join(lines)


def cr_to_json(state: CpuState) -> dict[str, object]:
    cr3 = Cr3.from_raw(state.cr3, pcide=bool(state.cr4 & (1 << 17)))
    cr3j: dict[str, object] = {"raw": hexs(cr3.raw), "base": hexs(cr3.base)}
    if cr3.pcid is not None:
        cr3j["pcid"] = cr3.pcid
    else:
        cr3j.update({"pwt": cr3.pwt, "pcd": cr3.pcd})
    return {
        "cr0": _flagreg_json(Cr0.from_raw(state.cr0)), "cr2": hexs(state.cr2), "cr3": cr3j,
        "cr4": _flagreg_json(Cr4.from_raw(state.cr4)),
        "cr8": hexs(state.cr8) if state.cr8 is not None else None,
        "efer": _flagreg_json(Efer.from_raw(state.efer)),
        "rflags": _flagreg_json(Rflags.from_raw(state.rflags)),
        "mode": str(state.mode), "cpl": state.effective_cpl, "paging": state.paging,
    }


def efer_to_text(efer: int, verbose: bool = False, source: str = "") -> str:
    e = Efer.from_raw(efer)
    lines = [_flagreg_text(e) + (f"  ({source})" if source else "")]
    if verbose:
        lines += _verbose(e.raw, e.LAYOUT)
    return "\n".join(lines)


def efer_to_json(efer: int, source: str = "") -> dict[str, object]:
    out = _flagreg_json(Efer.from_raw(efer))
    out["source"] = source or None
    return out


# --------------------------------------------------------------------------------------------
# segment registers


def _seg_line(name: str, seg: SegmentCache, gdt: GdtView | None) -> str:
    if name in ("ldtr", "tr"):
        desc = f"type={seg.type:#x} DPL={seg.dpl} {'P' if seg.present else 'not present'}"
    else:
        desc = describe_descriptor(cache_descriptor(seg)) if seg.flags else "(null/unusable)"
    line = (f"{name}=0x{seg.selector:04x} base=0x{seg.base:016x} limit=0x{seg.limit:08x} "
            f"flags=0x{seg.flags:08x}: {desc}")
    if gdt is not None and name not in ("ldtr",) and seg.selector & ~3 and not seg.selector & 4:
        if not gdt.contains(seg.selector):
            line += f"  [selector beyond the GDT limit {gdt.limit:#x}]"
    return line


def sreg_to_text(state: CpuState, gdt: GdtView | None = None, findings: Sequence[Finding] = (),
                 verbose: bool = False) -> str:
    """Segment registers with their hidden caches, LDTR/TR, GDTR/IDTR, FS/GS bases."""
    lines = []
    for name in SEGMENT_NAMES:
        seg = state.segments.get(name)
        if seg is not None:
            lines.append(_seg_line(name, seg, gdt))
            if verbose and gdt is not None and seg.selector & ~3 and not seg.selector & 4:
                lines.append(f"    gdt[0x{seg.selector & ~7:04x}] now: "
                             f"{short_descriptor(gdt.lookup(seg.selector))}")
    for name, seg2 in (("ldtr", state.ldtr), ("tr", state.tr)):
        if seg2 is not None:
            lines.append(_seg_line(name, seg2, gdt))
    if state.gdtr is not None:
        lines.append(f"gdtr base=0x{state.gdtr.base:016x} limit=0x{state.gdtr.limit:04x}")
    if state.idtr is not None:
        lines.append(f"idtr base=0x{state.idtr.base:016x} limit=0x{state.idtr.limit:04x}")
    for name, val in (("fs_base", state.fs_base), ("gs_base", state.gs_base),
                      ("kernel_gs_base", state.kernel_gs_base)):
        if val is not None:
            lines.append(f"{name}=0x{val:016x}")
    if findings:
        lines.append(findings_to_text(findings))
    return "\n".join(lines)


def _seg_json(seg: SegmentCache, gdt: GdtView | None, system: bool) -> dict[str, object]:
    out: dict[str, object] = {
        "selector": seg.selector, "base": hexs(seg.base), "limit": hexs(seg.limit),
        "flags": hexs(seg.flags), "dpl": seg.dpl, "present": seg.present, "type": seg.type}
    if not system:
        d = cache_descriptor(seg)
        out.update({"kind": str(d.kind) if seg.flags else "null", "long": d.long,
                    "description": describe_descriptor(d) if seg.flags else None})
    if gdt is not None and seg.selector & ~3 and not seg.selector & 4:
        out["in_gdt"] = gdt.contains(seg.selector)
    return out


def sreg_to_json(state: CpuState, gdt: GdtView | None = None,
                 findings: Sequence[Finding] = ()) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in SEGMENT_NAMES:
        seg = state.segments.get(name)
        if seg is not None:
            out[name] = _seg_json(seg, gdt, False)
    for name, seg2 in (("ldtr", state.ldtr), ("tr", state.tr)):
        if seg2 is not None:
            out[name] = _seg_json(seg2, gdt, True)
    for name, reg in (("gdtr", state.gdtr), ("idtr", state.idtr)):
        out[name] = None if reg is None else {"base": hexs(reg.base), "limit": hexs(reg.limit)}
    for name, val in (("fs_base", state.fs_base), ("gs_base", state.gs_base),
                      ("kernel_gs_base", state.kernel_gs_base)):
        out[name] = hexs(val) if val is not None else None
    out["cpl"] = state.effective_cpl
    out["mode"] = str(state.mode)
    out["warnings"] = findings_to_json(findings)
    return out


# --------------------------------------------------------------------------------------------
# MSRs


def msr_detail(index: int, value: int, symbolize: Symbolizer | None = None) -> list[str]:
    """Decoded lines under ``IA32_X (0x...) = 0x...``."""
    d = decode_msr(index, value)
    if isinstance(d, Star):
        return [f"SYSCALL: CS=0x{d.syscall_cs:04x} SS=0x{d.syscall_ss:04x}   "
                f"SYSRET: CS=0x{d.sysret_cs64:04x} SS=0x{d.sysret_ss:04x} "
                f"(to 32-bit code: CS=0x{d.sysret_cs32:04x})",
                f"legacy SYSCALL EIP=0x{d.syscall_eip:08x}"]
    if isinstance(d, ApicBase):
        return [f"base={d.base:#x} {'EN' if d.enabled else 'en'} "
                f"{'EXTD' if d.x2apic else 'extd'} {'BSP' if d.bsp else 'bsp'}"
                f" ({'x2APIC' if d.x2apic else 'xAPIC' if d.enabled else 'disabled'})"]
    if isinstance(d, Fmask):
        return [f"SYSCALL clears: {flag_line(d.raw & 0xFFFFFFFF, Rflags.LAYOUT)}"
                f" (IF {'cleared' if d.clears_if else 'KEPT: interrupts stay enabled on entry'})"]
    if isinstance(d, Efer):
        return [flag_line(d.raw, d.LAYOUT)]
    if isinstance(d, AddressMsr):
        sym = symbol_suffix(symbolize, d.raw) if d.raw else None
        return [f"address {d.raw:#x}" + (f" <{sym}>" if sym else "")
                + ("" if d.canonical else "  (NOT canonical)")]
    if index == Msr.IA32_PAT:
        return pat_lines(value)[1:]
    return []


def msr_to_text(index: int, value: int, method: str = "", findings: Sequence[Finding] = (),
                symbolize: Symbolizer | None = None) -> str:
    lines = [f"{msr_name(index)} (0x{index:x}) = 0x{value:016x}"]
    lines += ["  " + ln for ln in msr_detail(index, value, symbolize)]
    if method:
        lines.append(f"  ({method})")
    if findings:
        lines.append(findings_to_text(findings))
    return "\n".join(lines)


def msr_to_json(index: int, value: int, method: str = "", findings: Sequence[Finding] = (),
                symbolize: Symbolizer | None = None) -> dict[str, object]:
    d = decode_msr(index, value)
    decoded: dict[str, object] | None = None
    if isinstance(d, Star):
        decoded = {"syscall_cs": d.syscall_cs, "syscall_ss": d.syscall_ss,
                   "sysret_cs": d.sysret_cs64, "sysret_ss": d.sysret_ss,
                   "sysret_cs32": d.sysret_cs32, "syscall_eip": hexs(d.syscall_eip)}
    elif isinstance(d, ApicBase):
        decoded = {"base": hexs(d.base), "enabled": d.enabled, "x2apic": d.x2apic, "bsp": d.bsp}
    elif isinstance(d, Fmask):
        decoded = {"clears": [f.name for f in Rflags.LAYOUT if f.width == 1 and f.get(d.raw)],
                   "clears_if": d.clears_if}
    elif isinstance(d, Efer):
        decoded = _flagreg_json(d)
    elif isinstance(d, AddressMsr):
        decoded = {"address": hexs(d.raw), "canonical": d.canonical,
                   "symbol": symbol_suffix(symbolize, d.raw) if d.raw else None}
    elif index == Msr.IA32_PAT:
        decoded = pat_to_json(value)
    return {"name": msr_name(index), "index": hexs(index), "value": hexs(value),
            "decoded": decoded, "method": method or None, "warnings": findings_to_json(findings)}


# --------------------------------------------------------------------------------------------
# PAT


def _pat_types(value: int) -> list[str]:
    try:
        from kdiag.x86.pat import decode_pat

        return [t.label for t in decode_pat(value)]
    except Exception:  # reserved encodings: show them rather than fail
        names = {0: "UC", 1: "WC", 4: "WT", 5: "WP", 6: "WB", 7: "UC-"}
        return [names.get((value >> (8 * i)) & 0xFF, f"reserved({(value >> (8 * i)) & 0xFF:#x})")
                for i in range(8)]


def pat_lines(value: int) -> list[str]:
    types = _pat_types(value)
    head = f"PAT=0x{value:016x}: " + " ".join(f"PA{i}={t}" for i, t in enumerate(types))
    rows = [f"PA{i} (PAT={i >> 2} PCD={i >> 1 & 1} PWT={i & 1}): {t}" for i, t in enumerate(types)]
    return [head, *rows]


def pat_to_text(value: int, method: str = "", verbose: bool = True) -> str:
    lines = pat_lines(value)
    if not verbose:
        lines = lines[:1]
    if method:
        lines.append(f"({method})")
    return "\n".join(lines)


def pat_to_json(value: int, method: str = "") -> dict[str, object]:
    types = _pat_types(value)
    return {"raw": hexs(value), "method": method or None,
            "entries": [{"index": i, "pat": i >> 2, "pcd": i >> 1 & 1, "pwt": i & 1, "type": t}
                        for i, t in enumerate(types)]}


__all__ = ["cr_to_text", "cr_to_json", "efer_to_text", "efer_to_json", "sreg_to_text",
           "sreg_to_json", "msr_to_text", "msr_to_json", "pat_to_text", "pat_to_json"]
