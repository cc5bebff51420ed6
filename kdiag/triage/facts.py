"""What the rules look at: the chain, the decisive register state, decoded error codes, and
optionally a live Target and the kernel ELF. Built once per triage; rules only read it."""

from __future__ import annotations

from kdiag._record import field, record
from kdiag.qemulog.records import LogPos
from kdiag.qemulog.regdump import ParsedDump
from kdiag.triage.chain import ChainEvent, FatalChain
from kdiag.triage.model import Evidence, Location
from kdiag.x86.exceptions import PageFaultCode, SelectorErrorCode, decode_error_code
from kdiag.x86.state import CpuState

TYPE_CHECKING = False  # typing's constant without importing typing (start-up cost: kdiag._record)
if TYPE_CHECKING:
    from kdiag.target.base import Target
    from kdiag.triage.location import KernelImage

EFER_SCE, EFER_LME, EFER_LMA, EFER_NXE = 1 << 0, 1 << 8, 1 << 10, 1 << 11
CR0_PE, CR0_WP, CR0_PG = 1 << 0, 1 << 16, 1 << 31
CR4_PSE, CR4_PAE, CR4_OSFXSR, CR4_LA57, CR4_SMEP, CR4_SMAP = (
    1 << 4, 1 << 5, 1 << 9, 1 << 12, 1 << 20, 1 << 21)


def is_canonical(addr: int, la57: bool = False) -> bool:
    bits = 57 if la57 else 48
    top = addr >> (bits - 1)
    return top == 0 or top == (1 << (65 - bits)) - 1


def hx(v: int | None) -> str:
    return "?" if v is None else f"{v:#x}"


@record
class Facts:
    chain: FatalChain
    state: CpuState | None = None
    state_pos: LogPos | None = None
    dump: ParsedDump | None = None
    final: CpuState | None = None
    final_pos: LogPos | None = None
    target: Target | None = None
    image: KernelImage | None = None
    location: Location | None = None
    live: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    # -- chain shortcuts ---------------------------------------------------------------------
    @property
    def first(self) -> ChainEvent | None:
        return self.chain.first_fault

    @property
    def exceptions(self) -> list[ChainEvent]:
        return [e for e in self.chain.events
                if e.kind in ("exception", "folded") and e.vector is not None and e.vector < 32]

    @property
    def recorded(self) -> list[ChainEvent]:
        """Exceptions with their own ``v=`` record (error code, IP, CR2 known)."""
        return [e for e in self.exceptions if e.record is not None]

    @property
    def long_mode(self) -> bool:
        st = self.state or self.final
        return bool(st is not None and st.efer & EFER_LMA)

    @property
    def la57(self) -> bool:
        st = self.state or self.final
        return bool(st is not None and st.cr4 & CR4_LA57)

    @property
    def protected(self) -> bool:
        st = self.state or self.final
        return bool(st is not None and st.cr0 & CR0_PE)

    @property
    def has_chain_records(self) -> bool:
        return bool(self.recorded)

    def decoded(self, ev: ChainEvent) -> PageFaultCode | SelectorErrorCode | None:
        if ev.vector is None or ev.error_code is None:
            return None
        return decode_error_code(ev.vector, ev.error_code, long_mode=self.long_mode)

    def page_faults(self) -> list[ChainEvent]:
        return [e for e in self.recorded if e.vector == 14]

    def first_recorded(self, *vectors: int) -> ChainEvent | None:
        for e in self.recorded:
            if e.vector in vectors:
                return e
        return None

    @property
    def final_cr2(self) -> int | None:
        return self.final.cr2 if self.final is not None else None

    # -- evidence helpers ---------------------------------------------------------------------
    def ev_record(self, ev: ChainEvent, text: str) -> Evidence:
        return Evidence(text, ev.pos, "log")

    def ev_dump(self, text: str, final: bool = False) -> Evidence:
        if self.live:
            return Evidence(text, None, "registers")
        return Evidence(text + " (register dump)", self.final_pos if final else self.state_pos,
                        "dump")

    def describe_event(self, ev: ChainEvent) -> str:
        rec = ev.record
        if rec is None:
            return f"{ev.mnemonic} (no record of its own)"
        s = f"{ev.mnemonic} v={rec.vector:02x} e={rec.error_code:04x} cpl={rec.cpl}"
        if rec.cs is not None and rec.ip is not None:
            s += f" IP={rec.cs:04x}:{rec.ip:#x}"
        if rec.sp is not None:
            s += f" SP={hx(rec.sp)}"
        if rec.cr2 is not None:
            s += f" CR2={rec.cr2:#x}"
        return s
