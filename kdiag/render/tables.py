"""GDT, IDT and TSS as Bochs-style text and as JSON (``kd gdt|idt|tss``, ``kdiag gdt|idt|tss``).

Text follows Bochs' ``info gdt``/``info idt`` lines, with the registers that currently hold a
selector annotated like bata24's gef (``<- cs,ss``) and rows a finding refers to marked ``!``::

    GDT base=0xffffffff80105000 limit=0x37 (7 slots, IA-32e)
    gdt[0x0000]=Null descriptor
    gdt[0x0008]=Code segment, base=0x00000000, limit=0xffffffff, Execute/Read, Non-Conforming, Accessed, 64-bit, DPL=0  <- cs
    gdt[0x0028]=64-bit TSS (Busy), base=0xffffffff80110000, limit=0x00000067, DPL=0  <- tr

JSON (one document per command; addresses and raw values are ``"0x..."`` strings, selectors,
vectors, DPLs and IST indices are integers):

- ``gdt``: ``{"table": "GDT", "base", "limit", "long_mode", "entries": [{"selector", "index",
  "kind", "type", "type_name", "dpl", "present", "base", "limit", "long", "db", "granularity",
  "size", "raw", "registers", "description"}...], "warnings": [...]}``
- ``idt``: ``{"base", "limit", "long_mode", "entries": [{"vector", "type", "dpl", "present",
  "selector", "offset", "ist", "symbol", "raw", "description"}...], "warnings": [...]}``
- ``tss``: ``{"tr": {...}, "bits", "rsp0".."rsp2", "ist1".."ist7", "iopb", "warnings"}`` (64-bit)
  or the 32-bit TSS fields (``esp0``, ``ss0``, ... lower-case SDM names).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from kdiag.machine.checks import Finding
from kdiag.machine.tables import GdtView, IdtView, TssView
from kdiag.render.findings import (
    Symbolizer,
    findings_to_json,
    findings_to_text,
    flagged,
    hexs,
    symbol_of_stack_top,
    symbol_suffix,
)
from kdiag.x86.bits import bit_view
from kdiag.x86.describe import describe_descriptor, describe_gate, gate_type_label, type_name
from kdiag.x86.descriptors import (
    Descriptor,
    DescriptorKind,
    Gate,
    Gate64,
    GdtEntry,
    SegmentDescriptor,
)
from kdiag.x86.tss import Tss32, Tss64

Users = dict[int, list[str]]


def _bits_line(desc: Descriptor | Gate | Gate64) -> str:
    rows = bit_view(desc.raw, desc.layout)
    parts = []
    for r in rows:
        w = r.field.width
        parts.append(f"{r.field.name}={r.binary}" if w <= 4 else f"{r.field.name}={r.value:#x}")
    width = 32 if desc.size == 16 else 16
    return f"    raw={desc.raw:#0{width + 2}x}  " + " ".join(parts)


def _raw_hex(raw: int, size: int) -> str:
    """A descriptor's raw value, zero-padded to its size (``0x00af9b000000ffff``)."""
    return f"{raw:#0{2 * size + 2}x}"


def _in_range(key: int, rng: tuple[int, int] | None) -> bool:
    return rng is None or rng[0] <= key <= rng[1]


# --------------------------------------------------------------------------------------------
# GDT


def gdt_to_text(view: GdtView, users: Users | None = None, findings: Sequence[Finding] = (),
                verbose: bool = False, select: tuple[int, int] | None = None) -> str:
    """Bochs-style GDT listing. ``select``: inclusive selector range to show."""
    users = users or {}
    marks = flagged(findings, "gdt")
    slots = (view.limit + 1) // 8
    mode = "IA-32e" if view.long_mode else "legacy"
    name = view.name.lower()
    lines = [f"{view.name} base={view.base:#x} limit={view.limit:#x} ({slots} slots, {mode})"]
    for e in view.entries:
        if not _in_range(e.selector, select):
            continue
        line = f"{name}[0x{e.selector:04x}]={describe_descriptor(e.descriptor)}"
        if e.truncated:
            line += " (upper half beyond the limit)"
        if e.selector in users:
            line += "  <- " + ",".join(users[e.selector])
        if e.selector in marks:
            line += "  ! " + ",".join(marks[e.selector])
        lines.append(line)
        if verbose:
            lines.append(_bits_line(e.descriptor))
    # registers pointing past the end of the table are worth a line of their own
    for off, regs in sorted(users.items()):
        if off + 7 > view.limit:
            lines.append(f"{name}[0x{off:04x}]=(beyond the limit {view.limit:#x})  <- "
                         + ",".join(regs))
    if findings:
        lines.append(findings_to_text(findings))
    return "\n".join(lines)


