"""STABS: the ``.stab``/``.stabstr`` debug format JOS teaches, and its ``debuginfo_eip``.

A stab is 12 bytes (``n_strx`` u32, ``n_type`` u8, ``n_other`` u8, ``n_desc`` u16, ``n_value``
u32; "The stabs debug format", Menapace/Kingdon/MacKenzie, ch. 1 and appendix A). The types that
matter for code addresses:

- ``N_SO`` (0x64): a source file starts at ``n_value`` (an empty name ends the file);
- ``N_SOL`` (0x84): line numbers now come from an included file;
- ``N_FUN`` (0x24): a function ``name:F...`` starts at ``n_value``;
- ``N_SLINE`` (0x44): line ``n_desc`` starts at ``n_value`` (relative to the function start
  inside a function, absolute in assembly files);
- ``N_PSYM`` (0xa0): a parameter of the current function.

:func:`debuginfo_eip` is a line-for-line port of the bundled i386 kernel's
``kern/kdebug.c:debuginfo_eip`` (itself written after MIT JOS's): three binary searches
(file, function, line) with JOS's ``stab_binsearch`` semantics, the file name from the nearest
``N_SOL``/``N_SO`` before the line stab, the name cut at ``:``, and the argument count from
the ``N_PSYM`` stabs that follow ``N_FUN``. The kernel's own backtrace is therefore exactly
reproducible. :func:`build_segments` turns the port into an address -> result table that is
constant between consecutive stab addresses, so lookups are one bisection.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

N_GSYM, N_FUN, N_STSYM, N_LCSYM, N_RSYM = 0x20, 0x24, 0x26, 0x28, 0x40
N_SLINE, N_SO, N_LSYM, N_BINCL, N_SOL, N_PSYM, N_EINCL = 0x44, 0x64, 0x80, 0x82, 0x84, 0xA0, 0xA2
N_LBRAC, N_RBRAC = 0xC0, 0xE0

STAB_SIZE = 12
_STAB = struct.Struct("<IBBHI")

UNKNOWN = "<unknown>"


@dataclass(frozen=True, slots=True)
class Stab:
    n_strx: int
    n_type: int
    n_other: int
    n_desc: int
    n_value: int


@dataclass(frozen=True, slots=True)
class EipDebugInfo:
    """JOS ``struct Eipdebuginfo`` plus the return value (``ok`` is ``debuginfo_eip() == 0``).

    ``fn_name`` is already cut at the ``:`` (JOS keeps ``eip_fn_namelen``). On failure the
    fields hold whatever the search had filled in, as the kernel prints them.
    """

    file: str
    line: int
    fn_name: str
    fn_addr: int
    narg: int
    ok: bool


class StabsError(Exception):
    """The ``.stab`` section is malformed (size not a multiple of 12)."""


def parse_stabs(data: bytes) -> list[Stab]:
    """Decode a ``.stab`` section."""
    if len(data) % STAB_SIZE:
        # JOS's linker script appends BYTE(0) after .stab; tolerate trailing padding
        data = data[: len(data) - len(data) % STAB_SIZE]
    return [Stab(*t) for t in _STAB.iter_unpack(data)]


def iter_stabs(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    usable = len(data) - len(data) % STAB_SIZE
    return _STAB.iter_unpack(data[:usable])  # type: ignore[return-value]


class StabTable:
    """A stab array and its string table, searched with JOS semantics."""

    def __init__(self, stab_data: bytes, stabstr: bytes) -> None:
        rows = list(iter_stabs(stab_data))
        self.strx = [r[0] for r in rows]
        self.type = [r[1] for r in rows]
        self.desc = [r[3] for r in rows]
        self.value = [r[4] for r in rows]
        self.stabstr = stabstr
        self._strcache: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.type)

    def string(self, strx: int) -> str:
        s = self._strcache.get(strx)
        if s is None:
            end = self.stabstr.find(b"\0", strx)
            if end < 0:
                end = len(self.stabstr)
            s = self.stabstr[strx:end].decode("latin-1")
            self._strcache[strx] = s
        return s

    # -- kern/kdebug.c --------------------------------------------------------------------------
    def binsearch(self, left: int, right: int, type_: int, addr: int) -> tuple[int, int]:
        """JOS ``stab_binsearch``: narrow [left, right] to the stab of ``type_`` holding addr.

        Returns the new (left, right); ``left > right`` means no stab of that type precedes
        ``addr`` in the region.
        """
        types = self.type
        values = self.value
        region_left, region_right = left, right
        lo, hi = left, right
        any_matches = False
        while lo <= hi:
            true_m = (lo + hi) // 2
            m = true_m
            while m >= lo and types[m] != type_:
                m -= 1
            if m < lo:
                lo = true_m + 1
                continue
            any_matches = True
            v = values[m]
            if v < addr:
                region_left = m
                lo = true_m + 1
            elif v > addr:
                region_right = m - 1
                hi = m - 1
            else:
                region_left = m
                lo = m
                addr += 1
        if not any_matches:
            region_right = region_left - 1
        else:
            k = region_right
            while k > region_left and types[k] != type_:
                k -= 1
            region_left = k
        return region_left, region_right

    def debuginfo_eip(self, addr: int) -> EipDebugInfo:
        """The kernel's ``debuginfo_eip(addr, &info)``; see the module docstring."""
        return self._search(addr)[0]

    def _search(self, addr: int) -> tuple[EipDebugInfo, bool]:
        """``debuginfo_eip`` plus whether an ``N_FUN`` was found (fn_addr is then fixed)."""
        file = UNKNOWN
        line = 0
        fn_name = UNKNOWN
        fn_addr = addr
        narg = 0
        n = len(self.type)
        strsize = len(self.stabstr)

        found = False

        def done(ok: bool) -> tuple[EipDebugInfo, bool]:
            return EipDebugInfo(file, line, fn_name.split(":", 1)[0], fn_addr, narg, ok), found

        if n == 0 or strsize == 0 or self.stabstr[-1] != 0:
            return done(False)
        lfile, rfile = self.binsearch(0, n - 1, N_SO, addr)
        if lfile == 0:
            return done(False)
        lfun, rfun = self.binsearch(lfile, rfile, N_FUN, addr)
        if lfun <= rfun:
            found = True
            if self.strx[lfun] < strsize:
                fn_name = self.string(self.strx[lfun])
            fn_addr = self.value[lfun]
            rel = addr - fn_addr
            lline, rline = lfun, rfun
        else:
            fn_addr = addr
            rel = addr
            lline, rline = lfile, rfile
        lline, rline = self.binsearch(lline, rline, N_SLINE, rel)
        if lline > rline:
            return done(False)
        line = self.desc[lline]
        k = lline
        types = self.type
        while k >= lfile and types[k] != N_SOL and (types[k] != N_SO or not self.value[k]):
            k -= 1
        if k >= lfile and self.strx[k] < strsize:
            file = self.string(self.strx[k])
        if lfun < rfun:
            k = lfun + 1
            while k < rfun and types[k] not in (N_SLINE, N_FUN, N_SO, N_SOL):
                if types[k] == N_PSYM:
                    narg += 1
                k += 1
        return done(True)

    # -- the index -------------------------------------------------------------------------------
    def breakpoints(self) -> list[int]:
        """Addresses at which :meth:`debuginfo_eip` can change its answer (sorted)."""
        pts = {0}
        fn_base = 0
        for t, v in zip(self.type, self.value, strict=True):
            if t == N_SO:
                pts.add(v)
                fn_base = 0
            elif t == N_FUN:
                pts.add(v)
                fn_base = v
            elif t == N_SLINE:
                pts.add(v)
                pts.add((fn_base + v) & 0xFFFFFFFF)
        return sorted(pts)


