"""Read the descriptor tables of a stopped CPU through a Target: GDT, IDT, LDT and the TSS.

The pure decoders live in ``kdiag.x86``; this module only knows where the tables are (GDTR,
IDTR, TR and LDTR from ``Target.state()``) and how much to read. GDTR/IDTR bases are linear
addresses, so the reads go through ``Target.read_virt`` (the guest's own paging). TR and LDTR are
read from their *hidden caches* (base/limit loaded by ``ltr``/``lldt``), which is what the CPU
uses, whatever the GDT says now (SDM Vol. 3A 2.4.4, 7.2.4).

Every reader raises a :class:`kdiag.errors.TargetError` subclass with the address when the table
cannot be read, never a bare Python error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

from kdiag.errors import KdiagError, MemoryReadError, TargetError, TranslationError
from kdiag.target.base import Target
from kdiag.x86.descriptors import (
    Descriptor,
    GdtEntry,
    IdtEntry,
    SegmentDescriptor,
    decode_descriptor,
    decode_gdt,
    decode_idt,
)
from kdiag.x86.selector import Selector
from kdiag.x86.state import CpuMode, CpuState, SegmentCache, TableRegister
from kdiag.x86.tss import TSS_SIZE, Tss32, Tss64

MAX_TABLE = 0x10000  # GDTR/IDTR limits are 16 bits


class TableUnavailable(TargetError):
    """The backend does not report GDTR/IDTR/TR (e.g. a state without system registers)."""


def _read_linear(target: Target, base: int, size: int, what: str) -> bytes:
    try:
        return target.read_virt(base, size)
    except TranslationError as err:
        raise TranslationError(f"{what} at {base:#x} is not mapped: {err}", va=err.va) from err
    except MemoryReadError as err:
        raise MemoryReadError(f"{what} at {base:#x} (+{size:#x}) cannot be read: {err}",
                              addr=err.addr, size=err.size, physical=err.physical) from err


def long_mode(state: CpuState) -> bool:
    """IA-32e mode active (EFER.LMA): descriptors are 16 bytes for system types and gates."""
    return bool(state.efer & (1 << 10))


@dataclass(frozen=True)
class GdtView:
    """A GDT (or LDT) as read: its register, raw bytes and decoded entries."""

    base: int
    limit: int
    long_mode: bool
    raw: bytes
    entries: tuple[GdtEntry, ...]
    name: str = "GDT"

    def contains(self, selector: int) -> bool:
        """True if the 8 bytes of ``selector``'s descriptor lie within the limit (SDM 3.5.1)."""
        return (selector & ~7) + 7 <= self.limit

    def lookup(self, selector: int) -> Descriptor | None:
        """The descriptor the CPU would load for ``selector`` (None: beyond the limit).

        Decoded from the raw bytes at the selector's offset, so a selector pointing into the
        upper half of a 16-byte descriptor yields what the CPU would see there.
        """
        off = selector & ~7
        if not self.contains(selector):
            return None
        return decode_descriptor(self.raw[off:off + 16], self.long_mode)

    def entry(self, selector: int) -> GdtEntry | None:
        off = selector & ~7
        for e in self.entries:
            if e.selector == off:
                return e
        return None


def read_gdt(target: Target, state: CpuState | None = None) -> GdtView:
    """Read and decode the GDT named by GDTR. Raises TargetError subclasses."""
    state = state or target.state()
    gdtr = state.gdtr
    if gdtr is None:
        raise TableUnavailable(f"the {target.name} backend does not report GDTR")
    return _read_table(target, gdtr, long_mode(state), "GDT")


@lru_cache(maxsize=64)
def _decoded_gdt(raw: bytes, lm: bool) -> tuple[GdtEntry, ...]:
    """Decoded descriptors per table content (tables rarely change between stops)."""
    return tuple(decode_gdt(raw, lm))


@lru_cache(maxsize=64)
def _decoded_idt(raw: bytes, lm: bool) -> tuple[IdtEntry, ...]:
    return tuple(decode_idt(raw, lm))


def _read_table(target: Target, reg: TableRegister, lm: bool, name: str) -> GdtView:
    size = min(reg.limit + 1, MAX_TABLE)
    raw = _read_linear(target, reg.base, size, name)
    return GdtView(reg.base, reg.limit, lm, raw, _decoded_gdt(raw, lm), name)