def gdt_entry_to_json(e: GdtEntry, users: Users | None = None) -> dict[str, object]:
    d = e.descriptor
    out: dict[str, object] = {
        "selector": e.selector, "index": e.index, "kind": str(d.kind),
        "type": int(d.type), "type_name": type_name(d), "dpl": d.dpl, "present": d.present,
    }
    if isinstance(d, Gate | Gate64):
        out.update({"base": None, "limit": None, "long": False, "target_selector": d.selector.raw,
                    "offset": hexs(d.offset)})
    else:
        out.update({"base": hexs(d.base), "limit": hexs(d.limit),
                    "long": bool(getattr(d, "long", False)),
                    "db": bool(getattr(d, "db", False)), "granularity": d.granularity})
        if isinstance(d, SegmentDescriptor) and d.s:
            out.update({"bits": d.code_bits, "accessed": d.accessed, "readable": d.readable,
                        "writable": d.writable, "conforming": d.conforming,
                        "expand_down": d.expand_down})
        if d.kind == DescriptorKind.TSS:
            out["busy"] = d.busy
    out.update({"size": d.size, "truncated": e.truncated, "raw": _raw_hex(d.raw, d.size),
                "registers": list((users or {}).get(e.selector, [])),
                "description": describe_descriptor(d)})
    return out


def gdt_to_json(view: GdtView, users: Users | None = None, findings: Sequence[Finding] = (),
                select: tuple[int, int] | None = None) -> dict[str, object]:
    return {
        "table": view.name, "base": hexs(view.base), "limit": hexs(view.limit),
        "long_mode": view.long_mode,
        "entries": [gdt_entry_to_json(e, users) for e in view.entries
                    if _in_range(e.selector, select)],
        "warnings": findings_to_json(findings),
    }


# --------------------------------------------------------------------------------------------
# IDT


# Rendered IDTs, keyed by the table's bytes, the findings, the options and the symbolizer with
# its ``generation`` (gdb's symbolizer bumps it when objfiles change). A kernel's IDT rarely
# changes between stops, so the 256-gate text is built once. Symbolizers without a
# ``generation`` attribute are not memoized.
_MEMO: dict[tuple[object, ...], object] = {}
_MEMO_MAX = 32


def _memo_key(kind: str, view: IdtView, findings: Sequence[Finding],
              symbolize: Symbolizer | None, *extra: object) -> tuple[object, ...] | None:
    gen = getattr(symbolize, "generation", None) if symbolize is not None else -1
    if gen is None:
        return None
    return (kind, symbolize, gen, view.base, view.limit, view.long_mode, view.raw,
            tuple(findings), *extra)


def _memo_put(key: tuple[object, ...] | None, value: object) -> None:
    if key is None:
        return
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[key] = value


def idt_to_text(view: IdtView, findings: Sequence[Finding] = (), verbose: bool = False,
                symbolize: Symbolizer | None = None, select: tuple[int, int] | None = None,
                show_all: bool = False) -> str:
    """Bochs-style IDT listing; runs of empty gates are folded into one line."""
    key = _memo_key("text", view, findings, symbolize, verbose, select, show_all)
    hit = _MEMO.get(key) if key is not None else None
    if isinstance(hit, str):
        return hit
    text = _idt_to_text(view, findings, verbose, symbolize, select, show_all)
    _memo_put(key, text)
    return text


def _idt_to_text(view: IdtView, findings: Sequence[Finding], verbose: bool,
                 symbolize: Symbolizer | None, select: tuple[int, int] | None,
                 show_all: bool) -> str:
    marks = flagged(findings, "idt")
    n = len(view.entries)
    mode = "IA-32e" if view.long_mode else "legacy"
    lines = [f"IDT base={view.base:#x} limit={view.limit:#x} ({n} gates, {mode})"]
    pending: list[int] = []

    def flush() -> None:
        if not pending:
            return
        a, b = pending[0], pending[-1]
        if a == b:
            lines.append(f"idt[0x{a:02x}]=Null descriptor")
        else:
            lines.append(f"idt[0x{a:02x}..0x{b:02x}]=Null descriptor ({b - a + 1} gates)")
        pending.clear()

    for e in view.entries:
        if not _in_range(e.vector, select):
            continue
        g = e.gate
        if g.raw == 0 and not show_all and e.vector not in marks:
            pending.append(e.vector)
            continue
        flush()
        sym = symbol_suffix(symbolize, g.offset) if g.present else None
        line = f"idt[0x{e.vector:02x}]={describe_gate(g, sym)}"
        if e.vector in marks:
            line += "  ! " + ",".join(marks[e.vector])
        lines.append(line)
        if verbose:
            lines.append(_bits_line(g))
    flush()
    if findings:
        lines.append(findings_to_text(findings))
    return "\n".join(lines)


