"""Segment descriptors and gates: the 8-byte and 16-byte entries of the GDT, LDT and IDT.

Four value types, because the hardware has four layouts (Intel SDM Vol. 3A):

- :class:`SegmentDescriptor`: 8 bytes. Code and data segments in every mode, and the legacy
  (non-IA-32e) system segments: 16/32-bit TSS and LDT (3.4.5, Figure 3-8; 7.2.2 for the TSS).
- :class:`LongSystemDescriptor`: 16 bytes. TSS and LDT descriptors in IA-32e mode (7.2.3,
  Figure 7-4): the 8-byte layout plus base bits 32-63 in the upper half.
- :class:`Gate`: 8 bytes. Legacy call gates (5.8.3, Figure 5-8), task gates and 16/32-bit
  interrupt and trap gates (6.11, Figure 6-2).
- :class:`Gate64`: 16 bytes. IA-32e interrupt and trap gates (6.14.1, Figure 6-8, with the IST
  field) and 64-bit call gates (5.8.3.1, Figure 5-9).

Layouts are the ``*_LAYOUT`` tables of :class:`kdiag.x86.bits.Field`. Every value keeps ``raw``
(an int: 64 bits, or 128 bits for the 16-byte types) and ``from_raw(x).raw == x``.
Type codes are SDM Table 3-2 ("System-Segment and Gate-Descriptor Types"):
:class:`SystemType` is its 32-bit-mode column, :class:`LongSystemType` its IA-32e column.

:func:`decode_gdt` and :func:`decode_idt` turn table bytes into entries; they are pure (the
caller reads the bytes; see ``kdiag.machine.tables``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from functools import lru_cache

from kdiag.x86.bits import Field, Layout, pack, unpack
from kdiag.x86.selector import Selector

DESCRIPTOR_LAYOUT: Layout = (
    Field("LIMIT_LO", 0, 15, "segment limit 15:00"),
    Field("BASE_LO", 16, 39, "base address 23:00"),
    Field("TYPE", 40, 43, "segment type"),
    Field("S", 44, 44, "descriptor type: 0 system, 1 code or data"),
    Field("DPL", 45, 46, "descriptor privilege level"),
    Field("P", 47, 47, "segment present"),
    Field("LIMIT_HI", 48, 51, "segment limit 19:16"),
    Field("AVL", 52, 52, "available for use by system software"),
    Field("L", 53, 53, "64-bit code segment (IA-32e mode only)"),
    Field("DB", 54, 54, "default operation size (0 = 16-bit, 1 = 32-bit)"),
    Field("G", 55, 55, "granularity (limit in 4 KiB units)"),
    Field("BASE_HI", 56, 63, "base address 31:24"),
)

LONG_SYSTEM_LAYOUT: Layout = (
    Field("LIMIT_LO", 0, 15, "segment limit 15:00"),
    Field("BASE_LO", 16, 39, "base address 23:00"),
    Field("TYPE", 40, 43, "system type (IA-32e column of Table 3-2)"),
    Field("S", 44, 44, "descriptor type: must be 0"),
    Field("DPL", 45, 46, "descriptor privilege level"),
    Field("P", 47, 47, "segment present"),
    Field("LIMIT_HI", 48, 51, "segment limit 19:16"),
    Field("AVL", 52, 52, "available for use by system software"),
    Field("G", 55, 55, "granularity"),
    Field("BASE_MID", 56, 63, "base address 31:24"),
    Field("BASE_UPPER", 64, 95, "base address 63:32"),
    Field("UPPER_TYPE", 104, 108, "must be zero"),
)

GATE_LAYOUT: Layout = (
    Field("OFFSET_LO", 0, 15, "entry point offset 15:00"),
    Field("SELECTOR", 16, 31, "segment selector of the destination code segment (TSS for task gates)"),
    Field("PARAM_COUNT", 32, 36, "call gates: number of stack parameters to copy"),
    Field("TYPE", 40, 43, "gate type"),
    Field("S", 44, 44, "must be 0"),
    Field("DPL", 45, 46, "descriptor privilege level"),
    Field("P", 47, 47, "present"),
    Field("OFFSET_HI", 48, 63, "entry point offset 31:16"),
)

GATE64_LAYOUT: Layout = (
    Field("OFFSET_LO", 0, 15, "entry point offset 15:00"),
    Field("SELECTOR", 16, 31, "segment selector of the destination code segment"),
    Field("IST", 32, 34, "interrupt stack table index (0 = none)"),
    Field("TYPE", 40, 43, "gate type"),
    Field("S", 44, 44, "must be 0"),
    Field("DPL", 45, 46, "descriptor privilege level"),
    Field("P", 47, 47, "present"),
    Field("OFFSET_MID", 48, 63, "entry point offset 31:16"),
    Field("OFFSET_HI", 64, 95, "entry point offset 63:32"),
    Field("UPPER_TYPE", 104, 108, "must be zero"),
)


class SystemType(IntEnum):
    """System descriptor types outside IA-32e mode (SDM Table 3-2, 32-bit mode column)."""

    RESERVED_0 = 0x0
    TSS16_AVAILABLE = 0x1
    LDT = 0x2
    TSS16_BUSY = 0x3
    CALL_GATE_16 = 0x4
    TASK_GATE = 0x5
    INTERRUPT_GATE_16 = 0x6
    TRAP_GATE_16 = 0x7
    RESERVED_8 = 0x8
    TSS32_AVAILABLE = 0x9
    RESERVED_A = 0xA
    TSS32_BUSY = 0xB
    CALL_GATE_32 = 0xC
    RESERVED_D = 0xD
    INTERRUPT_GATE_32 = 0xE
    TRAP_GATE_32 = 0xF


class LongSystemType(IntEnum):
    """System descriptor types in IA-32e mode (SDM Table 3-2, IA-32e mode column)."""

    UPPER_8_BYTES = 0x0  # "upper 8 bytes of a 16-byte descriptor"
    RESERVED_1 = 0x1
    LDT = 0x2
    RESERVED_3 = 0x3
    RESERVED_4 = 0x4
    RESERVED_5 = 0x5
    RESERVED_6 = 0x6
    RESERVED_7 = 0x7
    RESERVED_8 = 0x8
    TSS64_AVAILABLE = 0x9
    RESERVED_A = 0xA
    TSS64_BUSY = 0xB
    CALL_GATE_64 = 0xC
    RESERVED_D = 0xD
    INTERRUPT_GATE_64 = 0xE
    TRAP_GATE_64 = 0xF


_SYSTEM_TYPES = tuple(SystemType)  # index -> member, faster than calling the enum
_LONG_TYPES = tuple(LongSystemType)


class DescriptorKind(StrEnum):
    """What an entry is, in one word (the ``kind`` of ``kd gdt --json``)."""

    NULL = "null"
    CODE = "code"
    DATA = "data"
    TSS = "tss"
    LDT = "ldt"
    CALL_GATE = "call-gate"
    TASK_GATE = "task-gate"
    INTERRUPT_GATE = "interrupt-gate"
    TRAP_GATE = "trap-gate"
    RESERVED = "reserved"


_LEGACY_KIND = {
    SystemType.TSS16_AVAILABLE: DescriptorKind.TSS, SystemType.TSS16_BUSY: DescriptorKind.TSS,
    SystemType.TSS32_AVAILABLE: DescriptorKind.TSS, SystemType.TSS32_BUSY: DescriptorKind.TSS,
    SystemType.LDT: DescriptorKind.LDT,
    SystemType.CALL_GATE_16: DescriptorKind.CALL_GATE,
    SystemType.CALL_GATE_32: DescriptorKind.CALL_GATE,
    SystemType.TASK_GATE: DescriptorKind.TASK_GATE,
    SystemType.INTERRUPT_GATE_16: DescriptorKind.INTERRUPT_GATE,
    SystemType.INTERRUPT_GATE_32: DescriptorKind.INTERRUPT_GATE,
    SystemType.TRAP_GATE_16: DescriptorKind.TRAP_GATE,
    SystemType.TRAP_GATE_32: DescriptorKind.TRAP_GATE,
}
_LONG_KIND = {
    LongSystemType.LDT: DescriptorKind.LDT,
    LongSystemType.TSS64_AVAILABLE: DescriptorKind.TSS,
    LongSystemType.TSS64_BUSY: DescriptorKind.TSS,
    LongSystemType.CALL_GATE_64: DescriptorKind.CALL_GATE,
    LongSystemType.INTERRUPT_GATE_64: DescriptorKind.INTERRUPT_GATE,
    LongSystemType.TRAP_GATE_64: DescriptorKind.TRAP_GATE,
}
LEGACY_GATE_TYPES = frozenset({
    SystemType.CALL_GATE_16, SystemType.TASK_GATE, SystemType.INTERRUPT_GATE_16,
    SystemType.TRAP_GATE_16, SystemType.CALL_GATE_32, SystemType.INTERRUPT_GATE_32,
    SystemType.TRAP_GATE_32})
# In IA-32e mode these system descriptors occupy 16 bytes in the GDT/LDT (SDM 3.5, 7.2.3).
LONG_16_BYTE_TYPES = frozenset({LongSystemType.LDT, LongSystemType.TSS64_AVAILABLE,
                                LongSystemType.TSS64_BUSY, LongSystemType.CALL_GATE_64})


def _scaled_limit(limit_raw: int, granularity: bool) -> int:
    return (limit_raw << 12) | 0xFFF if granularity else limit_raw


@dataclass(frozen=True)
class SegmentDescriptor:
    """An 8-byte segment descriptor (SDM Vol. 3A 3.4.5, Figure 3-8).

    ``limit_raw`` is the 20-bit field; ``limit`` is the last valid byte offset after
    granularity scaling. ``type`` is the 4-bit type field: for code/data (``s``) its bits are
    Accessed(0), Writable/Readable(1), Expand-down/Conforming(2), Code(3) (Table 3-1); for system
    segments see :attr:`system_type`.
    """

    raw: int
    base: int
    limit_raw: int
    type: int
    s: bool
    dpl: int
    present: bool
    avl: bool
    long: bool
    db: bool
    granularity: bool

    @classmethod
    def from_raw(cls, raw: int) -> SegmentDescriptor:
        if not 0 <= raw < 1 << 64:
            raise ValueError(f"descriptor {raw:#x} is not 64 bits")
        f = unpack(raw, DESCRIPTOR_LAYOUT)
        return cls(raw=raw, base=f["BASE_LO"] | f["BASE_HI"] << 24,
                   limit_raw=f["LIMIT_LO"] | f["LIMIT_HI"] << 16, type=f["TYPE"], s=bool(f["S"]),
                   dpl=f["DPL"], present=bool(f["P"]), avl=bool(f["AVL"]), long=bool(f["L"]),
                   db=bool(f["DB"]), granularity=bool(f["G"]))

    @classmethod
    def from_bytes(cls, data: bytes) -> SegmentDescriptor:
        return cls.from_raw(struct.unpack_from("<Q", data)[0])

    @classmethod
    def make(cls, base: int = 0, limit: int = 0, type: int = 0, s: bool = True, dpl: int = 0,
             present: bool = True, avl: bool = False, long: bool = False, db: bool = False,
             granularity: bool = False) -> SegmentDescriptor:
        """Build a descriptor from field values (``limit`` is the raw 20-bit field)."""
        return cls.from_raw(pack({
            "LIMIT_LO": limit & 0xFFFF, "BASE_LO": base & 0xFFFFFF, "TYPE": type, "S": int(s),
            "DPL": dpl, "P": int(present), "LIMIT_HI": limit >> 16, "AVL": int(avl),
            "L": int(long), "DB": int(db), "G": int(granularity), "BASE_HI": base >> 24},
            DESCRIPTOR_LAYOUT))

    size = 8
    layout = DESCRIPTOR_LAYOUT

    @property
    def limit(self) -> int:
        return _scaled_limit(self.limit_raw, self.granularity)

    @property
    def is_code(self) -> bool:
        return self.s and bool(self.type & 0x8)

    @property
    def is_data(self) -> bool:
        return self.s and not self.type & 0x8

    @property
    def accessed(self) -> bool:
        return self.s and bool(self.type & 0x1)

    @property
    def readable(self) -> bool:
        """Code: the R bit. Data segments are always readable."""
        return self.is_data or (self.is_code and bool(self.type & 0x2))

    @property
    def writable(self) -> bool:
        return self.is_data and bool(self.type & 0x2)

    @property
    def conforming(self) -> bool:
        return self.is_code and bool(self.type & 0x4)

    @property
    def expand_down(self) -> bool:
        return self.is_data and bool(self.type & 0x4)

    @property
    def system_type(self) -> SystemType | None:
        return None if self.s else SystemType(self.type)

    @property
    def code_bits(self) -> int | None:
        """Code segments: 64 (L=1), 32 (D=1) or 16. None for anything else."""
        if not self.is_code:
            return None
        return 64 if self.long else 32 if self.db else 16

    @property
    def busy(self) -> bool:
        return self.system_type in (SystemType.TSS16_BUSY, SystemType.TSS32_BUSY)

    @property
    def kind(self) -> DescriptorKind:
        if self.raw == 0:
            return DescriptorKind.NULL
        if self.s:
            return DescriptorKind.CODE if self.type & 0x8 else DescriptorKind.DATA
        return _LEGACY_KIND.get(SystemType(self.type), DescriptorKind.RESERVED)

    @property
    def fields(self) -> dict[str, int]:
        return unpack(self.raw, DESCRIPTOR_LAYOUT)


@dataclass(frozen=True)
class LongSystemDescriptor:
    """A 16-byte IA-32e TSS or LDT descriptor (SDM Vol. 3A 7.2.3, Figure 7-4).

    ``raw`` is the 128-bit little-endian value (low qword first in memory).
    ``upper_valid`` is False when bits 104-108 (the type field of the upper half) are not zero,
    which the CPU checks (#GP when loading TR/LDTR).
    """

    raw: int
    base: int
    limit_raw: int
    type: LongSystemType
    dpl: int
    present: bool
    avl: bool
    granularity: bool

    @classmethod
    def from_raw(cls, raw: int) -> LongSystemDescriptor:
        if not 0 <= raw < 1 << 128:
            raise ValueError(f"descriptor {raw:#x} is not 128 bits")
        f = unpack(raw, LONG_SYSTEM_LAYOUT)
        base = f["BASE_LO"] | f["BASE_MID"] << 24 | f["BASE_UPPER"] << 32
        return cls(raw=raw, base=base, limit_raw=f["LIMIT_LO"] | f["LIMIT_HI"] << 16,
                   type=LongSystemType(f["TYPE"]), dpl=f["DPL"], present=bool(f["P"]),
                   avl=bool(f["AVL"]), granularity=bool(f["G"]))

    @classmethod
    def from_bytes(cls, data: bytes) -> LongSystemDescriptor:
        lo, hi = struct.unpack_from("<QQ", data)
        return cls.from_raw(lo | hi << 64)

    @classmethod
    def make(cls, base: int, limit: int, type: LongSystemType = LongSystemType.TSS64_AVAILABLE,
             dpl: int = 0, present: bool = True, granularity: bool = False) -> LongSystemDescriptor:
        return cls.from_raw(pack({
            "LIMIT_LO": limit & 0xFFFF, "BASE_LO": base & 0xFFFFFF, "TYPE": int(type), "S": 0,
            "DPL": dpl, "P": int(present), "LIMIT_HI": limit >> 16, "G": int(granularity),
            "BASE_MID": (base >> 24) & 0xFF, "BASE_UPPER": base >> 32}, LONG_SYSTEM_LAYOUT))

    size = 16
    layout = LONG_SYSTEM_LAYOUT
    s = False
    long = False

    @property
    def limit(self) -> int:
        return _scaled_limit(self.limit_raw, self.granularity)

    @property
    def low(self) -> int:
        return self.raw & (1 << 64) - 1

    @property
    def high(self) -> int:
        return self.raw >> 64

    @property
    def upper_valid(self) -> bool:
        return (self.raw >> 104) & 0x1F == 0

    @property
    def busy(self) -> bool:
        return self.type == LongSystemType.TSS64_BUSY

    @property
    def kind(self) -> DescriptorKind:
        return _LONG_KIND.get(self.type, DescriptorKind.RESERVED)

    @property
    def fields(self) -> dict[str, int]:
        return unpack(self.raw, LONG_SYSTEM_LAYOUT)


@dataclass(frozen=True)
class Gate:
    """An 8-byte legacy gate: call, task, 16/32-bit interrupt or trap (SDM 5.8.3, 6.11).

    For a task gate ``selector`` names a TSS and ``offset`` is unused.
    """

    raw: int
    offset: int
    selector: Selector
    param_count: int
    type: SystemType
    dpl: int
    present: bool

    @classmethod
    def from_raw(cls, raw: int) -> Gate:
        if not 0 <= raw < 1 << 64:
            raise ValueError(f"gate {raw:#x} is not 64 bits")
        f = unpack(raw, GATE_LAYOUT)
        return cls(raw=raw, offset=f["OFFSET_LO"] | f["OFFSET_HI"] << 16,
                   selector=Selector.from_raw(f["SELECTOR"]), param_count=f["PARAM_COUNT"],
                   type=_SYSTEM_TYPES[f["TYPE"]], dpl=f["DPL"], present=bool(f["P"]))

    @classmethod
    def from_bytes(cls, data: bytes) -> Gate:
        return cls.from_raw(struct.unpack_from("<Q", data)[0])

    @classmethod
    def make(cls, offset: int, selector: int, type: SystemType = SystemType.INTERRUPT_GATE_32,
             dpl: int = 0, present: bool = True, param_count: int = 0) -> Gate:
        return cls.from_raw(pack({
            "OFFSET_LO": offset & 0xFFFF, "SELECTOR": selector, "PARAM_COUNT": param_count,
            "TYPE": int(type), "S": 0, "DPL": dpl, "P": int(present),
            "OFFSET_HI": offset >> 16}, GATE_LAYOUT))

    size = 8
    layout = GATE_LAYOUT
    ist = 0
    s = False

    @property
    def kind(self) -> DescriptorKind:
        if self.raw == 0:
            return DescriptorKind.NULL
        return _LEGACY_KIND.get(self.type, DescriptorKind.RESERVED)

    @property
    def bits(self) -> int:
        """16 for 16-bit gates (types 4, 6, 7), else 32 (task gates count as 32)."""
        return 16 if self.type in (SystemType.CALL_GATE_16, SystemType.INTERRUPT_GATE_16,
                                   SystemType.TRAP_GATE_16) else 32

    @property
    def fields(self) -> dict[str, int]:
        return unpack(self.raw, GATE_LAYOUT)


@dataclass(frozen=True)
class Gate64:
    """A 16-byte IA-32e gate: interrupt, trap (SDM 6.14.1, Figure 6-8) or call (5.8.3.1).

    ``ist`` is the Interrupt Stack Table index (1-7; 0 = use the normal stack switch);
    call gates have no IST (bits 32-39 are reserved there).
    """

    raw: int
    offset: int
    selector: Selector
    ist: int
    type: LongSystemType
    dpl: int
    present: bool

    @classmethod
    def from_raw(cls, raw: int) -> Gate64:
        if not 0 <= raw < 1 << 128:
            raise ValueError(f"gate {raw:#x} is not 128 bits")
        f = unpack(raw, GATE64_LAYOUT)
        return cls(raw=raw, offset=f["OFFSET_LO"] | f["OFFSET_MID"] << 16 | f["OFFSET_HI"] << 32,
                   selector=Selector.from_raw(f["SELECTOR"]), ist=f["IST"],
                   type=_LONG_TYPES[f["TYPE"]], dpl=f["DPL"], present=bool(f["P"]))

    @classmethod
    def from_bytes(cls, data: bytes) -> Gate64:
        lo, hi = struct.unpack_from("<QQ", data)
        return cls.from_raw(lo | hi << 64)

    @classmethod
    def make(cls, offset: int, selector: int,
             type: LongSystemType = LongSystemType.INTERRUPT_GATE_64, dpl: int = 0,
             present: bool = True, ist: int = 0) -> Gate64:
        return cls.from_raw(pack({
            "OFFSET_LO": offset & 0xFFFF, "SELECTOR": selector, "IST": ist, "TYPE": int(type),
            "S": 0, "DPL": dpl, "P": int(present), "OFFSET_MID": (offset >> 16) & 0xFFFF,
            "OFFSET_HI": offset >> 32}, GATE64_LAYOUT))

    size = 16
    layout = GATE64_LAYOUT
    s = False
    bits = 64

    @property
    def kind(self) -> DescriptorKind:
        if self.raw == 0:
            return DescriptorKind.NULL
        return _LONG_KIND.get(self.type, DescriptorKind.RESERVED)

    @property
    def upper_valid(self) -> bool:
        return (self.raw >> 104) & 0x1F == 0

    @property
    def fields(self) -> dict[str, int]:
        return unpack(self.raw, GATE64_LAYOUT)


Descriptor = SegmentDescriptor | LongSystemDescriptor | Gate | Gate64


def decode_descriptor(data: bytes, long_mode: bool) -> Descriptor:
    """Decode the descriptor at the start of ``data`` (8 bytes, or 16 for IA-32e system ones).

    In IA-32e mode an LDT, TSS or call-gate descriptor is 16 bytes; if ``data`` holds only 8,
    the upper half reads as zero (see :func:`decode_gdt` for how truncation is reported). Other
    system types (reserved in a GDT in IA-32e mode) decode as 8-byte :class:`SegmentDescriptor`.
    """
    if len(data) < 8:
        raise ValueError(f"a descriptor needs 8 bytes, got {len(data)}")
    lo = struct.unpack_from("<Q", data)[0]
    s = bool(lo >> 44 & 1)
    typ = lo >> 40 & 0xF
    if not s and long_mode and lo != 0:
        ltype = LongSystemType(typ)
        if ltype in LONG_16_BYTE_TYPES:
            hi = struct.unpack_from("<Q", data, 8)[0] if len(data) >= 16 else 0
            raw = lo | hi << 64
            if ltype in (LongSystemType.LDT, LongSystemType.TSS64_AVAILABLE,
                         LongSystemType.TSS64_BUSY):
                return LongSystemDescriptor.from_raw(raw)
            return Gate64.from_raw(raw)
    if not s and lo != 0 and SystemType(typ) in LEGACY_GATE_TYPES and not long_mode:
        return Gate.from_raw(lo)
    return SegmentDescriptor.from_raw(lo)


@dataclass(frozen=True)
class GdtEntry:
    """One descriptor of a GDT/LDT at byte offset ``selector`` (the selector with RPL=0, TI=0).

    ``truncated``: a 16-byte descriptor whose upper half lies beyond the table limit.
    """

    selector: int
    descriptor: Descriptor
    truncated: bool = False

    @property
    def index(self) -> int:
        return self.selector >> 3

    @property
    def size(self) -> int:
        return self.descriptor.size


def decode_gdt(data: bytes, long_mode: bool) -> list[GdtEntry]:
    """Decode a GDT or LDT image (``limit + 1`` bytes from its base).

    In IA-32e mode (``long_mode``) a system descriptor that is 16 bytes wide consumes the next
    slot too; that slot is not listed. A trailing partial slot (limit not 8k-1) is ignored.
    """
    out: list[GdtEntry] = []
    off = 0
    n = len(data)
    while off + 8 <= n:
        desc = decode_descriptor(data[off:off + 16], long_mode)
        truncated = desc.size == 16 and off + 16 > n
        out.append(GdtEntry(off, desc, truncated))
        off += 8 if truncated else desc.size
    return out


@dataclass(frozen=True)
class IdtEntry:
    """Gate number ``vector`` of an IDT."""

    vector: int
    gate: Gate | Gate64


@lru_cache(maxsize=4096)
def _gate64(raw: int) -> Gate64:
    return Gate64.from_raw(raw)


@lru_cache(maxsize=4096)
def _gate(raw: int) -> Gate:
    return Gate.from_raw(raw)


def decode_idt(data: bytes, long_mode: bool) -> list[IdtEntry]:
    """Decode an IDT image: 16-byte gates in IA-32e mode (SDM 6.14.1), else 8-byte (6.11).

    Every slot is decoded as a gate whatever its type bits; checks judge the types. Gates are
    immutable values, so each distinct raw value is decoded once per process (an IDT re-read
    at every stop is mostly unchanged).
    """
    size = 16 if long_mode else 8
    n = min(256, len(data) // size)
    if long_mode:
        q = struct.unpack_from(f"<{2 * n}Q", data)
        return [IdtEntry(v, _gate64(q[2 * v] | q[2 * v + 1] << 64)) for v in range(n)]
    q = struct.unpack_from(f"<{n}Q", data)
    return [IdtEntry(v, _gate(q[v])) for v in range(n)]