def read_ldt(target: Target, state: CpuState | None = None) -> GdtView | None:
    """The LDT from LDTR's cache, or None when LDTR holds the null selector."""
    state = state or target.state()
    ldtr = state.ldtr
    if ldtr is None or (ldtr.selector & ~3) == 0 or not ldtr.present:
        return None
    return _read_table(target, TableRegister(ldtr.base, min(ldtr.limit, MAX_TABLE - 1)),
                       long_mode(state), "LDT")


@dataclass(frozen=True)
class IdtView:
    """An IDT as read. ``entries`` has one gate per vector covered by the limit (max 256)."""

    base: int
    limit: int
    long_mode: bool
    raw: bytes
    entries: tuple[IdtEntry, ...]

    @property
    def gate_size(self) -> int:
        return 16 if self.long_mode else 8

    def covers(self, vector: int) -> bool:
        """True if the whole gate of ``vector`` lies within the limit (SDM 6.10)."""
        return (vector + 1) * self.gate_size - 1 <= self.limit


def read_idt(target: Target, state: CpuState | None = None) -> IdtView:
    """Read and decode the IDT named by IDTR (at most 256 gates)."""
    state = state or target.state()
    idtr = state.idtr
    if idtr is None:
        raise TableUnavailable(f"the {target.name} backend does not report IDTR")
    lm = long_mode(state)
    size = min(idtr.limit + 1, 256 * (16 if lm else 8))
    raw = _read_linear(target, idtr.base, size, "IDT") if size > 0 else b""
    return IdtView(idtr.base, idtr.limit, lm, raw, _decoded_idt(raw, lm))


@dataclass(frozen=True)
class TssView:
    """The current task's TSS: TR's cache (selector/base/limit/type) and the decoded TSS.

    ``tss`` is None when TR was never loaded (selector 0) or the TSS is a 16-bit one.
    ``short`` is set when the TR limit is below the 104 bytes a 32/64-bit TSS needs (the CPU
    refuses such a TSS: #TS on ``ltr``/task switch); the missing bytes read as zero.
    """

    tr: SegmentCache
    long_mode: bool
    tss: Tss64 | Tss32 | None
    short: bool = False
    note: str = ""

    @property
    def loaded(self) -> bool:
        return (self.tr.selector & ~3) != 0


def read_tss(target: Target, state: CpuState | None = None) -> TssView:
    """Read the TSS at TR's cached base. Raises TableUnavailable if the backend has no TR."""
    state = state or target.state()
    tr = state.tr
    if tr is None:
        raise TableUnavailable(f"the {target.name} backend does not report TR")
    lm = long_mode(state)
    if (tr.selector & ~3) == 0:
        return TssView(tr, lm, None, note="TR holds the null selector: no TSS was loaded (ltr)")
    typ = tr.type
    if typ in (0x1, 0x3) and not lm:
        return TssView(tr, lm, None, note="16-bit TSS (not decoded)")
    size = min(tr.limit + 1, TSS_SIZE)
    data = _read_linear(target, tr.base, size, "TSS")
    short = size < TSS_SIZE
    data = data + bytes(TSS_SIZE - len(data))
    tss: Tss64 | Tss32 = Tss64.from_bytes(data) if lm else Tss32.from_bytes(data)
    return TssView(tr, lm, tss, short=short)


ANNOTATION_ORDER = ("cs", "ss", "ds", "es", "fs", "gs")


def segment_users(state: CpuState) -> dict[int, list[str]]:
    """GDT offset -> names of the registers whose selector points there (``cs``, ``tr``...).

    Used for the ``<- cs,ss`` annotations. LDT-relative selectors (TI=1) are left out.
    """
    users: dict[int, list[str]] = {}
    regs: list[tuple[str, SegmentCache | None]] = [(n, state.segments.get(n))
                                                   for n in ANNOTATION_ORDER]
    regs += [("ldtr", state.ldtr), ("tr", state.tr)]
    for name, seg in regs:
        if seg is None:
            continue
        sel = Selector.from_raw(seg.selector & 0xFFFF)
        if sel.ti or sel.null:
            continue
        users.setdefault(sel.offset, []).append(name)
    return users


def real_mode(state: CpuState) -> bool:
    return state.mode == CpuMode.REAL


def read_u64(target: Target, va: int) -> int:
    return int(struct.unpack("<Q", target.read_virt(va, 8))[0])


