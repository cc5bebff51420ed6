"""Paging-structure entries for every x86 paging mode, decoded from raw ints.

Intel SDM Vol. 3A chapter 4 ("Paging"):

- 4.3  32-bit paging: two levels (PD, PT) of 1024 four-byte entries; with CR4.PSE a PDE with
  PS=1 maps a 4 MiB page (PSE-36: PDE bits 20:13 hold physical address bits 39:32, bit 21 is
  reserved). Without CR4.PSE the PS bit is ignored. No execute-disable.
- 4.4  PAE paging: a 4-entry PDPT (CR3 bits 31:5), then PD and PT of 512 eight-byte entries;
  a PDE with PS=1 maps 2 MiB. PDPTEs have no R/W, U/S or XD bits (Table 4-8); QEMU ignores
  their reserved bits 1, 2 and 5-8 (and sets A itself), see ``LevelMasks.soft_rsvd``.
- 4.5  4-level and 5-level paging (CR4.LA57): PML5 (5-level only), PML4, PDPT, PD, PT; 1 GiB
  pages at the PDPT (PS=1), 2 MiB at the PD. PS is reserved in PML4Es and PML5Es.

Bit 63 (XD) is reserved unless EFER.NXE=1 (PAE and IA-32e paging). Address bits at or above
MAXPHYADDR are reserved. A present entry with a reserved bit set stops the walk (#PF with
error code bit RSVD); that outcome is a value here (``PageEntry.reserved``), never an exception.

The PAT bit is bit 7 of a 4 KiB PTE and bit 12 of an entry that maps a large page (4.9.2).

Everything here is pure: ints in, frozen values out. ``LevelMasks`` precomputes the masks the
walker and the dumper apply in their inner loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag, StrEnum
from functools import cache, lru_cache

from kdiag.x86.pat import pat_index

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

PAGE_4K = 4 * KIB
PAGE_2M = 2 * MIB
PAGE_4M = 4 * MIB
PAGE_1G = GIB


class PagingMode(StrEnum):
    """The paging mode in force (SDM Vol. 3A 4.1.1, Table 4-1)."""

    NONE = "none"  # CR0.PG=0: linear == physical
    BITS32 = "32-bit"  # CR4.PAE=0
    PAE = "pae"  # CR4.PAE=1, EFER.LMA=0
    LEVEL4 = "4-level"  # EFER.LMA=1, CR4.LA57=0
    LEVEL5 = "5-level"  # EFER.LMA=1, CR4.LA57=1

    @property
    def va_bits(self) -> int:
        """Width of a linear address in this mode (32, 48 or 57; 64 with paging off)."""
        return {"none": 64, "32-bit": 32, "pae": 32, "4-level": 48, "5-level": 57}[self.value]

    @property
    def entry_size(self) -> int:
        return 4 if self is PagingMode.BITS32 else 8


class PteFlag(IntFlag):
    """Bits of a paging-structure entry, named as the SDM names them."""

    P = 1 << 0  # present
    RW = 1 << 1  # read/write
    US = 1 << 2  # user/supervisor
    PWT = 1 << 3  # page-level write-through
    PCD = 1 << 4  # page-level cache disable
    A = 1 << 5  # accessed
    D = 1 << 6  # dirty (leaf entries only)
    PS = 1 << 7  # page size (non-PT levels); PAT in a 4 KiB PTE
    G = 1 << 8  # global (leaf entries only)
    PAT_LARGE = 1 << 12  # PAT bit of an entry that maps a 2 MiB/4 MiB/1 GiB page
    XD = 1 << 63  # execute-disable (EFER.NXE=1 only)


PTE_PAT = PteFlag.PS  # the same bit, bit 7, in a PTE


@dataclass(frozen=True)
class Level:
    """One level of a paging hierarchy.

    ``shift`` is the lowest linear-address bit this level's index selects, ``bits`` the index
    width, ``page_size`` the size mapped by a PS=1 entry here (None: PS is reserved/ignored at
    this level, or this is the PT, whose entries always map 4 KiB pages).
    ``access_bits`` is False for the PAE PDPT, whose entries carry no R/W, U/S or XD.
    """

    name: str
    depth: int  # 0 = the table CR3 points to
    shift: int
    bits: int
    entry_size: int
    page_size: int | None
    last: bool
    access_bits: bool = True

    @property
    def entries(self) -> int:
        return 1 << self.bits

    @property
    def span(self) -> int:
        """Linear-address span covered by one entry of this level."""
        return 1 << self.shift

    @property
    def table_size(self) -> int:
        return self.entries * self.entry_size

    def index(self, va: int) -> int:
        return (va >> self.shift) & (self.entries - 1)


@dataclass(frozen=True)
class PagingParams:
    """Everything besides CR3 that changes how entries decode.

    ``maxphyaddr`` (CPUID 0x80000008 EAX[7:0]) decides which high address bits are reserved;
    the default 52 flags only bits that are reserved on every CPU. ``gbpages`` is CPUID
    0x80000001 EDX[26] (1 GiB pages). ``pse`` only matters for 32-bit paging.
    """

    mode: PagingMode
    pse: bool = False
    nxe: bool = False
    wp: bool = True
    pke: bool = False
    smep: bool = False
    smap: bool = False
    maxphyaddr: int = 52
    gbpages: bool = True

    @classmethod
    def from_registers(cls, cr0: int, cr4: int, efer: int, *, maxphyaddr: int = 52,
                       gbpages: bool = True) -> PagingParams:
        """Derive the mode (SDM Vol. 3A Table 4-1) from CR0.PG, CR4.PAE/PSE/LA57, EFER.LMA."""
        return cls(mode=mode_from_registers(cr0, cr4, efer),
                   pse=bool(cr4 & CR4_PSE), nxe=bool(efer & EFER_NXE), wp=bool(cr0 & CR0_WP),
                   pke=bool(cr4 & CR4_PKE), smep=bool(cr4 & CR4_SMEP), smap=bool(cr4 & CR4_SMAP),
                   maxphyaddr=maxphyaddr, gbpages=gbpages)

    @property
    def levels(self) -> tuple[Level, ...]:
        return paging_levels(self.mode, self.pse)

    @property
    def masks(self) -> tuple[LevelMasks, ...]:
        return level_masks(self)

    @property
    def va_bits(self) -> int:
        return self.mode.va_bits

    @property
    def has_nx(self) -> bool:
        """True when XD bits are meaningful (PAE or IA-32e paging with EFER.NXE=1)."""
        return self.nxe and self.mode in (PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5)


CR0_PE = 1 << 0
CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12
CR4_SMEP = 1 << 20
CR4_SMAP = 1 << 21
CR4_PKE = 1 << 22
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11


def mode_from_registers(cr0: int, cr4: int, efer: int) -> PagingMode:
    """SDM Vol. 3A Table 4-1: PG=0 none; PAE=0 32-bit; LMA=0 PAE; LA57 picks 4/5-level."""
    if not (cr0 & CR0_PG and cr0 & CR0_PE):
        return PagingMode.NONE
    if not cr4 & CR4_PAE:
        return PagingMode.BITS32
    if not efer & EFER_LMA:
        return PagingMode.PAE
    return PagingMode.LEVEL5 if cr4 & CR4_LA57 else PagingMode.LEVEL4


@cache
def paging_levels(mode: PagingMode, pse: bool = False) -> tuple[Level, ...]:
    """The levels of ``mode``, top (CR3) first."""
    if mode is PagingMode.BITS32:
        return (Level("PD", 0, 22, 10, 4, PAGE_4M if pse else None, False),
                Level("PT", 1, 12, 10, 4, None, True))
    if mode is PagingMode.PAE:
        return (Level("PDPT", 0, 30, 2, 8, None, False, access_bits=False),
                Level("PD", 1, 21, 9, 8, PAGE_2M, False),
                Level("PT", 2, 12, 9, 8, None, True))
    if mode in (PagingMode.LEVEL4, PagingMode.LEVEL5):
        names: list[tuple[str, int, int | None]] = (
            [("PML5", 48, None)] if mode is PagingMode.LEVEL5 else [])
        names += [("PML4", 39, None), ("PDPT", 30, PAGE_1G), ("PD", 21, PAGE_2M),
                  ("PT", 12, None)]
        return tuple(Level(n, d, s, 9, 8, ps, n == "PT") for d, (n, s, ps) in enumerate(names))
    return ()


def _bits(lo: int, hi: int) -> int:
    """Mask of bits lo..hi inclusive (empty when hi < lo)."""
    if hi < lo:
        return 0
    return ((1 << (hi - lo + 1)) - 1) << lo


@dataclass(frozen=True)
class LevelMasks:
    """Precomputed masks for one level under one ``PagingParams``.

    ``rsvd_table``/``rsvd_leaf``: reserved bits of a present entry that references a table /
    maps a page (a large page above the PT). ``addr_table``/``addr_leaf``: the address bits.
    ``leaf_ps``: True when a PS=1 entry here maps a page. ``pat_bit``: the PAT bit of a leaf.
    ``soft_rsvd``: bits the SDM reserves that QEMU's TCG walker ignores -- PAE PDPTE bits 1, 2
    and 6-8. A real CPU raises #GP when MOV CR3 loads such a PDPTE; under QEMU the tables
    work. The walk goes on (as under QEMU) and the entry is flagged. Bit 5 (A) is not even
    flagged: QEMU sets it in PDPTEs itself.
    """

    level: Level
    rsvd_table: int
    rsvd_leaf: int
    addr_table: int
    addr_leaf: int
    leaf_ps: bool
    pat_bit: int
    page_size: int  # size of a leaf at this level (PT: 4 KiB); 0 when there are no leaves here
    soft_rsvd: int = 0  # reserved by the SDM, ignored by QEMU's walker (PAE PDPTE bits 1,2,6-8)


@lru_cache(maxsize=64)
def level_masks(params: PagingParams) -> tuple[LevelMasks, ...]:
    """Reserved and address masks per level (SDM Vol. 3A Tables 4-4..4-6, 4-8..4-11, 4-14..4-20)."""
    mode = params.mode
    m = max(32, min(params.maxphyaddr, 52))
    out = []
    for lv in paging_levels(mode, params.pse):
        if mode is PagingMode.BITS32:
            if lv.last:
                out.append(LevelMasks(lv, 0, 0, 0xFFFFF000, 0xFFFFF000, False, 7, PAGE_4K))
            elif params.pse:
                # PSE-36: bits 20:13 are PA bits 39:32; bit 21 reserved; bits beyond MAXPHYADDR too.
                hi_ok = max(0, min(m, 40) - 32)
                rsvd = (1 << 21) | _bits(13 + hi_ok, 20)
                addr = 0xFFC00000 | _bits(13, 12 + hi_ok)
                out.append(LevelMasks(lv, 0, rsvd, 0xFFFFF000, addr, True, 12, PAGE_4M))
            else:
                out.append(LevelMasks(lv, 0, 0, 0xFFFFF000, 0xFFFFF000, False, 12, 0))
            continue
        xd = 0 if params.nxe else (1 << 63)
        if mode is PagingMode.PAE:
            high = _bits(m, 62)  # PAE: bits 62:M are reserved (Tables 4-8..4-11)
            addr = _bits(12, m - 1)
            if lv.depth == 0:  # PDPTE: bits 2:1, 8:5 and 63:M reserved (see soft_rsvd)
                rsvd = high | (1 << 63)
                soft = _bits(1, 2) | _bits(6, 8)
                out.append(LevelMasks(lv, rsvd, rsvd, addr, addr, False, 12, 0, soft))
            elif lv.last:
                out.append(LevelMasks(lv, high | xd, high | xd, addr, addr, False, 7, PAGE_4K))
            else:  # PD: 2 MiB pages, bits 20:13 reserved
                laddr = addr & ~(PAGE_2M - 1)
                out.append(LevelMasks(lv, high | xd, high | xd | _bits(13, 20), addr, laddr,
                                      True, 12, PAGE_2M))
            continue
        high = _bits(m, 51)  # IA-32e: bits 51:M reserved; 62:52 ignored (59:62 keys if PKE)
        addr = _bits(12, m - 1)
        if lv.last:
            out.append(LevelMasks(lv, high | xd, high | xd, addr, addr, False, 7, PAGE_4K))
        elif lv.page_size is None:  # PML5E / PML4E: PS reserved
            rsvd = high | xd | PteFlag.PS
            out.append(LevelMasks(lv, rsvd, rsvd, addr, addr, False, 12, 0))
        elif lv.page_size == PAGE_1G and not params.gbpages:
            rsvd = high | xd
            out.append(LevelMasks(lv, rsvd, rsvd | PteFlag.PS, addr, addr, False, 12, 0))
        else:
            size = lv.page_size
            lrsvd = high | xd | _bits(13, size.bit_length() - 2)
            out.append(LevelMasks(lv, high | xd, lrsvd, addr, addr & ~(size - 1), True, 12, size))
    return tuple(out)


class EntryKind(StrEnum):
    """What a paging-structure entry does."""

    NOT_PRESENT = "not-present"
    TABLE = "table"  # references the next paging structure
    PAGE = "page"  # maps a page (4 KiB at the PT, large above it)


@dataclass(frozen=True)
class PageEntry:
    """One decoded paging-structure entry.

    ``addr`` is the next table's physical address (TABLE) or the page frame (PAGE); 0 when not
    present. ``reserved`` is the mask of reserved bits that are set: non-zero means the CPU
    would stop here with a reserved-bit #PF (the entry's kind still says what it would be).
    """

    raw: int
    level: Level
    kind: EntryKind
    addr: int
    reserved: int
    nxe: bool
    soft_reserved: int = 0  # see LevelMasks.soft_rsvd

    @property
    def present(self) -> bool:
        return bool(self.raw & PteFlag.P)

    @property
    def writable(self) -> bool:
        return bool(self.raw & PteFlag.RW)

    @property
    def user(self) -> bool:
        return bool(self.raw & PteFlag.US)

    @property
    def pwt(self) -> bool:
        return bool(self.raw & PteFlag.PWT)

    @property
    def pcd(self) -> bool:
        return bool(self.raw & PteFlag.PCD)

    @property
    def accessed(self) -> bool:
        return bool(self.raw & PteFlag.A)

    @property
    def dirty(self) -> bool:
        return self.kind is EntryKind.PAGE and bool(self.raw & PteFlag.D)

    @property
    def ps(self) -> bool:
        """The raw bit 7 above the PT (page size); in a PTE bit 7 is PAT, so this is False."""
        return not self.level.last and bool(self.raw & PteFlag.PS)

    @property
    def global_(self) -> bool:
        return self.kind is EntryKind.PAGE and bool(self.raw & PteFlag.G)

    @property
    def pat(self) -> bool:
        """The PAT bit of a leaf: bit 7 in a PTE, bit 12 in a large-page entry."""
        if self.kind is not EntryKind.PAGE:
            return False
        return bool(self.raw & (PTE_PAT if self.level.last else PteFlag.PAT_LARGE))

    @property
    def nx(self) -> bool:
        """XD as the raw bit 63 (only 8-byte entries have it; only meaningful with NXE)."""
        return self.level.entry_size == 8 and bool(self.raw >> 63 & 1)

    @property
    def pkey(self) -> int:
        """Protection key (bits 62:59) of an IA-32e leaf; meaningful only with CR4.PKE."""
        return (self.raw >> 59) & 0xF if self.level.entry_size == 8 else 0

    @property
    def page_size(self) -> int:
        """Size of the page this entry maps (0 unless ``kind`` is PAGE)."""
        if self.kind is not EntryKind.PAGE:
            return 0
        return self.level.page_size or PAGE_4K

    @property
    def pat_index(self) -> int:
        return pat_index(self.pat, self.pcd, self.pwt)

    @property
    def nx_reserved(self) -> bool:
        """XD is set but EFER.NXE=0: a reserved-bit violation of its own kind."""
        return self.nx and not self.nxe and bool(self.reserved >> 63 & 1)

    @property
    def ps_reserved(self) -> bool:
        """PS=1 where the level does not allow it (PML4E, PML5E, PDPTE without 1 GiB pages)."""
        return bool(self.reserved & PteFlag.PS) and not self.level.last


def decode_entry(raw: int, params: PagingParams, depth: int) -> PageEntry:
    """Decode ``raw`` as an entry of level ``depth`` (0 = the CR3 table) under ``params``."""
    mk = level_masks(params)[depth]
    return decode_with_masks(raw, mk, params.nxe)


def decode_with_masks(raw: int, mk: LevelMasks, nxe: bool) -> PageEntry:
    """``decode_entry`` with precomputed masks (the walker's fast path)."""
    lv = mk.level
    if not raw & 1:
        return PageEntry(raw, lv, EntryKind.NOT_PRESENT, 0, 0, nxe)
    if lv.last:
        return PageEntry(raw, lv, EntryKind.PAGE, raw & mk.addr_leaf, raw & mk.rsvd_leaf, nxe)
    if raw & PteFlag.PS:
        if mk.leaf_ps:
            addr = raw & mk.addr_leaf
            if lv.entry_size == 4:  # PSE-36: PDE bits 20:13 -> PA bits 39:32
                addr = (raw & 0xFFC00000) | (((raw & mk.addr_leaf) >> 13 & 0xFF) << 32)
            return PageEntry(raw, lv, EntryKind.PAGE, addr, raw & mk.rsvd_leaf, nxe)
        return PageEntry(raw, lv, EntryKind.TABLE, raw & mk.addr_table, raw & mk.rsvd_leaf, nxe,
                         raw & mk.soft_rsvd)
    return PageEntry(raw, lv, EntryKind.TABLE, raw & mk.addr_table, raw & mk.rsvd_table, nxe,
                     raw & mk.soft_rsvd)


def pse36_address(raw: int) -> int:
    """Physical address of a 4 MiB page mapped by a 32-bit PDE (PSE-36 layout)."""
    return (raw & 0xFFC00000) | (((raw >> 13) & 0xFF) << 32)


def is_canonical(va: int, va_bits: int) -> bool:
    """True when bits 63:va_bits-1 all equal bit va_bits-1 (SDM Vol. 1 3.3.7.1)."""
    if va_bits >= 64:
        return 0 <= va < (1 << 64)
    top = va >> (va_bits - 1)
    return top == 0 or top == (1 << (65 - va_bits)) - 1


def canonical(va: int, va_bits: int) -> int:
    """Sign-extend a ``va_bits``-wide linear address to 64 bits."""
    if va_bits >= 64 or va_bits == 32:
        return va
    va &= (1 << va_bits) - 1
    if va >> (va_bits - 1):
        va |= ((1 << 64) - 1) ^ ((1 << va_bits) - 1)
    return va


@dataclass(frozen=True)
class Field:
    """A named bit field ``lo..hi`` (inclusive) of an entry, for bit-by-bit views."""

    name: str
    lo: int
    hi: int

    def get(self, raw: int) -> int:
        return (raw >> self.lo) & ((1 << (self.hi - self.lo + 1)) - 1)


def entry_fields(entry: PageEntry) -> tuple[Field, ...]:
    """The entry's one-bit flags in Bochs' order (XD first, P last) for its level and kind.

    Names follow Bochs' ``page`` output: ``XD PS G PAT D A PCD PWT US RW P``.
    """
    lv = entry.level
    out: list[Field] = []
    if lv.entry_size == 8 and lv.access_bits:
        out.append(Field("XD", 63, 63))
    if entry.kind is EntryKind.PAGE:
        if not lv.last:
            out.append(Field("PS", 7, 7))
        out.append(Field("G", 8, 8))
        out.append(Field("PAT", 7, 7) if lv.last else Field("PAT", 12, 12))
        out.append(Field("D", 6, 6))
    elif not lv.last and lv.access_bits:
        out.append(Field("PS", 7, 7))
    if lv.access_bits:
        out.append(Field("A", 5, 5))
    out += [Field("PCD", 4, 4), Field("PWT", 3, 3)]
    if lv.access_bits:
        out += [Field("US", 2, 2), Field("RW", 1, 1)]
    out.append(Field("P", 0, 0))
    return tuple(out)
