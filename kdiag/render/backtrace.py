"""Text and JSON renderers for backtraces, shared by ``kd bt`` (gdb) and ``kdiag bt`` (CLI).

Formats:

- ``full`` (:func:`to_text`): gdb-like frames with the interrupt boundaries::

      #0  0xf0100ab4 in mon_backtrace+0x9 (0x0, 0x0, 0xf011efbc) at kern/monitor.c:26
      #1  0xf0100feb in page_fault_handler+0x32 (0xf011efbc) at kern/trap.c:82
      ...
      --- interrupt 14 (#PF) from CPL3 ---
      #5  0xf010201f in ulevel3+0x1f (0x1, 0x1111, 0x2222) at kern/user.c:22
      (end of the call chain (return address 0))

- ``jos`` (:func:`jos_text`): JOS lab 1's ``mon_backtrace`` output, byte for byte::

      Stack backtrace:
        ebp f010ff78  eip f01008ae  args 00000001 f010ff8c 00000000 f0110580 00000000
               kern/monitor.c:143: monitor+106

JSON (:func:`to_json`, :func:`jos_json`) carries the same facts with addresses as hex strings.
"""

from __future__ import annotations

from typing import Any

from kdiag.symbols.location import Location
from kdiag.unwind.frames import Backtrace, Frame, InterruptBoundary
from kdiag.unwind.jos import JosRow, JosTrace


def _hex(v: int | None) -> str | None:
    return None if v is None else f"{v:#x}"


def _addr(v: int, ws: int) -> str:
    return f"0x{v:0{2 * ws}x}"


# -- full ------------------------------------------------------------------------------------------
def frame_line(f: Frame, ws: int) -> list[str]:
    loc = f.location
    head = f"#{f.level:<2} {_addr(f.pc, ws)} in "
    where = ""
    if loc is None or (loc.symbol is None and loc.function is None):
        name = "??"
    else:
        fn = loc.function if loc.inlined_into and loc.function else loc.symbol
        off = f.offset
        name = str(fn) if loc.inlined_into or not off else f"{fn}+{off:#x}"
        if loc.file:
            where = f" at {loc.file}:{loc.line if loc.line is not None else '?'}"
    args = ""
    if f.args:
        args = " (" + ", ".join(f"{a:#x}" for a in f.args) + ")"
    tags = []
    if f.is_entry_stub:
        tags.append("entry stub")
    if f.cpl == 3:
        tags.append("user")
    tail = f"  [{', '.join(tags)}]" if tags else ""
    out = [head + name + args + where + tail]
    if loc is not None and loc.inlined_into:
        for call in loc.inlined_into:
            site = f" at {call.file}:{call.line}" if call.file else ""
            out.append(f"    inlined into {call.function}{site}")
    return out


def to_text(bt: Backtrace, *, show_method: bool = False) -> str:
    lines: list[str] = []
    for f in bt.frames:
        if f.boundary is not None:
            lines.append(f.boundary.text())
        fl = frame_line(f, bt.word_size)
        if show_method:
            fl[0] += f"  <{f.method}>"
        lines.extend(fl)
    if bt.stop_reason:
        lines.append(f"({bt.stop_reason})")
    for note in bt.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _loc_json(loc: Location | None) -> dict[str, Any]:
    if loc is None:
        return {"symbol": None, "file": None, "line": None, "function": None, "inlined_into": []}
    return {"symbol": loc.symbol, "function_start": _hex(loc.function_start),
            "file": loc.file, "line": loc.line, "function": loc.function or loc.symbol,
            "inlined_into": [{"function": c.function, "file": c.file, "line": c.line}
                             for c in loc.inlined_into],
            "elf": loc.elf, "source": loc.source}


def _boundary_json(b: InterruptBoundary | None) -> dict[str, Any] | None:
    if b is None:
        return None
    return {"text": b.text(), "vector": b.vector, "mnemonic": b.mnemonic,
            "error_code": _hex(b.error_code), "from_cpl": b.from_cpl, "to_cpl": b.to_cpl,
            "frame_address": _hex(b.frame_address), "stub": b.stub,
            "stack_switch": b.stack_switch, "recognized_by": b.recognized_by,
            "found_by": b.found_by}


def to_json(bt: Backtrace) -> dict[str, Any]:
    frames = []
    for f in bt.frames:
        d: dict[str, Any] = {"level": f.level, "pc": _hex(f.pc), "sp": _hex(f.sp),
                             "fp": _hex(f.fp), "offset": _hex(f.offset), "method": f.method,
                             "cpl": f.cpl, "entry_stub": f.is_entry_stub,
                             "args": [_hex(a) for a in f.args],
                             "boundary": _boundary_json(f.boundary)}
        d.update(_loc_json(f.location))
        frames.append(d)
    return {"format": "full", "word_size": bt.word_size, "frames": frames,
            "stop_reason": bt.stop_reason, "notes": list(bt.notes)}


# -- JOS ---------------------------------------------------------------------------------------------
def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def jos_row_lines(r: JosRow, ws: int) -> list[str]:
    w = 2 * ws
    reg = "ebp" if ws == 4 else "rbp"
    ip = "eip" if ws == 4 else "rip"
    args = " ".join(f"{a:0{w}x}" for a in r.args)
    first = f"  {reg} {r.ebp:0{w}x}  {ip} {r.eip:0{w}x}  args {args}"
    if r.info is not None:
        off = _signed32(r.eip - r.info.fn_addr) if ws == 4 else r.eip - r.info.fn_addr
        second = f"         {r.info.file}:{r.info.line}: {r.info.fn_name}+{off}"
    else:
        loc = r.location
        if loc is None:
            second = "         <unknown>:0: <unknown>+0"
        else:
            off = r.eip - loc.function_start if loc.function_start is not None else 0
            second = (f"         {loc.file or '<unknown>'}:{loc.line or 0}: "
                      f"{loc.symbol or '<unknown>'}+{off}")
    return [first, second]


def jos_text(trace: JosTrace) -> str:
    lines = ["Stack backtrace:"]
    for r in trace.rows:
        lines.extend(jos_row_lines(r, trace.word_size))
    if trace.stop_reason:
        lines.append(f"  ({trace.stop_reason})")
    return "\n".join(lines)


def jos_json(trace: JosTrace) -> dict[str, Any]:
    rows = []
    for r in trace.rows:
        d: dict[str, Any] = {"ebp": _hex(r.ebp), "eip": _hex(r.eip),
                             "args": [_hex(a) for a in r.args]}
        if r.info is not None:
            d.update(file=r.info.file, line=r.info.line, function=r.info.fn_name,
                     function_start=_hex(r.info.fn_addr),
                     offset=_signed32(r.eip - r.info.fn_addr), narg=r.info.narg,
                     found=r.info.ok)
        elif r.location is not None:
            loc = r.location
            d.update(file=loc.file, line=loc.line, function=loc.symbol,
                     function_start=_hex(loc.function_start),
                     offset=(r.eip - loc.function_start) if loc.function_start else None)
        rows.append(d)
    return {"format": "jos", "word_size": trace.word_size, "rows": rows,
            "stop_reason": trace.stop_reason}
