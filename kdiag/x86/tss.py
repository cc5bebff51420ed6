"""Task-state segments: the 64-bit TSS (SDM Vol. 3A 7.7, Figure 7-11) and the 32-bit TSS
(7.2.1, Figure 7-2). Both are 104 bytes without the I/O permission bitmap.

In IA-32e mode the TSS holds no task state, only stack pointers: RSP0-2 (loaded on a privilege
change to CPL 0-2) and IST1-7 (the Interrupt Stack Table, selected by a gate's IST field,
6.14.5), plus the I/O map base. The 32-bit TSS holds ESP0-2/SS0-2 and the full task state used
by hardware task switches. Layouts are ``ByteField`` tables; values keep ``raw`` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdiag.x86.bits import ByteField, ByteLayout, unpack_bytes

TSS_SIZE = 104

TSS64_LAYOUT: ByteLayout = (
    ByteField("RSP0", 4, 8, "stack pointer loaded on a transition to CPL 0"),
    ByteField("RSP1", 12, 8),
    ByteField("RSP2", 20, 8),
    ByteField("IST1", 36, 8, "interrupt stack table entry 1"),
    ByteField("IST2", 44, 8),
    ByteField("IST3", 52, 8),
    ByteField("IST4", 60, 8),
    ByteField("IST5", 68, 8),
    ByteField("IST6", 76, 8),
    ByteField("IST7", 84, 8),
    ByteField("IOPB", 102, 2, "I/O map base address (offset from the TSS base)"),
)

TSS32_LAYOUT: ByteLayout = (
    ByteField("LINK", 0, 2, "previous task link (selector)"),
    ByteField("ESP0", 4, 4), ByteField("SS0", 8, 2),
    ByteField("ESP1", 12, 4), ByteField("SS1", 16, 2),
    ByteField("ESP2", 20, 4), ByteField("SS2", 24, 2),
    ByteField("CR3", 28, 4), ByteField("EIP", 32, 4), ByteField("EFLAGS", 36, 4),
    ByteField("EAX", 40, 4), ByteField("ECX", 44, 4), ByteField("EDX", 48, 4),
    ByteField("EBX", 52, 4), ByteField("ESP", 56, 4), ByteField("EBP", 60, 4),
    ByteField("ESI", 64, 4), ByteField("EDI", 68, 4),
    ByteField("ES", 72, 2), ByteField("CS", 76, 2), ByteField("SS", 80, 2),
    ByteField("DS", 84, 2), ByteField("FS", 88, 2), ByteField("GS", 92, 2),
    ByteField("LDT", 96, 2, "LDT segment selector"),
    ByteField("T", 100, 2, "bit 0: debug trap on task switch"),
    ByteField("IOPB", 102, 2, "I/O map base address"),
)


def _check(data: bytes) -> bytes:
    if len(data) < TSS_SIZE:
        raise ValueError(f"a TSS is {TSS_SIZE} bytes, got {len(data)}")
    return bytes(data[:TSS_SIZE])


@dataclass(frozen=True)
class Tss64:
    """A 64-bit TSS. ``rsp[0..2]`` are RSP0-RSP2; ``ist[0..6]`` are IST1-IST7."""

    raw: bytes
    rsp: tuple[int, int, int]
    ist: tuple[int, int, int, int, int, int, int]
    iopb: int

    layout = TSS64_LAYOUT
    bits = 64

    @classmethod
    def from_bytes(cls, data: bytes) -> Tss64:
        raw = _check(data)
        f = unpack_bytes(raw, TSS64_LAYOUT)
        return cls(raw, (f["RSP0"], f["RSP1"], f["RSP2"]),
                   (f["IST1"], f["IST2"], f["IST3"], f["IST4"], f["IST5"], f["IST6"], f["IST7"]),
                   f["IOPB"])

    @classmethod
    def make(cls, rsp: tuple[int, ...] = (0, 0, 0), ist: tuple[int, ...] = (0,) * 7,
             iopb: int = TSS_SIZE) -> Tss64:
        buf = bytearray(TSS_SIZE)
        for i, v in enumerate(rsp):
            TSS64_LAYOUT[i].put(buf, v)
        for i, v in enumerate(ist):
            TSS64_LAYOUT[3 + i].put(buf, v)
        TSS64_LAYOUT[10].put(buf, iopb)
        return cls.from_bytes(bytes(buf))

    def ist_entry(self, n: int) -> int:
        """IST\\ ``n`` (1-7), as a gate's IST field names it."""
        if not 1 <= n <= 7:
            raise ValueError(f"IST index {n} is not 1-7")
        return self.ist[n - 1]

    def io_bitmap_present(self, limit: int) -> bool:
        """True if the I/O map base lies inside the TSS limit (SDM Vol. 1 19.5.2)."""
        return self.iopb <= limit


@dataclass(frozen=True)
class Tss32:
    """A 32-bit TSS (all 27 fields of Figure 7-2, by their SDM names, in ``fields``)."""

    raw: bytes
    fields: dict[str, int]

    layout = TSS32_LAYOUT
    bits = 32

    @classmethod
    def from_bytes(cls, data: bytes) -> Tss32:
        raw = _check(data)
        return cls(raw, unpack_bytes(raw, TSS32_LAYOUT))

    @classmethod
    def make(cls, **values: int) -> Tss32:
        buf = bytearray(TSS_SIZE)
        byname = {f.name: f for f in TSS32_LAYOUT}
        for k, v in values.items():
            byname[k.upper()].put(buf, v)
        return cls.from_bytes(bytes(buf))

    def __hash__(self) -> int:
        return hash(self.raw)

    @property
    def esp(self) -> tuple[int, int, int]:
        return self.fields["ESP0"], self.fields["ESP1"], self.fields["ESP2"]

    @property
    def ss(self) -> tuple[int, int, int]:
        return self.fields["SS0"], self.fields["SS1"], self.fields["SS2"]

    @property
    def iopb(self) -> int:
        return self.fields["IOPB"]

    @property
    def debug_trap(self) -> bool:
        return bool(self.fields["T"] & 1)

    def io_bitmap_present(self, limit: int) -> bool:
        return self.iopb <= limit


Tss = Tss64 | Tss32
