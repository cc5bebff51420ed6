"""Lines of a QEMU ``-d`` log in, typed records out, lazily (see :mod:`kdiag.qemulog.records`).

:func:`iter_lines` reads a binary stream in blocks and yields ``(LogPos, text)``;
:func:`parse_lines` turns those into records; :func:`parse_stream` / :func:`from_path` combine
them. Nothing here raises on odd input: unknown or cut lines become :class:`Unknown` records,
a dump cut short is attached as it is (``dump.complete`` tells).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from kdiag.qemulog.records import (
    NO_EXCEPTION,
    CheckException,
    CpuReset,
    HardwareInt,
    Interrupt,
    LogPos,
    Record,
    RegisterDump,
    SmmEvent,
    TripleFault,
    Unknown,
)
from kdiag.qemulog.regdump import DumpBuilder, is_dump_line

TYPE_CHECKING = False  # typing's constant without importing typing (start-up cost: kdiag._record)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import BinaryIO

__all__ = ["from_path", "iter_lines", "parse_lines", "parse_stream"]

BLOCK = 1 << 20
_H = r"([0-9a-fA-F]+)"
_CHECK = re.compile(r"^check_exception old: 0x" + _H + r" new 0x" + _H)
_INT = re.compile(r"^\s*(\d+): v=" + _H + r" e=" + _H + r" i=(\d) cpl=(\d)")
_INT_IP = re.compile(r" IP=" + _H + r":" + _H)
_INT_PC = re.compile(r" pc=" + _H)
_INT_SP = re.compile(r" SP=" + _H + r":" + _H)
_INT_CR2 = re.compile(r" CR2=" + _H)
_INT_EAX = re.compile(r" (?:env->regs\[R_EAX\]|EAX)=" + _H)
_HWINT = re.compile(r"^Servicing hardware INT=0x" + _H)
_RESET = re.compile(r"^CPU Reset \(CPU (\d+)\)")


def iter_lines(stream: BinaryIO, start_offset: int = 0, first_line: int | None = 1,
               end_offset: int | None = None) -> Iterator[tuple[LogPos, str]]:
    """Yield ``(LogPos, text)`` for each line of ``stream`` from its current position.

    ``start_offset`` is the file offset of the stream's current position (for LogPos);
    ``first_line`` the number of the first line yielded, or None if unknown (tail reads).
    Reading stops at ``end_offset`` if given. Text is decoded as UTF-8 with replacement and
    stripped of the line ending; a final line without newline is yielded too.
    """
    offset = start_offset
    line_no = first_line
    rest = b""
    while True:
        want = BLOCK if end_offset is None else min(BLOCK, end_offset - offset - len(rest))
        block = stream.read(want) if want > 0 else b""
        if not block:
            break
        data = rest + block
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            raw = data[start:nl]
            yield LogPos(offset, line_no), raw.decode("utf-8", "replace").rstrip("\r")
            offset += nl + 1 - start
            if line_no is not None:
                line_no += 1
            start = nl + 1
        rest = data[start:]
    if rest:
        yield LogPos(offset, line_no), rest.decode("utf-8", "replace").rstrip("\r")


def _hex(m: re.Match[str] | None, group: int = 1) -> int | None:
    return int(m.group(group), 16) if m else None


def _interrupt_fields(text: str, m: re.Match[str]) -> dict[str, object]:
    ip = _INT_IP.search(text)
    sp = _INT_SP.search(text)
    return {
        "seq": int(m.group(1)), "vector": int(m.group(2), 16) & 0xFFFF,
        "error_code": int(m.group(3), 16), "is_int": m.group(4) == "1", "cpl": int(m.group(5)),
        "cs": _hex(ip, 1), "ip": _hex(ip, 2), "pc": _hex(_INT_PC.search(text)),
        "ss": _hex(sp, 1), "sp": _hex(sp, 2), "cr2": _hex(_INT_CR2.search(text)),
        "eax": _hex(_INT_EAX.search(text)),
    }


def parse_lines(lines: Iterable[tuple[LogPos, str]]) -> Iterator[Record]:
    """Turn log lines into records. Register dumps are attached to the record before them."""
    pending_kind: str | None = None
    pending_pos: LogPos | None = None
    pending_fields: dict[str, object] = {}
    builder: DumpBuilder | None = None
    last_hw: int | None = None

    def flush() -> Record | None:
        nonlocal pending_kind, builder
        kind, b = pending_kind, builder
        pending_kind, builder = None, None
        if kind is None or pending_pos is None:
            return None
        dump = b.dump if b is not None and b.lines else None
        if kind == "int":
            return Interrupt(pending_pos, dump=dump, **pending_fields)  # type: ignore[arg-type]
        if kind == "reset":
            return CpuReset(pending_pos, cpu=int(pending_fields["cpu"]),  # type: ignore[call-overload]
                            dump=dump)
        if kind == "smm":
            return SmmEvent(pending_pos, kind=str(pending_fields["kind"]), dump=dump)
        if dump is not None:
            return RegisterDump(pending_pos, dump=dump)
        return None

    for pos, text in lines:
        if builder is not None:
            if builder.feed(text):
                continue
            rec = flush()
            if rec is not None:
                yield rec
        if not text.strip():
            continue
        hw, last_hw = last_hw, None
        if text.startswith("check_exception"):
            m = _CHECK.match(text)
            if m:
                old = int(m.group(1), 16)
                yield CheckException(pos, old=None if old == NO_EXCEPTION else old,
                                     new=int(m.group(2), 16))
                continue
        m = _INT.match(text)
        if m:
            pending_fields = _interrupt_fields(text, m)
            pending_fields["hardware"] = hw is not None and hw == pending_fields["vector"]
            pending_kind, pending_pos, builder = "int", pos, DumpBuilder()
            continue
        if text.startswith("Servicing hardware INT"):
            m = _HWINT.match(text)
            if m:
                last_hw = int(m.group(1), 16)
                yield HardwareInt(pos, vector=last_hw)
                continue
        if text.startswith("Triple fault"):
            yield TripleFault(pos)
            continue
        if text.startswith("CPU Reset"):
            m = _RESET.match(text)
            if m:
                pending_fields = {"cpu": int(m.group(1))}
                pending_kind, pending_pos, builder = "reset", pos, DumpBuilder()
                continue
        if text.startswith("SMM: "):
            pending_fields = {"kind": "enter" if "enter" in text else "rsm"}
            pending_kind, pending_pos, builder = "smm", pos, DumpBuilder()
            continue
        if is_dump_line(text):
            pending_fields = {}
            pending_kind, pending_pos, builder = "dump", pos, DumpBuilder()
            builder.feed(text)
            continue
        yield Unknown(pos, text=text[:500])
    if builder is not None or pending_kind is not None:
        rec = flush()
        if rec is not None:
            yield rec


def parse_stream(stream: BinaryIO, start_offset: int = 0,
                 first_line: int | None = 1) -> Iterator[Record]:
    """Records of a binary stream, read forward from its current position."""
    return parse_lines(iter_lines(stream, start_offset=start_offset, first_line=first_line))


def from_path(path: str | Path) -> list[Record]:
    """All records of the log file at ``path`` (convenience; reads the whole file)."""
    with open(path, "rb") as f:
        return list(parse_stream(f))
