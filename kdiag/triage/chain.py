"""Reconstruct the fatal exception chain from parsed log records (pure; no I/O).

The chain is what the CPU did on the way to the end: the *trigger* (an IRQ or ``INT n`` whose
delivery faulted, or none), each exception raised while delivering the previous one (QEMU's
``check_exception old -> new``), exceptions folded into #DF without their own ``v=`` record, and
the *terminal* event: a triple fault (``Triple fault``, or ``check_exception old: 0x8`` when the
log lacks ``-d cpu_reset``), a guest-requested reset (``CPU Reset`` not after a triple fault),
or the last exception when a handler took it and nothing escalated.

Nesting rules (QEMU 7.2 ``check_exception``/``do_interrupt_all``): a record is delivered *inside*
the previous one when its ``check_exception`` line names the previous vector as ``old`` (QEMU
keeps ``old`` only for contributory exceptions, #PF and #DF), or, for ``old`` = none, when the
previous record is a benign exception, an IRQ or a software INT that interrupted the same
instruction and stack (``IP=``/``SP=``/``cpl=`` equal): the delivery did not complete, so the
saved context did not move. Records of other CPUs may be interleaved (the log does not say which
CPU a record is for); the search for a parent looks back a few records for a match.

Outcomes: ``triple-fault``, ``reset``, ``exception`` (the log ends after an exception that did
not escalate and the CPU did not go on running elsewhere) and ``clean``.
"""

from __future__ import annotations

from kdiag._record import field, record
from kdiag.qemulog.records import (
    CheckException,
    CpuReset,
    HardwareInt,
    Interrupt,
    LogPos,
    Record,
    RegisterDump,
    TripleFault,
)
from kdiag.qemulog.regdump import ParsedDump
from kdiag.x86.exceptions import ExceptionClass, mnemonic, vector_info

__all__ = ["ChainEvent", "FatalChain", "analyze_records"]

LOOKBACK = 12  # records searched back for a parent (other CPUs' records may be interleaved)


@record(frozen=True)
class ChainEvent:
    """One step of the chain.

    ``kind``: ``irq`` / ``int`` (the trigger), ``exception`` (an exception with its own ``v=``
    record), ``folded`` (raised but promoted to #DF or to the triple fault without a record),
    ``triple-fault``, ``reset`` or ``unknown`` (a fault known only from a register dump).
    """

    kind: str
    vector: int | None = None
    error_code: int | None = None
    record: Interrupt | None = None
    check: CheckException | None = None
    pos: LogPos | None = None
    note: str = ""

    @property
    def mnemonic(self) -> str:
        if self.vector is None:
            return {"triple-fault": "triple fault", "reset": "reset"}.get(self.kind, "?")
        return mnemonic(self.vector)

    @property
    def cpl(self) -> int | None:
        return self.record.cpl if self.record else None

    @property
    def cs(self) -> int | None:
        return self.record.cs if self.record else None

    @property
    def ip(self) -> int | None:
        return self.record.ip if self.record else None

    @property
    def pc(self) -> int | None:
        return self.record.pc if self.record else None

    @property
    def ss(self) -> int | None:
        return self.record.ss if self.record else None

    @property
    def sp(self) -> int | None:
        return self.record.sp if self.record else None

    @property
    def cr2(self) -> int | None:
        return self.record.cr2 if self.record else None

    @property
    def dump(self) -> ParsedDump | None:
        return self.record.dump if self.record else None


@record
class FatalChain:
    """The result of :func:`analyze_records` over one window of records."""

    outcome: str = "clean"
    events: list[ChainEvent] = field(default_factory=list)
    trigger: ChainEvent | None = None
    first_fault: ChainEvent | None = None
    reset: CpuReset | None = None          # the CPU Reset record ending the chain, if any
    terminal_pos: LogPos | None = None
    decisive: ParsedDump | None = None     # the register dump the diagnosis rests on
    decisive_pos: LogPos | None = None
    decisive_source: str = ""              # "first-fault", "last-record", "cpu-reset", ...
    resets_before: int = 0
    earlier_faults: list[tuple[LogPos, int | None]] = field(default_factory=list)
    records_after: int = 0                 # records logged after the terminal event
    cpu: int | None = None
    start_index: int | None = None         # index of the first chain record in the window
    complete: bool = True                  # False if the chain may extend before the window
    notes: list[str] = field(default_factory=list)
    has_int_records: bool = False          # the window holds -d int records at all
    has_reset_records: bool = False        # the window holds -d cpu_reset records at all
    dumps: list[tuple[LogPos, ParsedDump]] = field(default_factory=list)  # chain dumps, in order
    prior_dump: ParsedDump | None = None   # the last dump logged before the chain (CR3 etc.)

    @property
    def fatal(self) -> bool:
        return self.outcome in ("triple-fault", "reset", "exception")