def table_ranges(state: CpuState, which: tuple[str, ...] = ("gdt", "idt", "tss")
                 ) -> list[tuple[int, int]]:
    """The (linear address, size) ranges :func:`read_gdt`, :func:`read_idt` and
    :func:`read_tss` will read for ``state``, for a backend that can read them ahead in fewer
    requests (``prefetch_virt``)."""
    out: list[tuple[int, int]] = []
    lm = long_mode(state)
    if "gdt" in which and state.gdtr is not None:
        out.append((state.gdtr.base, min(state.gdtr.limit + 1, MAX_TABLE)))
    if "idt" in which and state.idtr is not None:
        out.append((state.idtr.base, min(state.idtr.limit + 1, 256 * (16 if lm else 8))))
    tr = state.tr
    if "tss" in which and tr is not None and (tr.selector & ~3) and \
            not (tr.type in (0x1, 0x3) and not lm):
        out.append((tr.base, min(tr.limit + 1, TSS_SIZE)))
    return [(base, size) for base, size in out if size > 0]


def stack_probe_ranges(view: TssView) -> list[tuple[int, int]]:
    """The 8 bytes below each non-zero canonical RSP0/IST stack top of a 64-bit TSS (what
    the TSS checks probe for a mapping), as (va, size) ranges to read ahead."""
    t = view.tss
    if not isinstance(t, Tss64):
        return []
    tops = [t.rsp[0], *t.ist]
    return [((v - 8) & ((1 << 64) - 1), 8) for v in tops
            if v and ((v >> 47) == 0 or (v >> 47) == (1 << 17) - 1)]


def prefetch_tables(target: Target, state: CpuState,
                    which: tuple[str, ...] = ("gdt", "idt", "tss")) -> None:
    """Let a backend with ``prefetch_virt`` (gdb) read these tables ahead in as few requests as
    it can; a no-op elsewhere. Errors are left to the real reads."""
    prefetch = getattr(target, "prefetch_virt", None)
    if callable(prefetch):
        try:
            prefetch(table_ranges(state, which))
        except KdiagError:
            pass


def mapped_pages(target: Target, vas: list[int]) -> dict[int, bool | None]:
    """Page number (``va >> 12``) -> :func:`is_mapped` for each page of ``vas``, probed in as
    few reads as the backend allows (``probe_mapped``: gdb checks two adjacent pages with one
    read across their boundary)."""
    probe = getattr(target, "probe_mapped", None)
    if callable(probe):
        try:
            return dict(probe(vas))
        except KdiagError:
            pass
    out: dict[int, bool | None] = {}
    for va in vas:
        page = (va & ((1 << 64) - 1)) >> 12
        if page not in out:
            out[page] = is_mapped(target, va)
    return out


def is_mapped(target: Target, va: int) -> bool | None:
    """True if one byte at ``va`` reads through the guest's paging; None if unknowable.

    None covers backends or layers that are missing (e.g. no translator yet), so a check can
    say "could not verify" instead of guessing.
    """
    try:
        target.read_virt(va & ((1 << 64) - 1), 1)
        return True
    except (TranslationError, MemoryReadError):
        return False
    except ImportError:
        return None
    except KdiagError:
        return None


def cache_descriptor(seg: SegmentCache) -> SegmentDescriptor:
    """The 8-byte descriptor equivalent to a segment register's hidden cache.

    QEMU keeps the descriptor's attribute bits in ``flags`` (descriptor bits 40-55 at 8-23) and
    the scaled limit; this rebuilds a :class:`SegmentDescriptor` so the cache can be described
    and compared with the GDT entry in the same words. Base bits above 31 are dropped (only
    FS/GS/TR/LDTR have them; callers print ``seg.base`` for those).
    """
    g = bool(seg.flags & (1 << 23))
    limit = (seg.limit >> 12 if g else seg.limit) & 0xFFFFF
    f = seg.flags
    return SegmentDescriptor.make(
        base=seg.base & 0xFFFFFFFF, limit=limit, type=(f >> 8) & 0xF, s=bool(f & (1 << 12)),
        dpl=(f >> 13) & 3, present=bool(f & (1 << 15)), avl=bool(f & (1 << 20)),
        long=bool(f & (1 << 21)), db=bool(f & (1 << 22)), granularity=g)
