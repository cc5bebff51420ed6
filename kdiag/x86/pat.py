"""IA32_PAT (MSR 0x277) and the memory type of a page from its PAT/PCD/PWT bits.

Intel SDM Vol. 3A 12.12 "Page Attribute Table (PAT)": the MSR holds eight one-byte entries
PA0..PA7, each a memory-type encoding in its low three bits (bits 3-7 reserved). A paging
structure entry that maps a page selects entry ``PAT*4 + PCD*2 + PWT`` (Table 12-11), where the
PAT bit is bit 7 of a 4 KiB PTE and bit 12 of an entry mapping a 2 MiB/4 MiB/1 GiB page.
PCD/PWT of *non-leaf* entries (and of CR3) only govern accesses to the next paging structure.

Only the PAT contribution is modelled here; MTRRs (Vol. 3A 12.11) and CR0.CD can further
override the type. Pure: ints in, values out.
"""

from __future__ import annotations

from enum import IntEnum

from kdiag.errors import InputError

PAT_MSR = 0x277
"""IA32_PAT's MSR index."""

POWER_ON_PAT = 0x0007040600070406
"""IA32_PAT after reset: PA0=WB PA1=WT PA2=UC- PA3=UC, repeated (SDM Vol. 3A Table 12-12)."""


class MemoryType(IntEnum):
    """A PAT memory-type encoding (SDM Vol. 3A Table 12-10). 2 and 3 are reserved."""

    UC = 0  # strong uncacheable
    WC = 1  # write combining
    WT = 4  # write through
    WP = 5  # write protected
    WB = 6  # write back
    UC_MINUS = 7  # UC-: uncacheable, overridable to WC by the MTRRs

    @property
    def label(self) -> str:
        """The SDM's short name: ``UC``, ``WC``, ``WT``, ``WP``, ``WB``, ``UC-``."""
        return "UC-" if self is MemoryType.UC_MINUS else self.name

    @classmethod
    def from_label(cls, text: str) -> MemoryType:
        """Parse ``UC``/``WC``/``WT``/``WP``/``WB``/``UC-`` (also ``UC_MINUS``, case-insensitive)."""
        key = text.strip().upper().replace("-", "_MINUS").replace("__", "_")
        if key == "UCMINUS":
            key = "UC_MINUS"
        try:
            return cls[key]
        except KeyError:
            names = ", ".join(m.label for m in cls)
            raise ValueError(f"unknown memory type {text!r}; known: {names}") from None


_VALID = frozenset(int(m) for m in MemoryType)


def is_valid_pat(raw: int) -> bool:
    """True when every entry holds a defined encoding and reserved bits 3-7 are clear.

    WRMSR of any other value raises #GP, so a live CPU always holds a valid PAT.
    """
    if raw < 0 or raw >> 64:
        return False
    return all(((raw >> (8 * i)) & 0xFF) in _VALID for i in range(8))


def decode_pat(raw: int) -> tuple[MemoryType, ...]:
    """Split an IA32_PAT value into its eight memory types PA0..PA7.

    Raises ``InputError`` naming the entry when an entry is a reserved encoding (2, 3, >= 8),
    which only a corrupt dump or a wrong number can hold.
    """
    if raw < 0 or raw >> 64:
        raise InputError(f"IA32_PAT value {raw:#x} does not fit in 64 bits")
    out = []
    for i in range(8):
        byte = (raw >> (8 * i)) & 0xFF
        if byte not in _VALID:
            raise InputError(f"IA32_PAT {raw:#018x}: entry PA{i} = {byte:#04x} is a reserved "
                             "memory-type encoding")
        out.append(MemoryType(byte))
    return tuple(out)


def encode_pat(types: tuple[MemoryType, ...] | list[MemoryType]) -> int:
    """The IA32_PAT value for eight memory types (inverse of :func:`decode_pat`)."""
    if len(types) != 8:
        raise ValueError(f"IA32_PAT has 8 entries, got {len(types)}")
    value = 0
    for i, t in enumerate(types):
        value |= int(MemoryType(t)) << (8 * i)
    return value


def pat_index(pat: bool | int, pcd: bool | int, pwt: bool | int) -> int:
    """The PAT entry a page selects: ``PAT*4 + PCD*2 + PWT`` (SDM Vol. 3A Table 12-11)."""
    return (4 if pat else 0) | (2 if pcd else 0) | (1 if pwt else 0)


def memory_type(pat_msr: int | tuple[MemoryType, ...], pat: bool | int, pcd: bool | int,
                pwt: bool | int) -> MemoryType:
    """The PAT memory type of a page with the given PAT/PCD/PWT bits under ``pat_msr``.

    ``pat_msr`` is the raw IA32_PAT value or an already decoded 8-tuple.
    """
    table = decode_pat(pat_msr) if isinstance(pat_msr, int) else pat_msr
    return table[pat_index(pat, pcd, pwt)]
