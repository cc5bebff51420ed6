"""Bit layouts declared once, as tables, and the one helper that applies them.

Every x86 structure kdiag decodes (descriptors, gates, control registers, MSRs) declares its
layout as a tuple of :class:`Field` (name, lowest bit, highest bit, inclusive, as the Intel SDM
figures draw them). :func:`unpack` reads all fields of a raw integer, :func:`pack` builds one, and
:func:`bit_view` gives the verbose bit-by-bit view the renderers print (``kd gdt -v``).

Byte-addressed layouts (the TSS) use :class:`ByteField` (name, byte offset, size) the same way.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """Bits ``lo``..``hi`` (inclusive) of a raw value, named as the SDM names them."""

    name: str
    lo: int
    hi: int
    doc: str = ""

    def __post_init__(self) -> None:
        if self.lo < 0 or self.hi < self.lo:
            raise ValueError(f"bad field {self.name}: bits {self.lo}..{self.hi}")
        object.__setattr__(self, "_ones", (1 << (self.hi - self.lo + 1)) - 1)

    @property
    def width(self) -> int:
        return self.hi - self.lo + 1

    @property
    def mask(self) -> int:
        """The field's bits in place (not shifted down)."""
        return self._ones << self.lo  # type: ignore[attr-defined, no-any-return]

    def get(self, raw: int) -> int:
        return (raw >> self.lo) & self._ones  # type: ignore[attr-defined, no-any-return]

    def put(self, value: int) -> int:
        """``value`` shifted into place; raises ValueError if it does not fit."""
        if value < 0 or value >> self.width:
            raise ValueError(f"{self.name}={value:#x} does not fit in {self.width} bits")
        return value << self.lo

    @property
    def bits(self) -> str:
        """``"47"`` or ``"40-43"``: the SDM's way of naming the field's position."""
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"


Layout = tuple[Field, ...]


def unpack(raw: int, layout: Iterable[Field]) -> dict[str, int]:
    """Every field of ``layout`` read from ``raw`` (field name -> value)."""
    return {f.name: (raw >> f.lo) & f._ones for f in layout}  # type: ignore[attr-defined]


def pack(values: Mapping[str, int], layout: Iterable[Field]) -> int:
    """Build a raw value from field values; fields not named are zero."""
    raw = 0
    known = set()
    for f in layout:
        known.add(f.name)
        if f.name in values:
            raw |= f.put(values[f.name])
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    return raw


def defined_mask(layout: Iterable[Field]) -> int:
    """All bits some field of ``layout`` covers; the rest are reserved."""
    m = 0
    for f in layout:
        m |= f.mask
    return m


@dataclass(frozen=True)
class BitRow:
    """One line of the verbose view: a field, its value, and its bits as a binary string."""

    field: Field
    value: int

    @property
    def binary(self) -> str:
        return format(self.value, f"0{self.field.width}b")


def bit_view(raw: int, layout: Iterable[Field]) -> list[BitRow]:
    """The fields of ``raw`` from the highest bit down (how the SDM figures read)."""
    return [BitRow(f, f.get(raw)) for f in sorted(layout, key=lambda f: -f.lo)]


@dataclass(frozen=True)
class ByteField:
    """A little-endian integer of ``size`` bytes at byte ``offset`` of a structure."""

    name: str
    offset: int
    size: int
    doc: str = ""

    _FORMATS = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}

    def get(self, data: bytes) -> int:
        return int(struct.unpack_from(self._FORMATS[self.size], data, self.offset)[0])

    def put(self, buf: bytearray, value: int) -> None:
        struct.pack_into(self._FORMATS[self.size], buf, self.offset, value)


ByteLayout = tuple[ByteField, ...]


def unpack_bytes(data: bytes, layout: Iterable[ByteField]) -> dict[str, int]:
    """Every field of ``layout`` read from ``data`` (which must be long enough)."""
    return {f.name: f.get(data) for f in layout}


def sign_extend(value: int, bits: int) -> int:
    """Sign-extend the low ``bits`` of ``value`` to 64 bits (result is unsigned)."""
    value &= (1 << bits) - 1
    if value >> (bits - 1):
        value |= ((1 << 64) - 1) ^ ((1 << bits) - 1)
    return value


def is_canonical(va: int, va_bits: int = 48) -> bool:
    """Intel SDM Vol. 1 3.3.7.1: bits 63..va_bits-1 all equal (48 bits, or 57 with LA57)."""
    top = va >> (va_bits - 1)
    return top == 0 or top == (1 << (64 - va_bits + 1)) - 1
