"""Exception vectors and their error codes (Intel SDM Vol. 3A 6.15, 6.13; AMD APM Vol. 2 8.2).

Pure tables and decoders: ints in, frozen values out.

- :data:`VECTORS` / :func:`vector_info`: number, mnemonic (``#PF``), name, whether the CPU pushes an
  error code, the kind (fault/trap/abort) and the double-fault class (SDM Table 6-4/6-5:
  benign, contributory, page fault; #DF itself is its own class).
- :func:`decode_page_fault_error`: the #PF error code bits P/W/U/RSVD/I/PK/SS/SGX (SDM 4.7).
- :func:`decode_selector_error`: the selector-format error code of #TS/#NP/#SS/#GP (SDM 6.13):
  EXT (bit 0), IDT (bit 1), TI (bit 2), index (bits 3-15).

QEMU quirk (measured on QEMU 7.2, TCG, long mode): when delivering vector *v* faults on the IDT
(gate beyond the limit, gate not present), QEMU's 64-bit path reports the error code as
``v*16 + 2`` rather than the architectural ``v*8 + 2`` (``e=0062`` for #UD, ``e=0202`` for IRQ
0x20, ``e=0802`` for ``int 0x80``). In legacy/protected mode it uses ``v*8 + 2``.
:class:`SelectorErrorCode` keeps both readings; :meth:`SelectorErrorCode.idt_vector` picks one.
"""

from __future__ import annotations

from enum import IntFlag, StrEnum

from kdiag._record import record

__all__ = [
    "ExceptionClass", "ExceptionKind", "PageFaultCode", "PageFaultError", "SelectorErrorCode",
    "Vector", "VECTORS", "decode_error_code", "decode_page_fault_error", "decode_selector_error",
    "double_fault_result", "has_error_code", "is_exception_vector", "mnemonic", "vector_info",
]


class ExceptionClass(StrEnum):
    """Double-fault classes of SDM Vol. 3A Table 6-4."""

    BENIGN = "benign"
    CONTRIBUTORY = "contributory"
    PAGE_FAULT = "page-fault"
    DOUBLE_FAULT = "double-fault"
    INTERRUPT = "interrupt"  # vectors 32-255: external or software interrupts


class ExceptionKind(StrEnum):
    FAULT = "fault"
    TRAP = "trap"
    ABORT = "abort"
    INTERRUPT = "interrupt"
    RESERVED = "reserved"


@record(frozen=True)
class Vector:
    """One IDT vector as the SDM describes it."""

    number: int
    mnemonic: str
    name: str
    has_error_code: bool
    kind: ExceptionKind
    cls: ExceptionClass

    @property
    def is_exception(self) -> bool:
        return self.number < 32


_B, _C, _P, _D = (ExceptionClass.BENIGN, ExceptionClass.CONTRIBUTORY,
                  ExceptionClass.PAGE_FAULT, ExceptionClass.DOUBLE_FAULT)
_F, _T, _A, _R = ExceptionKind.FAULT, ExceptionKind.TRAP, ExceptionKind.ABORT, ExceptionKind.RESERVED

VECTORS: tuple[Vector, ...] = (
    Vector(0, "#DE", "Divide Error", False, _F, _C),
    Vector(1, "#DB", "Debug", False, _T, _B),
    Vector(2, "NMI", "Non-maskable Interrupt", False, ExceptionKind.INTERRUPT, _B),
    Vector(3, "#BP", "Breakpoint", False, _T, _B),
    Vector(4, "#OF", "Overflow", False, _T, _B),
    Vector(5, "#BR", "BOUND Range Exceeded", False, _F, _B),
    Vector(6, "#UD", "Invalid Opcode", False, _F, _B),
    Vector(7, "#NM", "Device Not Available", False, _F, _B),
    Vector(8, "#DF", "Double Fault", True, _A, _D),
    Vector(9, "CSO", "Coprocessor Segment Overrun", False, _A, _B),
    Vector(10, "#TS", "Invalid TSS", True, _F, _C),
    Vector(11, "#NP", "Segment Not Present", True, _F, _C),
    Vector(12, "#SS", "Stack-Segment Fault", True, _F, _C),
    Vector(13, "#GP", "General Protection", True, _F, _C),
    Vector(14, "#PF", "Page Fault", True, _F, _P),
    Vector(15, "#15", "Reserved", False, _R, _B),
    Vector(16, "#MF", "x87 Floating-Point Error", False, _F, _B),
    Vector(17, "#AC", "Alignment Check", True, _F, _B),
    Vector(18, "#MC", "Machine Check", False, _A, _B),
    Vector(19, "#XM", "SIMD Floating-Point Exception", False, _F, _B),
    Vector(20, "#VE", "Virtualization Exception", False, _F, _B),
    Vector(21, "#CP", "Control Protection Exception", True, _F, _C),
    *(Vector(n, f"#{n}", "Reserved", False, _R, _B) for n in range(22, 28)),
    Vector(28, "#HV", "Hypervisor Injection Exception", False, _F, _B),
    Vector(29, "#VC", "VMM Communication Exception", True, _F, _C),
    Vector(30, "#SX", "Security Exception", True, _F, _C),
    Vector(31, "#31", "Reserved", False, _R, _B),
)