@lru_cache(maxsize=4096)
def _gate_json(g: Gate | Gate64, sym: str | None) -> dict[str, object]:
    """The JSON fields of one gate (without its vector); gates are immutable values, so each
    distinct (gate, symbol) is rendered once per process. Callers copy the dict."""
    return {"type": gate_type_label(g), "kind": str(g.kind), "dpl": g.dpl,
            "present": g.present, "selector": g.selector.raw, "offset": hexs(g.offset),
            "ist": g.ist if isinstance(g, Gate64) else 0, "symbol": sym,
            "raw": _raw_hex(g.raw, g.size), "description": describe_gate(g)}


@lru_cache(maxsize=4096)
def _gate_json_text(g: Gate | Gate64, sym: str | None) -> str:
    """``json.dumps`` of :func:`_gate_json` without its braces, once per distinct gate."""
    return json.dumps(_gate_json(g, sym))[1:-1]


class JsonList(list):  # type: ignore[type-arg]
    """A list of JSON-ready dicts that also carries its own ``json.dumps`` text, built from
    per-item fragments rendered once per distinct item (an IDT's 256 gates repeat across
    commands). :func:`dumps` splices the text in; anything else sees a plain list. The text
    is used only while the list still has the items it was built with (count and sizes)."""

    _text: str | None = None
    _sig: tuple[int, int] = (-1, -1)

    def seal(self, text: str) -> None:
        self._text = text
        self._sig = self._signature()

    def _signature(self) -> tuple[int, int]:
        try:
            return (len(self), sum(map(len, self)))
        except TypeError:  # an item without a length was added: never the built text
            return (-2, -2)

    def copy_list(self) -> JsonList:
        """A new list of the same items, with the text while it is still valid."""
        out = JsonList(self)
        out._text, out._sig = self._text, self._sig
        return out

    def json_text(self) -> str | None:
        return self._text if self._text is not None and self._sig == self._signature() \
            else None


def dumps(doc: Any) -> str:
    """``json.dumps(doc)`` (same text), splicing in the pre-rendered text of top-level
    :class:`JsonList` values (``kd idt --json``: about 10x faster than encoding 256 dicts)."""
    if isinstance(doc, dict) and all(isinstance(k, str) for k in doc):
        texts = {k: v.json_text() for k, v in doc.items() if isinstance(v, JsonList)}
        if any(t is not None for t in texts.values()):
            return "{" + ", ".join(
                f"{json.dumps(k)}: {texts[k] if texts.get(k) is not None else json.dumps(v)}"
                for k, v in doc.items()) + "}"
    return json.dumps(doc)


def idt_to_json(view: IdtView, findings: Sequence[Finding] = (),
                symbolize: Symbolizer | None = None,
                select: tuple[int, int] | None = None) -> dict[str, object]:
    key = _memo_key("json", view, findings, symbolize, select)
    hit = _MEMO.get(key) if key is not None else None
    if isinstance(hit, dict):
        doc = dict(hit)  # the caller may add keys or change the list: it gets its own
        entries = hit["entries"]
        if isinstance(entries, JsonList):
            doc["entries"] = entries.copy_list()
        return doc
    doc = _idt_to_json(view, findings, symbolize, select)
    _memo_put(key, doc)
    return dict(doc)


def _idt_to_json(view: IdtView, findings: Sequence[Finding], symbolize: Symbolizer | None,
                 select: tuple[int, int] | None) -> dict[str, object]:
    entries = JsonList()
    texts = []
    for e in view.entries:
        if not _in_range(e.vector, select):
            continue
        g = e.gate
        sym = symbol_suffix(symbolize, g.offset) if g.present else None
        entries.append({"vector": e.vector, **_gate_json(g, sym)})
        texts.append(f'{{"vector": {e.vector}, {_gate_json_text(g, sym)}}}')
    entries.seal("[" + ", ".join(texts) + "]")
    return {"base": hexs(view.base), "limit": hexs(view.limit), "long_mode": view.long_mode,
            "entries": entries, "warnings": findings_to_json(findings)}


# --------------------------------------------------------------------------------------------
# TSS


