"""Typed records of a QEMU ``-d int,cpu_reset`` log (QEMU 7.2, ``target/i386``).

One record per logical log entry; register dumps are attached to the record they follow
(interrupt, ``CPU Reset``, ``SMM:``) or stand alone (:class:`RegisterDump`) when the log starts
in the middle of one. Every record carries its :class:`LogPos`: the byte offset of its first
line in the file (always known) and the 1-based line number (known only when the reader started
at the beginning of the file; a tail read leaves it None).

Log lines (``qemu_log`` calls in ``target/i386/tcg/seg_helper.c``, ``excp_helper.c``,
``softmmu/cpus.c``)::

    check_exception old: 0xffffffff new 0xe            CPU_LOG_INT   (old 0xffffffff = none)
       180: v=0e e=0002 i=0 cpl=0 IP=0038:...ec pc=...ec SP=0030:...90 CR2=...   CPU_LOG_INT
    Servicing hardware INT=0x20                         CPU_LOG_INT
    SMM: enter / SMM: after RSM                         CPU_LOG_INT
    Triple fault                                        CPU_LOG_RESET
    CPU Reset (CPU 0)                                   CPU_LOG_RESET (+ dump of the state before)

Interrupt records are only logged in protected/long mode (CR0.PE=1); the CPU index appears only
in ``CPU Reset`` lines, so records of several CPUs cannot be told apart.
"""

from __future__ import annotations

from kdiag._record import record
from kdiag.qemulog.regdump import ParsedDump
from kdiag.x86.exceptions import mnemonic

__all__ = ["CheckException", "CpuReset", "HardwareInt", "Interrupt", "LogPos", "Record",
           "RegisterDump", "SmmEvent", "TripleFault", "Unknown"]

NO_EXCEPTION = 0xFFFFFFFF


@record(frozen=True)
class LogPos:
    """Where a record starts: byte ``offset`` in the file and ``line`` (1-based) if known."""

    offset: int
    line: int | None = None

    def __str__(self) -> str:
        return f"line {self.line}" if self.line is not None else f"byte {self.offset}"


@record(frozen=True)
class Record:
    pos: LogPos


@record(frozen=True)
class CheckException(Record):
    """``check_exception old: 0xOLD new 0xNEW``: exception ``new`` raised; ``old`` is the exception
    whose delivery was in progress (None when QEMU printed 0xffffffff). ``new`` is the vector
    *before* the double-fault promotion; the following ``v=`` record shows the result."""

    old: int | None
    new: int

    @property
    def implies_triple_fault(self) -> bool:
        """A fault while delivering #DF: QEMU shuts down (SDM Table 6-5; QEMU checks old==8)."""
        return self.old == 8


@record(frozen=True)
class Interrupt(Record):
    """``v=.. e=.. i=.. cpl=.. IP=cs:ip pc=.. SP=ss:sp`` plus ``CR2=`` (#PF) or the EAX value.

    ``seq`` is QEMU's running counter (shared by all CPUs). ``is_int`` is ``i=1``: a software
    ``INT n``/``INT3``/``INTO``. ``dump`` is the register dump that followed, if any. Fields that
    were cut off in a truncated line are None.
    """

    seq: int
    vector: int
    error_code: int
    is_int: bool
    cpl: int
    cs: int | None = None
    ip: int | None = None
    pc: int | None = None
    ss: int | None = None
    sp: int | None = None
    cr2: int | None = None
    eax: int | None = None
    dump: ParsedDump | None = None
    hardware: bool = False  # preceded by "Servicing hardware INT=0xNN" for the same vector

    @property
    def mnemonic(self) -> str:
        return mnemonic(self.vector)

    @property
    def is_exception(self) -> bool:
        """A CPU exception: vector < 32, not a software INT and not a hardware IRQ."""
        return self.vector < 32 and not self.is_int and not self.hardware

    @property
    def is_irq(self) -> bool:
        return self.hardware or (self.vector >= 32 and not self.is_int)

    def same_context(self, other: Interrupt) -> bool:
        """True if both records interrupted the same instruction and stack (nested delivery)."""
        return (self.cs, self.ip, self.ss, self.sp, self.cpl) == (
            other.cs, other.ip, other.ss, other.sp, other.cpl) and self.ip is not None


@record(frozen=True)
class HardwareInt(Record):
    """``Servicing hardware INT=0xNN``: the next ``v=`` record is this IRQ's delivery."""

    vector: int


@record(frozen=True)
class TripleFault(Record):
    """``Triple fault`` (logged under ``-d cpu_reset``); QEMU then resets or, with ``-no-reboot``,
    shuts down."""


@record(frozen=True)
class CpuReset(Record):
    """``CPU Reset (CPU n)`` and the dump of the state *before* the reset."""

    cpu: int
    dump: ParsedDump | None = None

    @property
    def power_on(self) -> bool:
        """The dump shows no executed state: QEMU's initial all-zero or reset-vector state.

        At start QEMU logs 1-2 of these (object creation with everything zero, then the
        machine reset at F000:FFF0 with CR0=0x60000010); neither is a fault state.
        """
        d = self.dump
        if d is None:
            return False
        rip = d.gpr.get("rip", 0)
        cr0 = d.cr.get("cr0", 0)
        if rip == 0 and cr0 == 0 and not any(d.gpr.get(r, 0) for r in ("rsp", "rbx", "rcx")):
            return True
        cs = d.segments.get("cs")
        return (rip == 0xFFF0 and cr0 == 0x60000010 and cs is not None
                and cs.selector == 0xF000)


@record(frozen=True)
class SmmEvent(Record):
    """``SMM: enter`` or ``SMM: after RSM`` (firmware System Management Mode; noise)."""

    kind: str
    dump: ParsedDump | None = None


@record(frozen=True)
class RegisterDump(Record):
    """A register dump not preceded by a record (the log starts inside one, or a paste)."""

    dump: ParsedDump


@record(frozen=True)
class Unknown(Record):
    """A line the parser does not know (other ``-d`` items, guest errors, cut lines)."""

    text: str
