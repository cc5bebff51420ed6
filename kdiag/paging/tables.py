"""Page-table pages read once, in bulk, for one stop of the guest.

A ``TableCache`` holds the raw bytes of every 4 KiB page that held a paging structure. The
walker asks it for single entries, the dumper for whole tables; before descending, the dumper
``prefetch``es all child tables of a table at once. Prefetching sorts the pages, coalesces
neighbours into runs and issues one ``read_phys`` per run, so a backend with a cheap bulk path
(QMP/gdb ``pmemsave``, a core file) pays one round trip for hundreds of tables.

Backends may advertise two optional hints (plain attributes, not part of the Target protocol):

- ``bulk_read_gap``: bytes of unneeded memory worth reading to save one extra request
  (pmemsave: hundreds of KiB; gdb packets: 0). Default 0: only adjacent pages are merged.
- ``bulk_read_max``: the largest single read to issue (default 16 MiB).
- ``table_readahead``: bytes to read around a missing table page, in one aligned window
  (default: ``bulk_read_gap`` up to 256 KiB). Allocators put tables next to each other, so
  on a backend where a request costs more than its bytes, the first read usually brings
  the whole hierarchy. 0 disables it.

A run that fails to read is retried page by page so one bad pointer (a table "beyond RAM")
does not hide its neighbours; pages that cannot be read are remembered with the error text.
The cache is valid until the guest runs again; create a new one per stop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from kdiag.errors import MemoryReadError

if TYPE_CHECKING:
    from kdiag.target.base import Target

log = logging.getLogger(__name__)

PAGE = 4096
PAGE_MASK = ~(PAGE - 1)
DEFAULT_MAX_TABLES = 32768  # 128 MiB of tables; far beyond any sane kernel's
DEFAULT_BULK_MAX = 16 << 20


class TableLimitReached(Exception):
    """Internal: more distinct table pages than ``max_pages`` were requested."""


class TableCache:
    """Raw 4 KiB pages of paging structures, keyed by their page-aligned physical address."""

    def __init__(self, target: Target, *, max_pages: int = DEFAULT_MAX_TABLES,
                 gap: int | None = None, bulk_max: int | None = None,
                 whole_pages: bool = True) -> None:
        self.target = target
        self.whole_pages = whole_pages  # entry(): read the whole page (and keep it) on a miss
        self.max_pages = max_pages
        self._gap_fixed = gap is not None
        self.gap = gap or 0
        self.bulk_max = bulk_max or int(getattr(target, "bulk_read_max", 0) or DEFAULT_BULK_MAX)
        self._pages: dict[int, bytes] = {}
        self.bad: dict[int, str] = {}
        self.reads = 0  # read_phys calls issued
        self.bytes_read = 0

    def __len__(self) -> int:
        return len(self._pages)

    def __contains__(self, pa: int) -> bool:
        return (pa & PAGE_MASK) in self._pages

    # -- reading ---------------------------------------------------------------------------
    def _read(self, pa: int, size: int) -> bytes:
        self.reads += 1
        data = self.target.read_phys(pa, size)
        if len(data) != size:
            raise MemoryReadError(f"short read at {pa:#x}: {len(data)} of {size} bytes",
                                  addr=pa, size=size)
        self.bytes_read += size
        return data

    def _hints(self) -> tuple[int, int]:
        """(gap, readahead) now: a backend may raise its hints once it knows its bulk path."""
        gap = self.gap if self._gap_fixed else int(getattr(self.target, "bulk_read_gap", 0) or 0)
        ra = getattr(self.target, "table_readahead", None)
        if ra is None:
            ra = min(gap, 256 * 1024)
        ra = int(ra or 0)
        if ra and ra & (ra - 1):  # a power of two, for aligned windows
            ra = 1 << (ra.bit_length() - 1)
        return gap, (ra if ra >= 2 * PAGE else 0)

    def prefetch(self, pas: Iterable[int]) -> None:
        """Make sure the pages holding ``pas`` are cached, reading missing ones in bulk.

        Raises ``TableLimitReached`` when the cache would exceed ``max_pages``.
        """
        need = sorted({pa & PAGE_MASK for pa in pas} - self._pages.keys() - self.bad.keys())
        if not need:
            return
        if len(self._pages) + len(need) > self.max_pages:
            raise TableLimitReached(f"more than {self.max_pages} page-table pages")
        gap, ra = self._hints()
        pages = need
        if ra:  # read whole aligned windows around the pages we need
            span: set[int] = set()
            for base in {pa & ~(ra - 1) for pa in need}:
                span.update(range(base, base + ra, PAGE))
            pages = sorted(span - self._pages.keys() - self.bad.keys())
            if len(self._pages) + len(pages) > self.max_pages:
                pages = need
        runs: list[tuple[int, int]] = []  # (start, end) byte ranges
        max_run = max(self.bulk_max, PAGE)
        for pa in pages:
            if runs and pa - runs[-1][1] <= gap and pa + PAGE - runs[-1][0] <= max_run:
                runs[-1] = (runs[-1][0], pa + PAGE)
            else:
                runs.append((pa, pa + PAGE))
        wanted = set(need)
        for start, end in runs:
            if not wanted.intersection(range(start, end, PAGE)):
                continue
            try:
                data = self._read(start, end - start)
            except MemoryReadError as err:
                if end - start == PAGE:
                    self.bad[start] = str(err)
                    continue
                log.debug("bulk read %#x-%#x failed (%s); retrying page by page", start, end, err)
                for pa in range(start, end, PAGE):
                    if pa in wanted:
                        self._read_one(pa)
                continue
            for off in range(0, end - start, PAGE):
                pa = start + off
                if pa in wanted or pa not in self._pages:
                    self._pages[pa] = data[off:off + PAGE]

    def _read_one(self, pa: int) -> bytes | None:
        try:
            data = self._read(pa, PAGE)
        except MemoryReadError as err:
            self.bad[pa] = str(err)
            return None
        self._pages[pa] = data
        return data

    def page(self, pa: int) -> bytes | None:
        """The 4 KiB page at ``pa & ~0xfff`` (read now if missing), None if unreadable."""
        base = pa & PAGE_MASK
        data = self._pages.get(base)
        if data is not None:
            return data
        if base in self.bad:
            return None
        self.prefetch((base,))
        data = self._pages.get(base)
        return data

    def table(self, pa: int, size: int) -> bytes | None:
        """``size`` bytes of the table at ``pa`` (which must not cross a page), None if unreadable.

        A table smaller than a page (the PAE PDPT) whose page cannot be read whole is read on
        its own, so a PDPT in the last 32 bytes of RAM still works.
        """
        page = self.page(pa)
        off = pa & (PAGE - 1)
        if page is not None:
            return page[off:off + size]
        if size < PAGE:
            try:
                return self._read(pa, size)
            except MemoryReadError:
                return None
        return None

    def error(self, pa: int) -> str:
        """Why the page at ``pa`` could not be read ('' if it could)."""
        return self.bad.get(pa & PAGE_MASK, "")

    def entry(self, pa: int, size: int) -> int:
        """One little-endian entry of ``size`` bytes from its cached page; on a miss the page
        is read whole and kept (``whole_pages``), or just the entry (a one-off translation).

        Raises ``MemoryReadError`` when it cannot be read.
        """
        base = pa & PAGE_MASK
        page = self._pages.get(base)
        if page is None and self.whole_pages and base not in self.bad:
            try:  # memoised per table page: the next walk through this table reads nothing
                self.prefetch((base,))
            except TableLimitReached:
                pass
            page = self._pages.get(base)
        if page is not None:
            off = pa - base
            return int.from_bytes(page[off:off + size], "little")
        if base in self.bad:
            raise MemoryReadError(self.bad[base], addr=pa, size=size)
        return int.from_bytes(self._read(pa, size), "little")
