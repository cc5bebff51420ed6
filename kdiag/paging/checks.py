"""Anomaly checks over a dump: the mapping bugs early kernels actually have.

``check(dump, options)`` returns :class:`Anomaly` values, most severe first, each naming the
linear (and physical) ranges involved:

=====================  ========  ==========================================================
kind                   severity  what
=====================  ========  ==========================================================
user-kernel            error     user-accessible mappings of kernel addresses
memtype-conflict       error     one physical page mapped with different memory types
                                 (SDM Vol. 3A 12.12.4: aliasing types is undefined)
nx-without-nxe         error     XD set while EFER.NXE=0: a reserved bit, every access faults
reserved-bit           error     other reserved bits / PS where it is reserved
table-beyond-ram       error     a paging structure outside the RAM the memory map reports
table-unreadable       error     an entry points to a table that cannot be read
table-loop             error     an entry points back to an ancestor table
pdpte-reserved         warning   PAE PDPTE with R/W, U/S or other reserved bits: works under
                                 QEMU, #GP at MOV CR3 on a real CPU
w+x                    warning   writable and executable mappings (info in 32-bit paging)
page-beyond-ram        warning   cacheable (WB/WT/WP) pages entirely outside RAM
lower-half-mapped      warning   supervisor-only mappings below the kernel half (a leftover
                                 identity/UEFI map colliding with user space)
framebuffer-unmapped   warning   the framebuffer range given is not mapped at all
framebuffer-not-wc     warning   the framebuffer is mapped with a type other than WC (info
                                 when IA32_PAT could not be read and is only assumed)
wp-disabled            warning   CR0.WP=0: the kernel may write read-only pages
truncated              warning   the dump hit a cap; the checks saw part of the space
recursive-self-map     info      an entry maps its own table (legitimate; not descended)
pat-assumed            info      IA32_PAT could not be read; memory types assume the default
=====================  ========  ==========================================================

RAM comes from ``CheckOptions.ram`` (the memory map, a core's PT_LOADs, ``--ram-size``);
without it the RAM checks are skipped. The kernel half starts at ``kernel_base``; the default
is the canonical upper half in IA-32e modes and 0xC0000000 in 32-bit modes.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from kdiag.paging.config import PAT_DEFAULT
from kdiag.paging.dump import Dump, IssueKind, Segment
from kdiag.x86.pat import MemoryType
from kdiag.x86.pte import PagingMode


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


class AnomalyKind(StrEnum):
    USER_KERNEL = "user-kernel"
    MEMTYPE_CONFLICT = "memtype-conflict"
    NX_WITHOUT_NXE = "nx-without-nxe"
    RESERVED = "reserved-bit"
    PDPTE_RESERVED = "pdpte-reserved"
    TABLE_BEYOND_RAM = "table-beyond-ram"
    TABLE_UNREADABLE = "table-unreadable"
    LOOP = "table-loop"
    WX = "w+x"
    PAGE_BEYOND_RAM = "page-beyond-ram"
    LOWER_HALF = "lower-half-mapped"
    FRAMEBUFFER_UNMAPPED = "framebuffer-unmapped"
    FRAMEBUFFER_NOT_WC = "framebuffer-not-wc"
    WP_DISABLED = "wp-disabled"
    TRUNCATED = "truncated"
    RECURSIVE = "recursive-self-map"
    PAT_ASSUMED = "pat-assumed"


@dataclass(frozen=True)
class Region:
    """A range involved in an anomaly: linear (``va``, may be None) and/or physical."""

    va: int | None
    size: int
    pa: int | None = None
    note: str = ""


@dataclass(frozen=True)
class Anomaly:
    kind: AnomalyKind
    severity: Severity
    summary: str
    regions: tuple[Region, ...] = ()
    advice: str = ""
    total: int = 0  # regions found (``regions`` may hold only the first ``max_regions``)


@dataclass(frozen=True)
class CheckOptions:
    """Inputs the tables alone do not give. ``ram``: half-open physical RAM ranges."""

    ram: tuple[tuple[int, int], ...] | None = None
    framebuffer: tuple[int, int] | None = None  # (pa, size)
    framebuffer_auto: bool = False  # found in the memory map, not given: absence is no bug
    kernel_base: int | None = None
    lower_half: bool = True
    max_regions: int = 32

    def kernel_start(self, mode: PagingMode) -> int:
        if self.kernel_base is not None:
            return self.kernel_base
        if mode is PagingMode.LEVEL5:
            return 0xFF00000000000000
        if mode is PagingMode.LEVEL4:
            return 0xFFFF800000000000
        return 0xC0000000


def _in_ram(ram: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """True when ``[start, end)`` overlaps any RAM range."""
    return any(lo < end and start < hi for lo, hi in ram)


def _outside_ram(ram: Sequence[tuple[int, int]], seg: Segment,
                 fb: tuple[int, int] | None) -> list[tuple[int, int]]:
    """Whole pages of ``seg`` that lie entirely outside RAM (and outside the framebuffer)."""
    holes = [(seg.pa, seg.pa + seg.size)]
    cover: list[tuple[int, int]] = sorted(ram) + ([(fb[0], fb[0] + fb[1])] if fb else [])
    for lo, hi in cover:
        nxt = []
        for a, b in holes:
            if hi <= a or b <= lo:
                nxt.append((a, b))
                continue
            if a < lo:
                nxt.append((a, lo))
            if hi < b:
                nxt.append((hi, b))
        holes = nxt
    ps = seg.page_size
    out = []
    for a, b in holes:
        a2 = seg.pa + -(-(a - seg.pa) // ps) * ps
        b2 = seg.pa + ((b - seg.pa) // ps) * ps
        if b2 > a2:
            out.append((a2, b2))
    return out


def _clip(seg: Segment, pa: int, size: int) -> Region:
    """The part of ``seg`` that maps ``[pa, pa+size)``."""
    lo, hi = max(seg.pa, pa), min(seg.pa + seg.size, pa + size)
    return Region(seg.va + (lo - seg.pa), hi - lo, lo, seg.memtype.label if seg.memtype else "?")


def _mapping_regions(items: Iterable, limit: int) -> tuple[tuple[Region, ...], int]:
    out: list[Region] = []
    n = 0
    for m in items:
        n += 1
        if len(out) < limit:
            out.append(Region(m.va, m.size, m.pa, getattr(m, "rwx", "")))
    return tuple(out), n


def _union(segs: Sequence[Segment]) -> list[tuple[int, int]]:
    """The physical ranges ``segs`` cover, merged (``segs`` sorted by PA)."""
    out: list[tuple[int, int]] = []
    for s in segs:
        if out and s.pa <= out[-1][1]:
            if s.pa + s.size > out[-1][1]:
                out[-1] = (out[-1][0], s.pa + s.size)
        else:
            out.append((s.pa, s.pa + s.size))
    return out


def _covering(segs: Sequence[Segment], starts: Sequence[int], pa: int) -> Segment:
    """A segment of ``segs`` (sorted by PA, ``starts`` their PAs) that maps ``pa``."""
    k = bisect.bisect_right(starts, pa)
    for j in range(k - 1, -1, -1):  # the nearest start usually covers it; aliases may not
        if segs[j].pa + segs[j].size > pa:
            return segs[j]
    return segs[max(k - 1, 0)]  # pragma: no cover - pa comes from these segments' union


def _memtype_conflicts(segments: Sequence[Segment], limit: int) -> tuple[list[Region], int]:
    """Physical ranges mapped with two different memory types.

    Per memory type the PA ranges are merged into a union; the conflicts are the pairwise
    intersections of the unions: O(n log n) however many aliases share one frame (the
    pt-stress scenario maps 16 frames 16384 times each)."""
    by_type: dict[MemoryType, list[Segment]] = {}
    for s in segments:
        if s.memtype is not None:
            by_type.setdefault(s.memtype, []).append(s)
    if len(by_type) < 2:
        return [], 0
    for segs in by_type.values():
        segs.sort(key=lambda s: s.pa)
    unions = {t: _union(v) for t, v in by_type.items()}
    starts = {t: [s.pa for s in v] for t, v in by_type.items()}
    types = sorted(by_type, key=int)
    found: list[Region] = []
    n = 0
    for i, ta in enumerate(types):
        for tb in types[i + 1:]:
            ua, ub = unions[ta], unions[tb]
            ia = ib = 0
            while ia < len(ua) and ib < len(ub):
                lo = max(ua[ia][0], ub[ib][0])
                hi = min(ua[ia][1], ub[ib][1])
                if lo < hi:
                    n += 1
                    if len(found) < limit:
                        a = _covering(by_type[ta], starts[ta], lo)
                        b = _covering(by_type[tb], starts[tb], lo)
                        size = min(hi, a.pa + a.size) - lo
                        found.append(Region(a.va + (lo - a.pa), size, lo,
                                            f"{ta.label} here, {tb.label} at "
                                            f"{b.va + (lo - b.pa):#x}"))
                if ua[ia][1] <= ub[ib][1]:
                    ia += 1
                else:
                    ib += 1
    return found, n


def check(dump: Dump, options: CheckOptions | None = None) -> list[Anomaly]:
    """Run every check on ``dump`` (best made with ``collect_segments=True``)."""
    opt = options or CheckOptions()
    lim = opt.max_regions
    cfg = dump.config
    mode = cfg.mode
    out: list[Anomaly] = []
    maps = dump.mappings
    kbase = opt.kernel_start(mode)

    def add(kind: AnomalyKind, sev: Severity, summary: str, regions: Sequence[Region] = (),
            advice: str = "", total: int | None = None) -> None:
        out.append(Anomaly(kind, sev, summary, tuple(regions), advice,
                           len(regions) if total is None else total))

    # -- rights -------------------------------------------------------------------------------
    regs, n = _mapping_regions((m for m in maps if m.user and m.va + m.size > kbase), lim)
    if n:
        add(AnomalyKind.USER_KERNEL, Severity.ERROR,
            f"{n} user-accessible range(s) at kernel addresses (>= {kbase:#x})", regs,
            "clear U/S on the kernel's entries (at every level: U/S is ANDed, so one clear "
            "bit above is enough)", n)
    regs, n = _mapping_regions((m for m in maps if m.wx), lim)
    if n and mode is PagingMode.BITS32:
        add(AnomalyKind.WX, Severity.INFO,
            f"{n} writable range(s) are executable: 32-bit paging has no XD bit", regs,
            "W^X needs PAE or IA-32e paging with EFER.NXE", n)
    elif n:
        add(AnomalyKind.WX, Severity.WARNING, f"{n} writable and executable range(s)", regs,
            "map code read-only and data XD (W^X)" + (
                "" if cfg.params.nxe else "; XD needs EFER.NXE=1, which is off"), n)
    if mode is not PagingMode.NONE and not cfg.params.wp:
        add(AnomalyKind.WP_DISABLED, Severity.WARNING,
            "CR0.WP=0: supervisor writes ignore R/W, read-only protection is void for the kernel",
            advice="set CR0.WP (bit 16)")
    # -- bad entries ----------------------------------------------------------------------------
    by_kind: dict[IssueKind, list] = {}
    for iss in dump.issues:
        by_kind.setdefault(iss.kind, []).append(iss)

    def issue_regions(items: list) -> tuple[Region, ...]:
        return tuple(Region(i.va, i.span, i.points_to, i.detail) for i in items[:lim])

    if IssueKind.NX_RESERVED in by_kind:
        items = by_kind[IssueKind.NX_RESERVED]
        add(AnomalyKind.NX_WITHOUT_NXE, Severity.ERROR,
            f"{len(items)} entr(y/ies) with XD set while EFER.NXE=0 (reserved bit: any access "
            "through them raises #PF with RSVD=1)", issue_regions(items),
            "set EFER.NXE (bit 11) before loading these tables, or clear bit 63", len(items))
    rsvd = by_kind.get(IssueKind.RESERVED, []) + by_kind.get(IssueKind.PS_RESERVED, [])
    if rsvd:
        add(AnomalyKind.RESERVED, Severity.ERROR,
            f"{len(rsvd)} entr(y/ies) with reserved bits set (#PF with RSVD=1)",
            issue_regions(rsvd), "garbage in the table, or an address above MAXPHYADDR",
            len(rsvd))
    if IssueKind.SOFT_RESERVED in by_kind:
        items = by_kind[IssueKind.SOFT_RESERVED]
        add(AnomalyKind.PDPTE_RESERVED, Severity.WARNING,
            f"{len(items)} PAE PDPTE(s) set reserved bits (QEMU ignores them; real CPUs "
            "raise #GP when loading CR3)", issue_regions(items),
            "PAE PDPTEs take only P, PWT, PCD and the address: drop R/W, U/S, A, D, PS, G",
            len(items))
    if IssueKind.UNREADABLE in by_kind:
        items = by_kind[IssueKind.UNREADABLE]
        add(AnomalyKind.TABLE_UNREADABLE, Severity.ERROR,
            f"{len(items)} entr(y/ies) point to tables that cannot be read", issue_regions(items),
            "the pointer is garbage or beyond RAM", len(items))
    if IssueKind.LOOP in by_kind:
        items = by_kind[IssueKind.LOOP]
        add(AnomalyKind.LOOP, Severity.ERROR,
            f"{len(items)} entr(y/ies) point back to an ancestor table (a loop)",
            issue_regions(items), total=len(items))
    if IssueKind.RECURSIVE in by_kind:
        items = by_kind[IssueKind.RECURSIVE]
        add(AnomalyKind.RECURSIVE, Severity.INFO,
            f"{len(items)} recursive self-map entr(y/ies) (the tables map themselves)",
            issue_regions(items), total=len(items))
    # -- physical memory -----------------------------------------------------------------------
    segs = dump.segments or ()
    if segs:
        found, n = _memtype_conflicts(segs, lim)
        if n:
            add(AnomalyKind.MEMTYPE_CONFLICT, Severity.ERROR,
                f"{n} physical range(s) mapped with different memory types", found,
                "give every alias of a physical page the same PAT type (e.g. change the "
                "physmap's entries for the framebuffer to WC)", n)
    if opt.ram is not None:
        ram = opt.ram
        bad_tables = sorted(pa for pa in dump.tables if not _in_ram(ram, pa, pa + 1))
        if bad_tables:
            add(AnomalyKind.TABLE_BEYOND_RAM, Severity.ERROR,
                f"{len(bad_tables)} paging structure(s) outside RAM",
                [Region(None, 4096, pa, dump.tables[pa]) for pa in bad_tables[:lim]],
                total=len(bad_tables))
        fb = opt.framebuffer
        cacheable = (MemoryType.WB, MemoryType.WT, MemoryType.WP)
        beyond: list[Region] = []
        nbeyond = 0
        for sg in segs:
            if sg.memtype not in cacheable:
                continue
            for lo, hi in _outside_ram(ram, sg, fb):
                nbeyond += 1
                if len(beyond) < lim:
                    beyond.append(Region(sg.va + (lo - sg.pa), hi - lo, lo,
                                         sg.memtype.label if sg.memtype else ""))
        if nbeyond:
            add(AnomalyKind.PAGE_BEYOND_RAM, Severity.WARNING,
                f"{nbeyond} cacheable range(s) map physical memory outside RAM", beyond,
                "a frame number is wrong, or MMIO/holes are mapped WB (map device memory "
                "UC/WC, and only RAM cacheable)", nbeyond)
    # -- layout --------------------------------------------------------------------------------
    if opt.lower_half and mode is not PagingMode.NONE:
        low = [m for m in maps if not m.user and m.va < kbase]
        if mode in (PagingMode.LEVEL4, PagingMode.LEVEL5):
            low = [m for m in low if m.va < (1 << (cfg.params.va_bits - 1))]
        if low:
            regs = tuple(Region(m.va, m.size, m.pa,
                                "identity" if m.pa == m.va else m.rwx) for m in low[:lim])
            add(AnomalyKind.LOWER_HALF, Severity.WARNING,
                f"{len(low)} supervisor-only range(s) in the lower (user) half",
                regs, "remove the boot identity/UEFI map once the kernel runs in its own half",
                len(low))
    if opt.framebuffer is not None:
        fpa, fsize = opt.framebuffer
        fsegs = [s for s in segs if s.pa < fpa + fsize and fpa < s.pa + s.size]
        if not fsegs and not opt.framebuffer_auto:
            add(AnomalyKind.FRAMEBUFFER_UNMAPPED, Severity.WARNING,
                f"framebuffer {fpa:#x}+{fsize:#x} is not mapped",
                [Region(None, fsize, fpa)], "map it (WC) before drawing")
        elif fsegs:
            notwc = [s for s in fsegs if s.memtype is not MemoryType.WC]
            nwc = len(fsegs) - len(notwc)
            if notwc:
                extra = f" ({nwc} WC mapping(s) exist too)" if nwc else ""
                advice = "program a PAT entry as WC (e.g. PA4/PA1) and select it with PAT/PCD/PWT"
                if cfg.pat_source == PAT_DEFAULT:  # the types rest on an assumed PAT: no alarm
                    add(AnomalyKind.FRAMEBUFFER_NOT_WC, Severity.INFO,
                        f"framebuffer mapped {len(notwc)} time(s) with a type other than WC "
                        f"under the ASSUMED power-on IA32_PAT, which has no WC entry{extra}",
                        [_clip(s, fpa, fsize) for s in notwc[:lim]],
                        "if the kernel programs IA32_PAT, give its value (--pat) to check "
                        "for real; else " + advice, len(notwc))
                else:
                    add(AnomalyKind.FRAMEBUFFER_NOT_WC, Severity.WARNING,
                        f"framebuffer mapped {len(notwc)} time(s) with a type other than WC"
                        f"{extra}", [_clip(s, fpa, fsize) for s in notwc[:lim]], advice,
                        len(notwc))
    if dump.truncated:
        add(AnomalyKind.TRUNCATED, Severity.WARNING,
            f"dump truncated: {dump.truncated}; the checks saw only part of the address space")
    if cfg.pat_source == PAT_DEFAULT and mode is not PagingMode.NONE:
        add(AnomalyKind.PAT_ASSUMED, Severity.INFO,
            cfg.pat_note or "IA32_PAT not read; memory types assume the power-on default")
    out.sort(key=lambda a: _ORDER[a.severity])
    return out
