"""Page-table walks, dumps, anomalies and reverse lookups as text and JSON.

Shared by ``kdiag walk|pt|p2v`` and gdb's ``kd walk|pt|p2v``. Entry flags are printed the way
Bochs' ``page`` command prints them: upper case when set, lower case when clear, ``U``/``S``
for U/S and ``W``/``R`` for R/W::

    linear 0xffffffff80001234 (4-level paging, CR3 0x1000000)
      PML4 @0x1000000 [511] = 0x0000000001002023  xd ps          a pcd pwt S W P  -> PDPT 0x1002000
      PT   @0x1004000 [  1] = 0x8000000000201063  XD    g pat D  A pcd pwt S W P  -> 4K page 0x201000
      effective: r-x supervisor; kernel writes denied (CR0.WP=1)
      memory type: WB (PAT entry 0: PAT=0 PCD=0 PWT=0; IA32_PAT 0x0007040600070406, read from the MSR)
      physical: 0x201234

Dumps list one merged range per line, ``start-end`` with ``end`` exclusive like QEMU's
``info mem``; ``perm`` is U or S followed by rwx.

JSON documents (addresses and raw values as ``"0x..."`` strings):

- walk: ``{"va", "mode", "cr3", "ok", "pa", "page_size", "steps": [{"level", "table", "index",
  "entry_addr", "raw", "flags": {...}, "kind", "points_to", "note"}], "access": {"writable",
  "user", "executable", "kernel_write"}, "memtype", "pat_index", "pat": {"value", "source",
  "note"}, "stop", "detail"}``
- dump: ``{"mode", "cr3", "pat", "filters", "mappings": [{"va", "end", "size", "pa",
  "writable", "user", "executable", "memtype", "page_sizes", "pages"}], "issues": [...],
  "truncated", "stats"}`` plus ``"anomalies"`` when checked.
- p2v: ``{"pa", "hits": [{"va", "page_va", "page_size", "writable", "user", "executable",
  "memtype"}], "truncated"}``
"""

from __future__ import annotations

from collections.abc import Sequence

from kdiag.paging.checks import Anomaly
from kdiag.paging.config import PagingConfig
from kdiag.paging.dump import Dump, Mapping, ReverseHit, TableIssue
from kdiag.paging.walker import Walk, WalkStep
from kdiag.x86.pat import MemoryType
from kdiag.x86.pte import EntryKind, PageEntry, PagingMode

_UNITS = ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))
_PAGE_NAMES = {4096: "4K", 2 << 20: "2M", 4 << 20: "4M", 1 << 30: "1G"}


def hx(value: int | None) -> str | None:
    """JSON form of an address: ``"0x..."``; None stays None."""
    return None if value is None else f"{value:#x}"


def size_text(n: int) -> str:
    """``4 KiB``, ``2 MiB``, ``1 GiB``, ``4.01 GiB``: the largest unit not above ``n``."""
    for unit, name in _UNITS:
        if n >= unit:
            return f"{n // unit} {name}" if n % unit == 0 else f"{n / unit:.2f} {name}"
    return f"{n} B"


def page_name(size: int) -> str:
    return _PAGE_NAMES.get(size, size_text(size))


def _width(cfg: PagingConfig) -> int:
    """Hex digits of a linear address in this mode."""
    return 8 if cfg.mode in (PagingMode.BITS32, PagingMode.PAE) else 16


def _pwidth(cfg: PagingConfig) -> int:
    """Hex digits of a physical address: 40 bits with PSE-36, 52 otherwise."""
    return 10 if cfg.mode is PagingMode.BITS32 else 16


def _addr(v: int, width: int) -> str:
    return f"0x{v:0{width}x}"


def mode_text(cfg: PagingConfig) -> str:
    p = cfg.params
    if p.mode is PagingMode.NONE:
        return "paging disabled"
    if p.mode is PagingMode.BITS32:
        return "32-bit paging, " + ("CR4.PSE=1 (4 MiB pages)" if p.pse else "CR4.PSE=0")
    name = {PagingMode.PAE: "PAE paging", PagingMode.LEVEL4: "4-level paging",
            PagingMode.LEVEL5: "5-level paging"}[p.mode]
    return f"{name}, EFER.NXE={int(p.nxe)}"


def pat_text(cfg: PagingConfig) -> str:
    if cfg.pat_source == "msr":
        src = "read from the MSR"
    elif cfg.pat_source == "given":
        src = "given"
    else:
        src = "POWER-ON DEFAULT, the MSR could not be read"
    return f"IA32_PAT {cfg.pat:#018x}, {src}"