def _is_noise(rec: Interrupt) -> bool:
    return not rec.is_exception


def _parent_ok_without_old(parent: Interrupt) -> bool:
    """With ``old`` = none the parent was benign (QEMU does not remember benign vectors)."""
    if not parent.is_exception:
        return True  # IRQ or software INT
    return vector_info(parent.vector).cls is ExceptionClass.BENIGN


def _find_parent(records: list[Record], child_idx: int, child: Interrupt | None,
                 old: int | None, window_start: int) -> tuple[int | None, bool]:
    """Index of the record whose delivery raised ``child``; (None, cut) if none.

    ``cut`` is True when the search ran into the start of the window (the parent may lie
    before it).
    """
    seen = 0
    j = child_idx - 1
    while j >= window_start and seen < LOOKBACK:
        rec = records[j]
        if isinstance(rec, Interrupt):
            seen += 1
            if old is not None:
                if rec.vector == old and not rec.is_int and (
                        child is None or rec.same_context(child) or rec.ip is None):
                    return j, False
            else:
                if child is not None and rec.same_context(child) and _parent_ok_without_old(rec):
                    return j, False
                return None, False  # the record right before is not our parent
        elif isinstance(rec, (TripleFault, CpuReset)):
            return None, False
        j -= 1
    return None, j < window_start and seen < LOOKBACK


def _check_before(records: list[Record], idx: int) -> CheckException | None:
    if idx > 0 and isinstance(records[idx - 1], CheckException):
        return records[idx - 1]  # type: ignore[return-value]
    return None


def _walk_back(records: list[Record], start_idx: int, chain: FatalChain) -> list[ChainEvent]:
    """Events from the record at ``start_idx`` (an Interrupt or a bare CheckException) back to
    the trigger, returned in time order."""
    events: list[ChainEvent] = []
    idx: int | None = start_idx
    visited = 0
    while idx is not None and visited < 64:
        visited += 1
        rec = records[idx]
        chain.start_index = idx
        if isinstance(rec, CheckException):  # bare: nothing delivered for it
            events.append(ChainEvent("folded", vector=rec.new, check=rec, pos=rec.pos,
                                     note=f"raised while delivering {mnemonic(rec.old)}"
                                     if rec.old is not None else ""))
            pidx, cut = _find_parent(records, idx, None, rec.old, 0)
            if pidx is None and cut:
                chain.complete = False
            idx = pidx
            continue
        assert isinstance(rec, Interrupt)
        chk = _check_before(records, idx)
        if rec.dump is not None:
            chain.dumps.append((rec.pos, rec.dump))
        if rec.is_int or rec.is_irq:
            kind = "int" if rec.is_int else "irq"
            ev = ChainEvent(kind, vector=rec.vector, error_code=rec.error_code, record=rec,
                            pos=rec.pos)
            events.append(ev)
            if rec.is_irq and idx > 0 and isinstance(records[idx - 1], HardwareInt):
                chain.start_index = idx - 1
            break  # triggers are not raised by a delivery
        if chk is not None and chk.new != rec.vector:
            # e.g. "check_exception old: 0xe new 0xd" then v=08: the #GP became the #DF.
            events.append(ChainEvent(
                "exception", vector=rec.vector, error_code=rec.error_code, record=rec,
                check=chk, pos=rec.pos))
            events.append(ChainEvent(
                "folded", vector=chk.new, check=chk, pos=chk.pos,
                note=f"{mnemonic(chk.new)} while delivering {mnemonic(chk.old)}"
                     f" became {mnemonic(rec.vector)}" if chk.old is not None else ""))
        else:
            events.append(ChainEvent("exception", vector=rec.vector, error_code=rec.error_code,
                                     record=rec, check=chk, pos=rec.pos))
        if chk is not None:
            chain.start_index = idx - 1
        old = chk.old if chk is not None else None
        pidx, cut = _find_parent(records, idx - (1 if chk else 0), rec, old, 0)
        if pidx is None and (cut or (old is not None)):
            # the parent is known to exist (old != none) but is not in the window
            if cut or old is not None:
                chain.complete = chain.complete and not cut
                if old is not None and not cut:
                    chain.notes.append(
                        f"{mnemonic(rec.vector)} at {rec.pos} was raised while delivering "
                        f"{mnemonic(old)}, but no record for it was found (another CPU's records "
                        "or a folded exception)")
        idx = pidx
    events.reverse()  # appended newest first; a folded event precedes the #DF it became
    return events