DE, DB, NMI, BP, OF, BR, UD, NM, DF = range(9)
TS, NP, SS, GP, PF = 10, 11, 12, 13, 14


def vector_info(vector: int) -> Vector:
    """The :class:`Vector` for 0-255; 32-255 are interrupts (``INT 0x80``-style mnemonic)."""
    if 0 <= vector < 32:
        return VECTORS[vector]
    if 32 <= vector <= 255:
        return Vector(vector, f"INT 0x{vector:02x}", "Interrupt", False, ExceptionKind.INTERRUPT,
                      ExceptionClass.INTERRUPT)
    raise ValueError(f"vector {vector} outside 0-255")


def mnemonic(vector: int) -> str:
    """``#PF`` for 14, ``INT 0x20`` for 32; never raises (out-of-range gives ``vector N``)."""
    try:
        return vector_info(vector).mnemonic
    except ValueError:
        return f"vector {vector}"


def is_exception_vector(vector: int) -> bool:
    return 0 <= vector < 32


def has_error_code(vector: int) -> bool:
    """Whether the CPU pushes an error code for exception ``vector`` (SDM Table 6-1)."""
    return 0 <= vector < 32 and VECTORS[vector].has_error_code


def double_fault_result(first: int, second: int) -> str:
    """SDM Table 6-5: what happens when ``second`` occurs while delivering ``first``.

    Returns ``"serial"`` (handled one after the other), ``"double-fault"`` or ``"triple-fault"``.
    Interrupts (32-255) are treated as benign.
    """
    c1 = vector_info(first).cls if 0 <= first <= 255 else ExceptionClass.BENIGN
    c2 = vector_info(second).cls if 0 <= second <= 255 else ExceptionClass.BENIGN
    if c1 is ExceptionClass.DOUBLE_FAULT and c2 in (ExceptionClass.CONTRIBUTORY,
                                                    ExceptionClass.PAGE_FAULT,
                                                    ExceptionClass.DOUBLE_FAULT):
        return "triple-fault"
    if c1 is ExceptionClass.CONTRIBUTORY and c2 is ExceptionClass.CONTRIBUTORY:
        return "double-fault"
    if c1 is ExceptionClass.PAGE_FAULT and c2 in (ExceptionClass.CONTRIBUTORY,
                                                  ExceptionClass.PAGE_FAULT):
        return "double-fault"
    return "serial"


# ---------------------------------------------------------------------------------------
# #PF error code (SDM Vol. 3A 4.7, Figure 4-12)


class PageFaultError(IntFlag):
    P = 1 << 0      # 0: non-present page; 1: protection violation
    W = 1 << 1      # write access
    U = 1 << 2      # user-mode access (CPL 3)
    RSVD = 1 << 3   # reserved bit set in a paging-structure entry
    I = 1 << 4      # instruction fetch (only reported with NX enabled or SMEP)  # noqa: E741
    PK = 1 << 5     # protection-key violation
    SS = 1 << 6     # shadow-stack access
    SGX = 1 << 15   # SGX-specific access-control violation


@record(frozen=True)
class PageFaultCode:
    """A decoded #PF error code; ``raw`` keeps the value."""

    raw: int

    @property
    def flags(self) -> PageFaultError:
        return PageFaultError(self.raw & 0x807F)

    @property
    def present(self) -> bool:
        return bool(self.raw & PageFaultError.P)

    @property
    def write(self) -> bool:
        return bool(self.raw & PageFaultError.W)

    @property
    def user(self) -> bool:
        return bool(self.raw & PageFaultError.U)

    @property
    def rsvd(self) -> bool:
        return bool(self.raw & PageFaultError.RSVD)

    @property
    def fetch(self) -> bool:
        return bool(self.raw & PageFaultError.I)

    @property
    def pk(self) -> bool:
        return bool(self.raw & PageFaultError.PK)

    @property
    def ss(self) -> bool:
        return bool(self.raw & PageFaultError.SS)

    @property
    def sgx(self) -> bool:
        return bool(self.raw & PageFaultError.SGX)

    @property
    def flag_names(self) -> list[str]:
        return [f.name for f in PageFaultError if f.name and self.raw & f]

    def describe(self) -> str:
        """``not-present write from supervisor`` style summary (``+RSVD``/``+I`` etc. appended)."""
        parts = ["protection violation" if self.present else "not-present page",
                 "instruction fetch" if self.fetch else ("write" if self.write else "read"),
                 "from user mode" if self.user else "from supervisor mode"]
        extra = [n for n, on in (("reserved bit", self.rsvd), ("protection key", self.pk),
                                 ("shadow stack", self.ss), ("SGX", self.sgx)) if on]
        text = f"{parts[0]}, {parts[1]} {parts[2]}"
        return text + (", " + ", ".join(extra) if extra else "")

    def to_json(self) -> dict[str, object]:
        return {"kind": "page-fault", "raw": f"{self.raw:#x}", "flags": self.flag_names,
                "present": self.present, "write": self.write, "user": self.user,
                "rsvd": self.rsvd, "fetch": self.fetch, "pk": self.pk, "ss": self.ss,
                "sgx": self.sgx, "text": self.describe()}