# -- entries -----------------------------------------------------------------------------------
def entry_flags(entry: PageEntry) -> str:
    """Bochs' ``page`` flag columns for one entry (fixed width within a mode)."""
    raw = entry.raw
    lv = entry.level
    parts = []
    if lv.entry_size == 8 and lv.access_bits:
        parts.append("XD" if raw >> 63 & 1 else "xd")
    elif lv.entry_size == 8:
        parts.append("  ")
    if lv.last:
        parts.append("  ")
        parts.append("G" if raw & 0x100 else "g")
        parts.append("PAT" if raw & 0x80 else "pat")
        parts.append("D" if raw & 0x40 else "d")
    elif raw & 0x80 and entry.kind is EntryKind.PAGE:
        parts.append("PS")
        parts.append("G" if raw & 0x100 else "g")
        parts.append("PAT" if raw & 0x1000 else "pat")
        parts.append("D" if raw & 0x40 else "d")
    elif lv.access_bits:
        parts.append("PS" if raw & 0x80 else "ps")
        parts.append(" " * 9)
    else:
        parts.append(" " * 12)
    if lv.access_bits:
        parts.append("A" if raw & 0x20 else "a")
    else:
        parts.append(" ")
    parts.append("PCD" if raw & 0x10 else "pcd")
    parts.append("PWT" if raw & 0x08 else "pwt")
    if lv.access_bits:
        parts.append("U" if raw & 0x04 else "S")
        parts.append("W" if raw & 0x02 else "R")
    else:
        parts.append("   ")
    parts.append("P" if raw & 0x01 else "p")
    return " ".join(parts)


def _flags_json(entry: PageEntry) -> dict[str, bool]:
    raw = entry.raw
    out = {"P": bool(raw & 1)}
    if entry.level.access_bits:
        out.update(RW=bool(raw & 2), US=bool(raw & 4), A=bool(raw & 0x20))
    out.update(PWT=bool(raw & 8), PCD=bool(raw & 0x10))
    if entry.kind is EntryKind.PAGE:
        out.update(D=bool(raw & 0x40), G=bool(raw & 0x100), PAT=entry.pat)
        if not entry.level.last:
            out["PS"] = True
    elif not entry.level.last and entry.level.access_bits:
        out["PS"] = bool(raw & 0x80)
    if entry.level.entry_size == 8 and entry.level.access_bits:
        out["XD"] = bool(raw >> 63 & 1)
    return out


def _target_text(step: WalkStep) -> str:
    e = step.entry
    if e.kind is EntryKind.NOT_PRESENT:
        return "not present"
    if e.reserved:
        return "RESERVED BITS SET"
    if e.kind is EntryKind.PAGE:
        return f"{page_name(e.page_size)} page {e.addr:#x}"
    levels = step.level
    nxt = {"PML5": "PML4", "PML4": "PDPT", "PDPT": "PD", "PD": "PT"}.get(levels.name, "table")
    return f"{nxt} {e.addr:#x}"


# -- walk -----------------------------------------------------------------------------------------
def walk_to_text(w: Walk) -> str:
    cfg = w.config
    width = _width(cfg)
    head = f"linear {_addr(w.va, width)} ({mode_text(cfg)}, CR3 {cfg.cr3:#x}"
    head += ", overridden)" if cfg.overridden else ")"
    lines = [head]
    ew = 8 if cfg.mode is PagingMode.BITS32 else 16
    for s in w.steps:
        idx_w = len(str(s.level.entries - 1))
        line = (f"  {s.level.name:<4} @{s.table:#x} [{s.index:>{idx_w}}] = 0x{s.entry.raw:0{ew}x}"
                f"  {entry_flags(s.entry)}  -> {_target_text(s)}")
        if s.note:
            line += f"  ({s.note})"
        lines.append(line)
    if w.ok:
        acc = w.access
        assert acc is not None
        if cfg.mode is PagingMode.NONE:
            lines.append(f"  {w.detail}")
        else:
            who = "user" if acc.user else "supervisor"
            kw = ("kernel writes allowed" if acc.writable else
                  "kernel writes ALLOWED despite R/W=0 (CR0.WP=0)" if acc.kernel_write
                  else "kernel writes denied (CR0.WP=1)")
            nx = "" if cfg.params.has_nx or cfg.mode is PagingMode.NONE else \
                ", no XD (EFER.NXE=0 or 32-bit paging: everything executable)"
            lines.append(f"  effective: {acc.rwx} {who}; {kw}{nx}")
            leaf = w.steps[-1].entry
            if w.memtype is not None:
                lines.append(f"  memory type: {w.memtype.label} (PAT entry {leaf.pat_index}: "
                             f"PAT={int(leaf.pat)} PCD={int(leaf.pcd)} PWT={int(leaf.pwt)}; "
                             f"{pat_text(cfg)})")
            else:
                lines.append(f"  memory type: unknown ({pat_text(cfg)} is not a valid PAT)")
        lines.append(f"  physical: {w.pa:#x}"
                     + (f" ({page_name(w.page_size)} page at {w.page_base:#x})"
                        if w.page_size else ""))
    else:
        assert w.stop is not None
        lines.append(f"  STOP ({w.stop.value}): {w.detail}")
    return "\n".join(lines)


