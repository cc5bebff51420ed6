"""Bounded, cached word reads from a Target's virtual memory for the unwinders.

Reads go through ``Target.read_virt`` one page at a time and are cached; every failure (no
translation, unreadable physical memory, a target gone) becomes :class:`Unreadable`, which
the unwinders turn into a stop with a note - never an exception out of ``unwind``. A budget
bounds the number of page reads so a corrupt chain cannot keep a slow target busy.
"""

from __future__ import annotations

from kdiag.errors import KdiagError
from kdiag.target.base import Target

PAGE = 4096


class Unreadable(Exception):
    """``addr`` could not be read (``why`` says what the target answered)."""

    def __init__(self, addr: int, why: str) -> None:
        super().__init__(f"unreadable memory at {addr:#x} ({why})")
        self.addr = addr
        self.why = why


class StackMemory:
    def __init__(self, target: Target, word_size: int, max_pages: int = 512) -> None:
        self.target = target
        self.ws = word_size
        self.mask = (1 << (8 * word_size)) - 1
        self.pages: dict[int, bytes | None] = {}
        self.max_pages = max_pages

    def _page(self, base: int) -> bytes:
        if base in self.pages:
            data = self.pages[base]
            if data is None:
                raise Unreadable(base, "unmapped or unreadable page")
            return data
        if len(self.pages) >= self.max_pages:
            raise Unreadable(base, f"read budget of {self.max_pages} pages exhausted")
        try:
            data = self.target.read_virt(base, PAGE)
        except KdiagError as err:
            self.pages[base] = None
            raise Unreadable(base, str(err).split("\n")[0]) from err
        if len(data) != PAGE:
            self.pages[base] = None
            raise Unreadable(base, "short read")
        self.pages[base] = data
        return data

    def read(self, addr: int, size: int) -> bytes:
        addr &= self.mask
        out = b""
        while size > 0:
            base = addr & ~(PAGE - 1)
            off = addr - base
            n = min(size, PAGE - off)
            try:
                out += self._page(base)[off:off + n]
            except Unreadable as err:
                raise Unreadable(addr, err.why) from None
            addr = (addr + n) & self.mask
            size -= n
        return out

    def word(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, self.ws), "little")

    def words(self, addr: int, count: int) -> list[int]:
        data = self.read(addr, self.ws * count)
        ws = self.ws
        return [int.from_bytes(data[i:i + ws], "little") for i in range(0, len(data), ws)]

    def readable(self, addr: int) -> bool:
        try:
            self.read(addr, 1)
            return True
        except Unreadable:
            return False
