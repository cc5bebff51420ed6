"""QEMU's own page-table views (HMP ``info mem`` / ``info tlb``) as data, and kdiag's dump
reduced to the same shape, so tests and the benchmark can compare them.

Formats (QEMU 7.2 ``target/i386/monitor.c``): ``info mem`` prints ``START-END SIZE urw`` per
range of equal U/W (ANDed over levels, no NX), addresses canonicalised with 16 hex digits;
``info tlb`` prints ``VA: PA XGPDACTUW`` per present leaf, PA masked per page size, flags of
the leaf entry alone. QEMU does not check reserved bits and follows recursive entries.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from kdiag.paging.dump import Dump

_MEM = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16}) ([0-9a-f]{16}) ([u-])r([w-])$")
_TLB = re.compile(r"^([0-9a-f]{16}): ([0-9a-f]{16}) ([X-])([G-])([P-])([D-])([A-])([C-])([T-])"
                  r"([U-])([W-])$")

Range = tuple[int, int, bool, bool]  # start, end (exclusive), user, writable

ASM = Path(__file__).resolve().parent / "data" / "ptkern.asm"
VARIANTS = ("32", "32PSE", "PAE", "L4", "L5")


def build_ptkern(variant: str, out_dir: Path) -> Path:
    """Assemble and link one ptkern variant (nasm + ld, about 30 ms)."""
    obj = out_dir / f"ptkern-{variant}.o"
    elf = out_dir / f"ptkern-{variant}.elf"
    subprocess.run(["nasm", "-f", "elf32", f"-DMODE_{variant}", str(ASM), "-o", str(obj)],
                   check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext=0x100000", "-e", "_start", str(obj), "-o",
                    str(elf)], check=True)
    return elf


def parse_info_mem(text: str) -> list[Range]:
    out = []
    for line in text.splitlines():
        m = _MEM.match(line.strip())
        if m:
            start, size = int(m.group(1), 16), int(m.group(3), 16)
            # QEMU canonicalises END too, which turns 0x800000000000 into 0xffff8...: use SIZE
            out.append((start, start + size, m.group(4) == "u", m.group(5) == "w"))
    return out


def parse_info_tlb(text: str, pa_mask: int = (1 << 52) - 1) -> dict[int, tuple[int, str]]:
    """VA -> (PA, flags) per present leaf. PAE prints XD inside the PA: ``pa_mask`` drops it."""
    out = {}
    for line in text.splitlines():
        m = _TLB.match(line.strip())
        if m:
            flags = "".join(m.group(i) for i in range(3, 12))
            out[int(m.group(1), 16)] = (int(m.group(2), 16) & pa_mask, flags)
    return out


def tlb_flags(raw: int, large: bool) -> str:
    """The ``XGPDACTUW`` string QEMU prints for a leaf entry."""
    return "".join((
        "X" if raw >> 63 & 1 else "-", "G" if raw & 0x100 else "-",
        "P" if large and raw & 0x80 else "-", "D" if raw & 0x40 else "-",
        "A" if raw & 0x20 else "-", "C" if raw & 0x10 else "-", "T" if raw & 0x08 else "-",
        "U" if raw & 0x04 else "-", "W" if raw & 0x02 else "-"))


def merge(ranges: Iterable[Range]) -> list[Range]:
    out: list[Range] = []
    for r in sorted(ranges):
        if out and out[-1][1] == r[0] and out[-1][2:] == r[2:]:
            out[-1] = (out[-1][0], r[1], r[2], r[3])
        else:
            out.append(r)
    return out


def subtract(ranges: Iterable[Range], holes: Sequence[tuple[int, int]]) -> list[Range]:
    """Remove the linear intervals ``holes`` (e.g. recursive slots kdiag does not descend)."""
    out = list(ranges)
    for lo, hi in holes:
        nxt: list[Range] = []
        for a, b, u, w in out:
            if hi <= a or b <= lo:
                nxt.append((a, b, u, w))
                continue
            if a < lo:
                nxt.append((a, lo, u, w))
            if hi < b:
                nxt.append((hi, b, u, w))
        out = nxt
    return merge(out)


def dump_as_info_mem(d: Dump) -> list[Range]:
    """kdiag's ranges re-merged on U/W only, as ``info mem`` merges them."""
    return merge((m.va, m.end, m.user, m.writable) for m in d.mappings)


def dump_pages(d: Dump) -> dict[int, tuple[int, int]]:
    """VA -> (PA, page size) for every leaf page (needs ``collect_segments``)."""
    out = {}
    for s in d.segments or ():
        for off in range(0, s.size, s.page_size):
            out[s.va + off] = (s.pa + off, s.page_size)
    return out


def skipped_slots(d: Dump) -> list[tuple[int, int]]:
    """Linear ranges behind recursive/looping entries (QEMU walks them, kdiag does not)."""
    return [(i.va, i.end) for i in d.issues
            if i.kind.value in ("recursive-self-map", "table-loop")]


class RawHmp:
    """A plain HMP monitor socket (QEMU ``-monitor unix:PATH,server=on,wait=off``).

    ``info tlb`` of a large address space (one ~45-byte line per 4 KiB page: ~11 MB for the
    pt-stress scenario) exceeds what the QMP client accepts in one message; the raw monitor has
    no such limit. Output is everything up to the next ``(qemu)`` prompt, echo stripped."""

    def __init__(self, path: Path, timeout: float = 120.0) -> None:
        import socket

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self._until_prompt()

    def _until_prompt(self) -> bytes:
        buf = bytearray()
        while not buf.endswith(b"(qemu) "):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("HMP socket closed")
            buf += chunk
        return bytes(buf[:-len(b"(qemu) ")])

    def cmd(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        text = self._until_prompt().decode(errors="replace").replace("\r", "")
        first, _, rest = text.partition("\n")  # the monitor echoes the command line
        return rest if line in first else text

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawHmp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