def walk_to_json(w: Walk) -> dict[str, object]:
    cfg = w.config
    steps = []
    for s in w.steps:
        e = s.entry
        steps.append({
            "level": s.level.name, "table": hx(s.table), "index": s.index,
            "entry_addr": hx(s.entry_addr), "raw": hx(e.raw), "kind": e.kind.value,
            "flags": _flags_json(e), "points_to": hx(e.addr) if e.present else None,
            "reserved": hx(e.reserved) if e.reserved else None, "note": s.note,
        })
    acc = w.access
    leaf = w.steps[-1].entry if w.ok and w.steps else None
    return {
        "va": hx(w.va), "mode": cfg.mode.value, "cr3": hx(cfg.cr3), "ok": w.ok,
        "pa": hx(w.pa), "page_size": w.page_size or None, "steps": steps,
        "access": None if acc is None else {
            "writable": acc.writable, "user": acc.user, "executable": acc.executable,
            "kernel_write": acc.kernel_write},
        "memtype": w.memtype.label if w.memtype is not None else None,
        "pat_index": leaf.pat_index if leaf is not None else None,
        "pat": _pat_json(cfg),
        "stop": w.stop.value if w.stop else None, "detail": w.detail or None,
    }


def _pat_json(cfg: PagingConfig) -> dict[str, object]:
    return {"value": hx(cfg.pat), "source": cfg.pat_source, "note": cfg.pat_note}


# -- dump -----------------------------------------------------------------------------------------
def perm_text(m: Mapping) -> str:
    return ("U" if m.user else "S") + m.rwx


def _pages_text(m: Mapping) -> str:
    if len(m.page_sizes) == 1:
        return f"{m.pages} x {page_name(m.page_sizes[0])}"
    return f"{m.pages} pages: " + "+".join(page_name(s) for s in m.page_sizes)


def mapping_line(m: Mapping, width: int, pwidth: int = 16) -> str:
    pa = "scattered" if m.pa is None else _addr(m.pa, pwidth)
    mt = m.memtype.label if m.memtype is not None else "?"
    return (f"{_addr(m.va, width)}-{_addr(m.end, width)} {size_text(m.size):>9}  "
            f"{pa:<{pwidth + 2}}  {perm_text(m)}  {mt:<3}  {_pages_text(m)}")


def issue_line(i: TableIssue, width: int) -> str:
    return f"{_addr(i.va, width)}-{_addr(i.end, width)}  {i.kind.value}: {i.detail}"


def dump_header(d: Dump, note: bool = True) -> list[str]:
    cfg = d.config
    lines = [f"{mode_text(cfg)}, CR3 {cfg.cr3:#x}" + (" (overridden)" if cfg.overridden else "")
             + f"; {pat_text(cfg)}"]
    if cfg.pat_note and note:
        lines.append(f"note: {cfg.pat_note}")
    if not d.filters.empty:
        lines.append(f"filters: {d.filters.describe()}")
    return lines


def dump_to_text(d: Dump, *, show_issues: bool = True, show_stats: bool = True) -> str:
    cfg = d.config
    lines = dump_header(d)
    if cfg.mode is PagingMode.NONE:
        lines.append("paging is disabled (CR0.PG=0): linear addresses are physical")
        return "\n".join(lines)
    width = _width(cfg)
    pwidth = _pwidth(cfg)
    lines.append(f"{'start':<{width + 2}} {'end':<{width + 2}} {'size':>9}  "
                 f"{'phys':<{pwidth + 2}}  perm  type pages")
    lines.extend(mapping_line(m, width, pwidth) for m in d.mappings)
    if not d.mappings:
        lines.append("(no mappings" + (" match the filters)" if not d.filters.empty else ")"))
    if show_issues and d.issues:
        lines.append(f"entries that map nothing ({len(d.issues)}):")
        lines.extend("  " + issue_line(i, width) for i in d.issues)
    if d.truncated:
        lines.append(f"TRUNCATED: {d.truncated} (raise the limits to see more)")
    if show_stats:
        lines.append(stats_text(d))
    return "\n".join(lines)


def stats_text(d: Dump) -> str:
    st = d.stats
    mapped = sum(m.size for m in d.mappings)
    return (f"{len(d.mappings)} ranges, {st.pages} pages, {size_text(mapped) if mapped else '0'} "
            f"mapped; {st.tables} tables read in {st.reads} request(s), {st.seconds:.3f} s")


