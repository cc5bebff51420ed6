"""Reading a large QEMU log from its end.

A 1 kHz timer makes QEMU write 1-1.4 MB of ``-d int`` log per second, so logs of gigabytes are
normal and the interesting part is at the end. :func:`read_window` parses the records of a byte
range (skipping the partial first line when it starts mid-file); the triage engine grows the
window from the end until the fatal chain and its context are inside it. When the tail holds no
fatal event at all, :func:`rfind_any` searches the rest of the file backwards for the byte
patterns of a triple fault at memchr speed, without parsing.

Line numbers are only known when a window starts at offset 0; otherwise records carry their
byte offset and ``line=None`` (counting newlines would mean reading the whole file).
"""

from __future__ import annotations

import os

from kdiag.qemulog.parser import iter_lines, parse_lines
from kdiag.qemulog.records import Record

TYPE_CHECKING = False  # typing's constant without importing typing (start-up cost: kdiag._record)
if TYPE_CHECKING:
    from typing import BinaryIO

__all__ = ["count_occurrences", "read_window", "rfind_any", "stream_size"]

SEARCH_BLOCK = 8 << 20


def stream_size(stream: BinaryIO) -> int:
    try:
        return os.fstat(stream.fileno()).st_size
    except (OSError, AttributeError, ValueError):
        pos = stream.tell()
        stream.seek(0, os.SEEK_END)
        size = stream.tell()
        stream.seek(pos)
        return size


def read_window(stream: BinaryIO, start: int, end: int | None = None) -> list[Record]:
    """Records of bytes ``[start, end)``; a line cut by ``start`` is skipped, one cut by ``end``
    is read to its end (so ``end`` may be exceeded by one line)."""
    stream.seek(start)
    first_line: int | None = 1
    if start > 0:
        first_line = None
        skipped = 0
        while True:
            chunk = stream.read(65536)
            if not chunk:
                return []
            nl = chunk.find(b"\n")
            if nl >= 0:
                skipped += nl + 1
                break
            skipped += len(chunk)
        start += skipped
        stream.seek(start)
    lines = iter_lines(stream, start_offset=start, first_line=first_line)
    if end is None:
        return list(parse_lines(lines))

    def bounded():  # type: ignore[no-untyped-def]
        for pos, text in lines:
            if pos.offset >= end:
                return
            yield pos, text

    return list(parse_lines(bounded()))


def rfind_any(stream: BinaryIO, needles: tuple[bytes, ...], end: int,
              start: int = 0) -> int | None:
    """Offset of the last occurrence of any of ``needles`` wholly inside ``[start, end)``."""
    overlap = max(len(n) for n in needles)
    hi = end
    while hi > start:
        lo = max(start, hi - SEARCH_BLOCK)
        stream.seek(lo)
        block = stream.read(hi - lo + (overlap if hi < end else 0))
        best = -1
        for n in needles:
            i = block.rfind(n)
            if i >= 0 and lo + i + len(n) <= end:
                best = max(best, i)
        if best >= 0:
            return lo + best
        hi = lo
    return None


def count_occurrences(stream: BinaryIO, needle: bytes, start: int, end: int) -> int:
    """Occurrences of ``needle`` starting inside ``[start, end)`` (block reads, no parsing)."""
    n = 0
    pos = start
    carry = b""
    while pos < end:
        stream.seek(pos)
        block = stream.read(min(SEARCH_BLOCK, end - pos))
        if not block:
            break
        data = carry + block
        n += data.count(needle)
        carry = data[-(len(needle) - 1):] if len(needle) > 1 else b""  # too short to match alone
        pos += len(block)
    return n