def _tr_line(view: TssView) -> str:
    tr = view.tr
    kind = {0x9: "Available", 0xB: "Busy", 0x1: "Available", 0x3: "Busy"}.get(tr.type, "?")
    bits = 64 if view.long_mode else (16 if tr.type in (1, 3) else 32)
    return (f"TR=0x{tr.selector:04x} base={tr.base:#x} limit={tr.limit:#x} "
            f"({bits}-bit TSS, {kind})")


def tss_to_text(view: TssView, findings: Sequence[Finding] = (), verbose: bool = False,
                symbolize: Symbolizer | None = None, ist_users: dict[int, list[int]] | None = None
                ) -> str:
    """The current TSS: stack pointers with symbols and which IDT vectors use each IST slot."""
    marks = flagged(findings, "tss")
    lines = [_tr_line(view)]
    if view.note:
        lines.append(view.note)
    t = view.tss

    def sym(v: int) -> str:
        s = symbol_of_stack_top(symbolize, v)
        return f" <{s}>" if s else ""

    def mark(key: str) -> str:
        return "  ! " + ",".join(marks[key]) if key in marks else ""

    if isinstance(t, Tss64):
        for i, v in enumerate(t.rsp):
            lines.append(f"RSP{i}=0x{v:016x}{sym(v)}{mark(f'rsp{i}')}")
        for i, v in enumerate(t.ist):
            users = (ist_users or {}).get(i + 1)
            used = ("  used by vector(s) " + ", ".join(f"{x:#04x}" for x in users)) if users else ""
            lines.append(f"IST{i + 1}=0x{v:016x}{sym(v)}{used}{mark(f'ist{i + 1}')}")
        lines.append(_iopb_line(t.iopb, view.tr.limit))
    elif isinstance(t, Tss32):
        f = t.fields
        for i in range(3):
            lines.append(f"SS{i}:ESP{i}=0x{f[f'SS{i}']:04x}:0x{f[f'ESP{i}']:08x}"
                         f"{sym(f[f'ESP{i}'])}")
        lines.append(f"CR3=0x{f['CR3']:08x} EIP=0x{f['EIP']:08x} EFLAGS=0x{f['EFLAGS']:08x} "
                     f"LINK=0x{f['LINK']:04x} LDT=0x{f['LDT']:04x} T={f['T'] & 1}")
        lines.append(" ".join(f"{r}=0x{f[r]:08x}" for r in
                              ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI")))
        lines.append(" ".join(f"{r}=0x{f[r]:04x}" for r in ("ES", "CS", "SS", "DS", "FS", "GS")))
        lines.append(_iopb_line(t.iopb, view.tr.limit))
    if verbose and t is not None:
        raw = t.raw
        for off in range(0, len(raw), 16):
            lines.append(f"    +0x{off:02x}: " + raw[off:off + 16].hex(" "))
    if findings:
        lines.append(findings_to_text(findings))
    return "\n".join(lines)


def _iopb_line(iopb: int, limit: int) -> str:
    where = ("I/O bitmap inside the TSS" if iopb <= limit
             else "no I/O bitmap: beyond the limit, all ports denied above IOPL")
    return f"IOPB=0x{iopb:04x} ({where})"


def tss_to_json(view: TssView, findings: Sequence[Finding] = (),
                symbolize: Symbolizer | None = None) -> dict[str, object]:
    tr = view.tr
    out: dict[str, object] = {
        "tr": {"selector": tr.selector, "base": hexs(tr.base), "limit": hexs(tr.limit),
               "type": tr.type, "busy": tr.type in (0x3, 0xB)},
        "loaded": view.loaded, "note": view.note or None,
    }
    t = view.tss
    if isinstance(t, Tss64):
        out["bits"] = 64
        for i, v in enumerate(t.rsp):
            out[f"rsp{i}"] = hexs(v)
        for i, v in enumerate(t.ist):
            out[f"ist{i + 1}"] = hexs(v)
        out["iopb"] = t.iopb
        out["symbols"] = {k: symbol_of_stack_top(symbolize, v) for k, v in
                          [*((f"rsp{i}", x) for i, x in enumerate(t.rsp)),
                           *((f"ist{i + 1}", x) for i, x in enumerate(t.ist))] if v}
    elif isinstance(t, Tss32):
        out["bits"] = 32
        for k, v in t.fields.items():
            out[k.lower()] = hexs(v) if k not in ("IOPB", "T") else v
    else:
        out["bits"] = None
    out["warnings"] = findings_to_json(findings)
    return out


__all__ = ["gdt_to_text", "gdt_to_json", "gdt_entry_to_json", "idt_to_text", "idt_to_json",
           "tss_to_text", "tss_to_json", "describe_descriptor", "dumps", "JsonList"]