def mapping_to_json(m: Mapping) -> dict[str, object]:
    return {"va": hx(m.va), "end": hx(m.end), "size": hx(m.size), "pa": hx(m.pa),
            "writable": m.writable, "user": m.user, "executable": m.executable,
            "memtype": m.memtype.label if m.memtype is not None else None,
            "page_sizes": [hx(s) for s in m.page_sizes], "pages": m.pages}


def issue_to_json(i: TableIssue) -> dict[str, object]:
    return {"kind": i.kind.value, "va": hx(i.va), "end": hx(i.end), "level": i.level,
            "table": hx(i.table), "index": i.index, "raw": hx(i.raw),
            "points_to": hx(i.points_to), "detail": i.detail}


def dump_to_json(d: Dump, anomalies: Sequence[Anomaly] | None = None) -> dict[str, object]:
    cfg = d.config
    f = d.filters
    st = d.stats
    doc: dict[str, object] = {
        "mode": cfg.mode.value, "cr3": hx(cfg.cr3), "top": hx(cfg.top), "pat": _pat_json(cfg),
        "filters": {
            "writable": f.writable, "executable": f.executable, "user": f.user, "wx": f.wx,
            "memtypes": sorted(m.label for m in f.memtypes) if f.memtypes else None,
            "va_start": hx(f.va_start), "va_end": hx(f.va_end), "contains": hx(f.contains)},
        "mappings": [mapping_to_json(m) for m in d.mappings],
        "issues": [issue_to_json(i) for i in d.issues],
        "truncated": d.truncated,
        "stats": {"tables": st.tables, "visits": st.visits, "entries": st.entries,
                  "fast_tables": st.fast_tables, "reads": st.reads,
                  "bytes_read": st.bytes_read, "pages": st.pages,
                  "seconds": round(st.seconds, 6)},
    }
    if anomalies is not None:
        doc["anomalies"] = anomalies_to_json(anomalies)
    return doc


# -- anomalies ---------------------------------------------------------------------------------
def anomalies_to_text(anomalies: Sequence[Anomaly], cfg: PagingConfig) -> str:
    if not anomalies:
        return "no anomalies found"
    width = _width(cfg)
    lines = []
    for a in anomalies:
        lines.append(f"{a.severity.value} [{a.kind.value}]: {a.summary}")
        for r in a.regions:
            parts = []
            if r.va is not None:
                parts.append(f"{_addr(r.va, width)}-{_addr(r.va + r.size, width)}")
            else:
                parts.append(f"phys {r.pa:#x}+{size_text(r.size)}" if r.pa is not None else "")
            if r.va is not None and r.pa is not None:
                parts.append(f"-> {r.pa:#x}")
            if r.note:
                parts.append(f"({r.note})")
            lines.append("    " + " ".join(p for p in parts if p))
        if a.total > len(a.regions):
            lines.append(f"    ... and {a.total - len(a.regions)} more")
        if a.advice:
            lines.append(f"    hint: {a.advice}")
    return "\n".join(lines)


def anomalies_to_json(anomalies: Sequence[Anomaly]) -> list[dict[str, object]]:
    return [{"kind": a.kind.value, "severity": a.severity.value, "summary": a.summary,
             "advice": a.advice or None, "total": a.total,
             "regions": [{"va": hx(r.va), "size": hx(r.size), "pa": hx(r.pa),
                          "note": r.note or None} for r in a.regions]}
            for a in anomalies]


# -- reverse lookup ------------------------------------------------------------------------------
def p2v_to_text(pa: int, hits: Sequence[ReverseHit], cfg: PagingConfig,
                truncated: str | None = None) -> str:
    width = _width(cfg)
    if not hits:
        text = f"physical {pa:#x} is not mapped ({mode_text(cfg)}, CR3 {cfg.cr3:#x})"
    else:
        lines = [f"physical {pa:#x} is mapped at {len(hits)} linear address(es):"]
        for h in hits:
            mt = h.memtype.label if isinstance(h.memtype, MemoryType) else "?"
            perm = ("U" if h.user else "S") + "r" + ("w" if h.writable else "-") + \
                ("x" if h.executable else "-")
            lines.append(f"  {_addr(h.va, width)}  ({page_name(h.page_size)} page at "
                         f"{h.page_va:#x})  {perm}  {mt}")
        text = "\n".join(lines)
    if truncated:
        text += f"\nTRUNCATED: {truncated}; there may be more"
    return text


def p2v_to_json(pa: int, hits: Sequence[ReverseHit], cfg: PagingConfig,
                truncated: str | None = None) -> dict[str, object]:
    return {"pa": hx(pa), "mode": cfg.mode.value, "cr3": hx(cfg.cr3),
            "hits": [{"va": hx(h.va), "page_va": hx(h.page_va), "page_size": hx(h.page_size),
                      "writable": h.writable, "user": h.user, "executable": h.executable,
                      "memtype": h.memtype.label if h.memtype is not None else None}
                     for h in hits],
            "truncated": truncated}