@dataclass(frozen=True)
class StabSegments:
    """``debuginfo_eip`` as a table: entry ``i`` holds for ``starts[i] <= addr < starts[i+1]``.

    ``fn_addr[i] == -1`` means "the address itself" (no function: JOS sets eip_fn_addr = addr).
    ``names`` holds file and function strings, referenced by index.
    """

    starts: list[int]
    file: list[int]
    line: list[int]
    fn: list[int]
    fn_addr: list[int]
    narg: list[int]
    ok: list[bool]
    names: list[str]


def build_segments(table: StabTable) -> StabSegments:
    """Evaluate ``debuginfo_eip`` at every breakpoint and merge equal neighbours."""
    names: list[str] = []
    ids: dict[str, int] = {}

    def sid(s: str) -> int:
        i = ids.get(s)
        if i is None:
            i = ids[s] = len(names)
            names.append(s)
        return i

    seg = StabSegments([], [], [], [], [], [], [], names)
    prev: tuple[int, int, int, int, int, bool] | None = None
    for bp in table.breakpoints():
        info, found = table._search(bp)
        fa = info.fn_addr if found else -1
        key = (sid(info.file), info.line, sid(info.fn_name), fa, info.narg, info.ok)
        if key == prev:
            continue
        prev = key
        seg.starts.append(bp)
        seg.file.append(key[0])
        seg.line.append(key[1])
        seg.fn.append(key[2])
        seg.fn_addr.append(fa)
        seg.narg.append(key[4])
        seg.ok.append(key[5])
    return seg