def _fatal_markers(records: list[Record]) -> list[tuple[int, str]]:
    """(index, kind) of each fatal event: 'tf' for a triple fault (one per occurrence, whether
    logged as ``Triple fault`` or only implied by ``check_exception old: 0x8``), 'reset' for a
    guest-requested reset."""
    out: list[tuple[int, str]] = []
    last_tf = -10
    for i, rec in enumerate(records):
        if isinstance(rec, CheckException) and rec.implies_triple_fault:
            nxt = records[i + 1] if i + 1 < len(records) else None
            if not isinstance(nxt, Interrupt):  # QEMU gives up: no v= record follows
                out.append((i, "tf"))
                last_tf = i
        elif isinstance(rec, TripleFault):
            if last_tf == i - 1:
                continue  # the "Triple fault" line of the check just recorded
            out.append((i, "tf"))
            last_tf = i
        elif isinstance(rec, CpuReset):
            if last_tf in (i - 1, i - 2) or rec.power_on or rec.dump is None:
                continue
            out.append((i, "reset"))
    return out


def _state_ip(d: ParsedDump | None) -> int | None:
    return d.gpr.get("rip") if d is not None and "rip" in d.seen else None


def analyze_records(records: list[Record], whole: bool = True) -> FatalChain:
    """Find the last fatal chain in ``records`` (one contiguous window of a log).

    ``whole`` says the window starts at the beginning of the file; if False and the chain
    reaches the window's first records, ``complete`` is False and the caller should read more.
    """
    chain = FatalChain()
    chain.has_int_records = any(isinstance(r, (Interrupt, CheckException, HardwareInt))
                                for r in records)
    chain.has_reset_records = any(isinstance(r, (CpuReset, TripleFault)) for r in records)
    cpus = {r.cpu for r in records if isinstance(r, CpuReset)}
    markers = _fatal_markers(records)
    tf_markers = [m for m in markers if m[1] == "tf"]

    if markers:
        idx, kind = markers[-1]
        chain.resets_before = sum(1 for m in tf_markers if m[0] < idx)
        for m_idx, _ in tf_markers:
            if m_idx >= idx:
                continue
            ip = None
            for k in range(m_idx + 1, min(m_idx + 4, len(records))):
                r = records[k]
                if isinstance(r, CpuReset):
                    ip = _state_ip(r.dump)
                    break
            if ip is None:
                for k in range(m_idx - 1, max(m_idx - 8, -1), -1):
                    r = records[k]
                    if isinstance(r, Interrupt):
                        ip = r.ip
                        break
            chain.earlier_faults.append((records[m_idx].pos, ip))
        if kind == "tf":
            _analyze_triple_fault(records, idx, chain)
        else:
            _analyze_reset(records, idx, chain)
    else:
        _analyze_no_fatal(records, chain)

    if len(cpus) == 1:
        chain.cpu = next(iter(cpus))
    if chain.reset is not None:
        chain.cpu = chain.reset.cpu
    if len(cpus) > 1:
        chain.notes.append(f"the log shows {len(cpus)} CPUs (CPU Reset lines for "
                           f"{', '.join(map(str, sorted(cpus)))}); QEMU does not say which CPU an "
                           "interrupt record belongs to, so records of other CPUs may be mixed in")
    if whole:
        chain.complete = True  # nothing lies before the window
    elif chain.start_index is not None and chain.start_index <= 1:
        chain.complete = False
    _pick_decisive(chain)
    _prior_dump(records, chain)
    return chain


def _analyze_triple_fault(records: list[Record], idx: int, chain: FatalChain) -> None:
    chain.outcome = "triple-fault"
    rec = records[idx]
    chain.terminal_pos = rec.pos
    tf_idx = idx
    events: list[ChainEvent] = []
    if isinstance(rec, CheckException):
        # the exception raised while delivering #DF, then the walk back through the chain
        events = _walk_back(records, idx, chain)
        if events and events[-1].kind == "folded" and events[-1].check is rec:
            last = events.pop()
            tail_note = (f"{mnemonic(rec.new)} while delivering #DF: triple fault"
                         if rec.old == 8 else last.note)
            events.append(ChainEvent("folded", vector=rec.new, check=rec, pos=rec.pos,
                                     note=tail_note))
        if idx + 1 < len(records) and isinstance(records[idx + 1], TripleFault):
            tf_idx = idx + 1
            chain.terminal_pos = records[tf_idx].pos
        else:
            chain.notes.append("triple fault inferred from `check_exception old: 0x8` (the log has "
                               "no `Triple fault` line: add -d cpu_reset)")
    else:
        # a "Triple fault" line without check_exception lines: a -d cpu_reset-only log
        chain.start_index = idx
    events.append(ChainEvent("triple-fault", pos=records[tf_idx].pos))
    for k in range(tf_idx + 1, min(tf_idx + 3, len(records))):
        r = records[k]
        if isinstance(r, CpuReset):
            chain.reset = r
            break
    end = records.index(chain.reset) if chain.reset is not None else tf_idx
    chain.records_after = len(records) - end - 1
    chain.events = events
    _set_trigger_and_first(chain)


