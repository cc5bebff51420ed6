"""Plain-text descriptions of decoded values, in the words Bochs' debugger uses.

Kept apart from the decoders (data) and from the renderers (layout, JSON), like pyelftools'
``elf/descriptions.py``: checks quote these strings as evidence, renderers build lines from them.
No colour, no terminal codes.

Examples (Bochs ``info gdt`` style)::

    Code segment, base=0x00000000, limit=0xffffffff, Execute/Read, Non-Conforming, Accessed, 64-bit, DPL=0
    Data segment, base=0x00000000, limit=0xffffffff, Read/Write, Accessed, DPL=3
    64-bit TSS (Busy), base=0xffffffff80110000, limit=0x00000067, DPL=0
    64-bit Interrupt Gate target=0x0008:0xffffffff80101040, DPL=0, IST=1
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from kdiag.x86.bits import Field
from kdiag.x86.descriptors import (
    Descriptor,
    DescriptorKind,
    Gate,
    Gate64,
    LongSystemDescriptor,
    LongSystemType,
    SegmentDescriptor,
    SystemType,
)


def flag_line(raw: int, layout: Iterable[Field]) -> str:
    """``PG cd nw ac wp ne ET ts em mp PE``: names high bit first, upper-case when set.

    Multi-bit fields print as ``NAME=value`` (``IOPL=0``).
    """
    parts = []
    for f in sorted(layout, key=lambda f: -f.lo):
        v = f.get(raw)
        if f.width == 1:
            parts.append(f.name.upper() if v else f.name.lower())
        else:
            parts.append(f"{f.name}={v}")
    return " ".join(parts)


def _code_data_attrs(d: SegmentDescriptor) -> list[str]:
    t = d.type
    if d.is_code:
        attrs = ["Execute/Read" if t & 2 else "Execute-Only",
                 "Conforming" if t & 4 else "Non-Conforming"]
    else:
        attrs = ["Read/Write" if t & 2 else "Read-Only"]
        if t & 4:
            attrs.append("Expand-down")
    if t & 1:
        attrs.append("Accessed")
    return attrs


_LEGACY_SYSTEM_NAMES = {
    SystemType.TSS16_AVAILABLE: "16-bit TSS (Available)",
    SystemType.TSS16_BUSY: "16-bit TSS (Busy)",
    SystemType.TSS32_AVAILABLE: "32-bit TSS (Available)",
    SystemType.TSS32_BUSY: "32-bit TSS (Busy)",
    SystemType.LDT: "LDT",
    SystemType.CALL_GATE_16: "16-bit Call Gate",
    SystemType.CALL_GATE_32: "32-bit Call Gate",
    SystemType.TASK_GATE: "Task Gate",
    SystemType.INTERRUPT_GATE_16: "16-bit Interrupt Gate",
    SystemType.INTERRUPT_GATE_32: "32-bit Interrupt Gate",
    SystemType.TRAP_GATE_16: "16-bit Trap Gate",
    SystemType.TRAP_GATE_32: "32-bit Trap Gate",
}
_LONG_SYSTEM_NAMES = {
    LongSystemType.LDT: "LDT",
    LongSystemType.TSS64_AVAILABLE: "64-bit TSS (Available)",
    LongSystemType.TSS64_BUSY: "64-bit TSS (Busy)",
    LongSystemType.CALL_GATE_64: "64-bit Call Gate",
    LongSystemType.INTERRUPT_GATE_64: "64-bit Interrupt Gate",
    LongSystemType.TRAP_GATE_64: "64-bit Trap Gate",
}


def type_name(desc: Descriptor) -> str:
    """``Code segment``, ``Data segment``, ``64-bit TSS (Busy)``, ``32-bit Trap Gate``..."""
    if isinstance(desc, SegmentDescriptor):
        if desc.raw == 0:
            return "Null descriptor"
        if desc.s:
            return "Code segment" if desc.is_code else "Data segment"
        st = SystemType(desc.type)
        return _LEGACY_SYSTEM_NAMES.get(st, f"Reserved system type {desc.type:#x}")
    if isinstance(desc, Gate):
        if desc.raw == 0:
            return "Null descriptor"
        return _LEGACY_SYSTEM_NAMES.get(desc.type, f"Reserved system type {int(desc.type):#x}")
    if isinstance(desc, Gate64) and desc.raw == 0:
        return "Null descriptor"
    return _LONG_SYSTEM_NAMES.get(desc.type, f"Reserved system type {int(desc.type):#x}")


def gate_type_label(gate: Gate | Gate64) -> str:
    """Short type word for JSON/tables: ``interrupt-64``, ``trap-32``, ``task``, ``call-64``."""
    kind = gate.kind
    if kind == DescriptorKind.NULL:
        return "null"
    if kind == DescriptorKind.RESERVED:
        return f"reserved-{int(gate.type):x}"
    word = {DescriptorKind.INTERRUPT_GATE: "interrupt", DescriptorKind.TRAP_GATE: "trap",
            DescriptorKind.CALL_GATE: "call", DescriptorKind.TASK_GATE: "task"}.get(kind, str(kind))
    if kind == DescriptorKind.TASK_GATE:
        return "task"
    return f"{word}-{gate.bits}"


@lru_cache(maxsize=4096)
def describe_gate(gate: Gate | Gate64, symbol: str | None = None) -> str:
    """``64-bit Interrupt Gate target=0x0008:0xffffffff80101040 <isr_0>, DPL=0, IST=1``."""
    name = type_name(gate)
    if gate.raw == 0:
        return name
    parts = []
    if gate.kind == DescriptorKind.TASK_GATE:
        parts.append(f"{name} tss=0x{gate.selector.raw:04x}")
    else:
        width = 16 if isinstance(gate, Gate64) else 8
        target = f"{name} target=0x{gate.selector.raw:04x}:{gate.offset:#0{width + 2}x}"
        if symbol:
            target += f" <{symbol}>"
        parts.append(target)
    parts.append(f"DPL={gate.dpl}")
    if isinstance(gate, Gate64) and gate.ist:
        parts.append(f"IST={gate.ist}")
    if isinstance(gate, Gate) and gate.kind == DescriptorKind.CALL_GATE and gate.param_count:
        parts.append(f"params={gate.param_count}")
    if not gate.present:
        parts.append("Not present")
    return ", ".join(parts)


@lru_cache(maxsize=4096)
def describe_descriptor(desc: Descriptor, symbol: str | None = None) -> str:
    """One Bochs-style line for any GDT/LDT/IDT entry (without the ``gdt[0x08]=`` prefix)."""
    if isinstance(desc, Gate | Gate64):
        return describe_gate(desc, symbol)
    name = type_name(desc)
    if desc.raw == 0:
        return name
    if isinstance(desc, LongSystemDescriptor):
        parts = [name, f"base={desc.base:#018x}", f"limit={desc.limit:#010x}"]
    else:
        parts = [name, f"base={desc.base:#010x}", f"limit={desc.limit:#010x}"]
        if desc.s:
            parts += _code_data_attrs(desc)
            if desc.is_code:
                parts.append({64: "64-bit", 32: "32-bit", 16: "16-bit"}[desc.code_bits or 16])
            elif desc.db:
                parts.append("32-bit")
    parts.append(f"DPL={desc.dpl}")
    if not desc.present:
        parts.append("Not present")
    return ", ".join(parts)


def short_descriptor(desc: Descriptor | None) -> str:
    """A few words for evidence lines: ``64-bit code, DPL 3`` or ``writable data, DPL 0``."""
    if desc is None:
        return "beyond the limit"
    if desc.raw == 0:
        return "null descriptor"
    np = "" if desc.present else ", not present"
    if isinstance(desc, SegmentDescriptor) and desc.s:
        if desc.is_code:
            return f"{desc.code_bits}-bit code, DPL {desc.dpl}{np}"
        rw = "writable data" if desc.writable else "read-only data"
        return f"{rw}, DPL {desc.dpl}{np}"
    return f"{type_name(desc)}, DPL {desc.dpl}{np}"