@dataclass(frozen=True)
class StabLines:
    """STABS read the straightforward way (what binutils' addr2line does), for ``lookup``.

    ``rows``: ``(address, file, line)`` sorted by address (N_SLINE relative to the current
    N_FUN, absolute outside functions; the file is the current N_SOL or N_SO).
    ``funcs``: ``(start, end, name, narg)``: ``end`` is the next function's start or the
    end of the source file (empty N_SO); ``narg`` counts the N_PSYM (stack) parameters.
    ``entries``: the addresses binutils' STABS index is made of (bfd/syms.c
    ``_bfd_stab_section_find_nearest_line``): every function's start, and the start of each
    source file that has no function (assembly). addr2line answers an address with the last
    entry at or below it, so a function's padding (up to the next entry) is still that
    function's; :func:`kdiag.symbols.elfindex` extends the functions the same way.
    """

    rows: list[tuple[int, str, int]]
    funcs: list[tuple[int, int, str, int]]
    entries: list[int] = field(default_factory=list)


def read_lines(table: StabTable) -> StabLines:
    rows: list[tuple[int, str, int]] = []
    starts: list[int] = []
    ends: list[int | None] = []
    names: list[str] = []
    nargs: list[int] = []
    so_dir = ""
    main_file = cur_file = ""
    open_fn = False
    seen_line = False
    entries: list[int] = []
    file_start: int | None = None  # start of the current source file until it has a function

    def close(end: int) -> None:
        if open_fn and ends[-1] is None:
            ends[-1] = end

    for ty, v, desc, strx in zip(table.type, table.value, table.desc, table.strx, strict=True):
        if ty == N_SO:
            name = table.string(strx)
            close(v)
            open_fn = False
            if file_start is not None:  # the previous file had no function
                entries.append(file_start)
                file_start = None
            if not name:  # end of this source file
                so_dir = ""
                continue
            if name.endswith("/"):
                so_dir = name
                continue
            main_file = cur_file = name if name.startswith("/") or not so_dir else so_dir + name
            file_start = v
        elif ty == N_SOL:
            cur_file = table.string(strx)
        elif ty == N_FUN:
            name = table.string(strx)
            if not name:  # gcc's end-of-function marker: n_value is the size
                if open_fn:
                    close(starts[-1] + v)
                open_fn = False
                continue
            close(v)
            open_fn = True
            seen_line = False
            file_start = None
            entries.append(v)
            starts.append(v)
            ends.append(None)
            names.append(name.split(":", 1)[0])
            nargs.append(0)
        elif ty == N_PSYM and open_fn and not seen_line:
            nargs[-1] += 1
        elif ty == N_SLINE:
            seen_line = True
            addr = (starts[-1] + v) & 0xFFFFFFFF if open_fn else v
            rows.append((addr, cur_file or main_file, desc))
    rows.sort(key=lambda r: r[0])
    order = sorted(range(len(starts)), key=lambda i: starts[i])
    funcs: list[tuple[int, int, str, int]] = []
    for n, i in enumerate(order):
        end = ends[i]
        if end is None:
            end = starts[order[n + 1]] if n + 1 < len(order) else starts[i] + 1
        funcs.append((starts[i], end, names[i], nargs[i]))
    if file_start is not None:
        entries.append(file_start)
    return StabLines(rows, funcs, sorted(set(entries)))