def decode_page_fault_error(code: int) -> PageFaultCode:
    return PageFaultCode(code & 0xFFFFFFFF)


# ---------------------------------------------------------------------------------------
# Selector-format error code (SDM Vol. 3A 6.13, Figure 6-7)


@record(frozen=True)
class SelectorErrorCode:
    """Error code of #TS/#NP/#SS/#GP (and #AC's 0): EXT, IDT, TI and a selector index.

    ``long_mode`` records whether the fault happened with EFER.LMA=1 (it selects QEMU's
    ``vector*16+2`` reading of IDT references, see the module docstring).
    """

    raw: int
    long_mode: bool = False
    qemu_quirk: bool = True

    @property
    def ext(self) -> bool:
        """The fault happened while delivering an external event (IRQ, NMI, or an exception)."""
        return bool(self.raw & 1)

    @property
    def idt(self) -> bool:
        return bool(self.raw & 2)

    @property
    def ti(self) -> bool:
        """Table indicator when IDT=0: 1 = LDT, 0 = GDT."""
        return bool(self.raw & 4) and not self.idt

    @property
    def index(self) -> int:
        """The architectural selector index, bits 3-15."""
        return (self.raw >> 3) & 0x1FFF

    @property
    def is_null(self) -> bool:
        return self.raw & 0xFFFF == 0

    @property
    def table(self) -> str:
        return "IDT" if self.idt else ("LDT" if self.raw & 4 else "GDT")

    @property
    def selector(self) -> int:
        """The segment selector (index, TI; RPL 0) for GDT/LDT references."""
        return self.raw & 0xFFF8 | (self.raw & 4)

    @property
    def qemu_long_mode_form(self) -> bool:
        """True if this IDT reference is QEMU's long-mode ``vector*16+2`` encoding."""
        return self.idt and self.long_mode and self.qemu_quirk and not self.raw & 0xC

    def idt_vector(self) -> int | None:
        """The IDT vector referenced, or None for GDT/LDT references.

        In long mode with the QEMU quirk the code is ``vector*16 + 2 (+EXT)``, so the vector is
        ``raw >> 4``; architecturally (and in legacy mode) it is the index, ``raw >> 3``.
        """
        if not self.idt:
            return None
        if self.qemu_long_mode_form:
            return (self.raw >> 4) & 0xFF
        return self.index & 0xFF

    def describe(self) -> str:
        if self.is_null and not self.ext:
            return "0 (no selector: the fault is not about a segment or gate)"
        parts = []
        if self.idt:
            vec = self.idt_vector()
            quirk = " (QEMU long-mode encoding vector*16+2)" if self.qemu_long_mode_form else ""
            parts.append(f"IDT vector {vec:#04x}{quirk}" if vec is not None else "IDT")
        else:
            parts.append(f"{self.table} selector {self.selector:#06x} (index {self.index})")
        if self.ext:
            parts.append("during delivery of an external event (EXT)")
        return ", ".join(parts)

    def to_json(self) -> dict[str, object]:
        vec = self.idt_vector()
        return {"kind": "selector", "raw": f"{self.raw:#x}", "ext": self.ext, "idt": self.idt,
                "ti": self.ti, "table": self.table, "index": self.index,
                "selector": None if self.idt else f"{self.selector:#06x}",
                "vector": None if vec is None else f"{vec:#04x}",
                "qemu_vector16": self.qemu_long_mode_form, "text": self.describe()}


def decode_selector_error(code: int, long_mode: bool = False,
                          qemu_quirk: bool = True) -> SelectorErrorCode:
    return SelectorErrorCode(code & 0xFFFFFFFF, long_mode=long_mode, qemu_quirk=qemu_quirk)


def decode_error_code(vector: int, code: int, long_mode: bool = False,
                      qemu_quirk: bool = True) -> PageFaultCode | SelectorErrorCode | None:
    """Decode ``code`` as the error code of exception ``vector``; None if it has no structure."""
    if vector == PF:
        return decode_page_fault_error(code)
    if vector in (TS, NP, SS, GP):
        return decode_selector_error(code, long_mode=long_mode, qemu_quirk=qemu_quirk)
    return None
