"""Values the triage engine produces: causes with evidence, code locations, the diagnosis.

Cause ids are a fixed vocabulary; see :mod:`kdiag.triage.causes` for the list and meaning.
"""

from __future__ import annotations

from kdiag._record import field, record
from kdiag.qemulog.records import LogPos
from kdiag.triage.chain import ChainEvent, FatalChain
from kdiag.x86.state import CpuState

TYPE_CHECKING = False  # typing's constant without importing typing (start-up cost: kdiag._record)
if TYPE_CHECKING:
    from kdiag.triage.memory import MemCheck
    from kdiag.unwind.frames import Backtrace

__all__ = ["Cause", "Diagnosis", "Evidence", "Location"]


@record(frozen=True)
class Evidence:
    """One fact a cause rests on, with where it came from (a log position or ``source``)."""

    text: str
    pos: LogPos | None = None
    source: str = "log"  # "log", "dump", "elf", "memory"


@record(frozen=True)
class Cause:
    """A candidate root cause. ``confidence`` is 0..1; ``role`` is ``root`` (explains the first
    fault), ``escalation`` (explains why it became a double/triple fault) or ``context``."""

    id: str
    confidence: float
    summary: str
    evidence: tuple[Evidence, ...] = ()
    advice: str = ""
    role: str = "root"
    rule: str = ""


@record(frozen=True)
class Location:
    """Where an address falls in a kernel ELF: symbol+offset, file:line, the instruction."""

    address: int
    elf: str
    link_address: int | None = None      # the address in the ELF's own (link-time) terms
    via: str = "vaddr"                   # "vaddr" or "paddr" (code running before the jump up)
    symbol: str | None = None
    offset: int | None = None
    file: str | None = None
    line: int | None = None
    instruction: str | None = None       # "mov rcx, qword ptr [rbx]"
    insn_bytes: bytes | None = None
    mode_bits: int | None = None         # 64/32/16: the mode it was disassembled in
    previous: tuple[str, ...] = ()       # up to 3 instructions before, "addr: text"
    source: tuple[tuple[int, str], ...] = ()  # (line number, text) around ``line``
    mem_addresses: tuple[int, ...] = ()  # effective addresses of memory operands (from regs)

    @property
    def where(self) -> str:
        sym = f"{self.symbol}+{self.offset:#x}" if self.symbol is not None and self.offset \
            else (self.symbol or "?")
        fl = f" ({self.file}:{self.line})" if self.file and self.line else ""
        return f"{sym}{fl}"


@record
class Diagnosis:
    """Everything ``kdiag triage`` reports; renderers turn it into text or JSON."""

    outcome: str
    chain: FatalChain
    registers: CpuState | None = None
    registers_width: int = 0
    registers_pos: LogPos | None = None
    registers_source: str = ""
    causes: list[Cause] = field(default_factory=list)
    location: Location | None = None
    notes: list[str] = field(default_factory=list)
    verdict: str = ""
    first_fault_ip: int | None = None
    first_fault_ip_inferred: bool = False
    resets_before: int = 0
    resets_before_exact: bool = True
    log_path: str | None = None
    log_size: int | None = None
    scanned_bytes: int | None = None
    memory: list[MemCheck] = field(default_factory=list)  # live/core: what memory showed
    # live/core with an ELF: the call stack at the fault, from the same unwinder as `kd bt`
    backtrace: Backtrace | None = None

    @property
    def cpu(self) -> int | None:
        return self.chain.cpu

    @property
    def trigger(self) -> ChainEvent | None:
        return self.chain.trigger

    @property
    def first_fault(self) -> ChainEvent | None:
        return self.chain.first_fault

    @property
    def mode(self) -> str | None:
        return str(self.registers.mode) if self.registers is not None else None

    @property
    def exit_code(self) -> int:
        return 0 if self.outcome == "clean" else 1