def _analyze_reset(records: list[Record], idx: int, chain: FatalChain) -> None:
    rec = records[idx]
    assert isinstance(rec, CpuReset)
    chain.outcome = "reset"
    chain.reset = rec
    chain.terminal_pos = rec.pos
    chain.start_index = idx
    chain.records_after = len(records) - idx - 1
    chain.events = [ChainEvent("reset", pos=rec.pos,
                               note="CPU reset without a triple fault: the guest asked for it "
                                    "(keyboard controller 0xfe, port 0xcf9, ACPI reset) or the "
                                    "monitor did")]
    _set_trigger_and_first(chain)


def _analyze_no_fatal(records: list[Record], chain: FatalChain) -> None:
    last_exc = None
    for i in range(len(records) - 1, -1, -1):
        r = records[i]
        if isinstance(r, Interrupt) and r.is_exception:
            last_exc = i
            break
    if last_exc is None:
        chain.outcome = "clean"
        return
    later = [r for r in records[last_exc + 1:] if isinstance(r, Interrupt)]
    running = {(r.cs, r.ip) for r in later if not (r.dump is not None and r.dump.halted)}
    exc = records[last_exc]
    assert isinstance(exc, Interrupt)
    if len(running) > 2:
        chain.outcome = "clean"
        chain.notes.append(
            f"{exc.mnemonic} at {exc.pos} was handled: {len(later)} interrupts followed with the "
            f"CPU running at {len(running)} different addresses")
        return
    chain.outcome = "exception"
    chain.terminal_pos = exc.pos
    chain.records_after = len(records) - last_exc - 1
    chain.events = _walk_back(records, last_exc, chain)
    if later:
        chain.notes.append(f"{len(later)} interrupt records followed the exception; the CPU "
                           "stayed idle (halted or at the same address): the handler stopped it")
    _set_trigger_and_first(chain)


def _set_trigger_and_first(chain: FatalChain) -> None:
    evs = chain.events
    if evs and evs[0].kind in ("irq", "int"):
        chain.trigger = evs[0]
    for ev in evs:
        if ev.kind in ("exception", "folded") and ev.vector is not None and ev.vector < 32:
            chain.first_fault = ev
            break
    if chain.first_fault is None and chain.trigger is not None and chain.trigger.kind == "int" \
            and chain.trigger.vector is not None and chain.trigger.vector < 32:
        chain.first_fault = chain.trigger  # INT3/INTO or "int $0x0e" with nothing after


def _pick_decisive(chain: FatalChain) -> None:
    ff = chain.first_fault
    if ff is not None and ff.dump is not None and ff.dump.complete:
        chain.decisive, chain.decisive_pos, chain.decisive_source = ff.dump, ff.pos, "first-fault"
        return
    for ev in reversed(chain.events):
        if ev.dump is not None and ev.dump.complete:
            chain.decisive, chain.decisive_pos, chain.decisive_source = ev.dump, ev.pos, "chain"
            return
    if chain.reset is not None and chain.reset.dump is not None and not chain.reset.power_on:
        chain.decisive = chain.reset.dump
        chain.decisive_pos = chain.reset.pos
        chain.decisive_source = "cpu-reset"
        return
    for ev in chain.events:
        if ev.dump is not None:
            chain.decisive, chain.decisive_pos, chain.decisive_source = ev.dump, ev.pos, "partial"
            return


def _prior_dump(records: list[Record], chain: FatalChain) -> None:
    """The last complete dump logged before the chain (to see what changed, e.g. CR3)."""
    if chain.start_index is None:
        return
    for k in range(chain.start_index - 1, max(chain.start_index - 200, -1), -1):
        r = records[k]
        d = getattr(r, "dump", None)
        if isinstance(r, (Interrupt, RegisterDump)) and d is not None and d.complete:
            chain.prior_dump = d
            return
        if isinstance(r, (TripleFault, CpuReset)):
            return
