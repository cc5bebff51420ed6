"""The triage engine: a QEMU log (or a live CPU state) in, a :class:`Diagnosis` out.

Entry points:

- :func:`triage_path` / :func:`triage_stream`: offline, from a ``-d int,cpu_reset`` log. The
  log is read from its end (see :mod:`kdiag.qemulog.tail`): a window of the last 256 KiB grows
  (x4) until the last fatal chain and the record before it are inside, up to 32 MiB; if the tail
  holds nothing fatal, the rest of the file is searched backwards for a triple fault by byte
  pattern. So a 1 GiB log ending in a triple fault costs a few hundred KiB of reading.
- :func:`triage_records`: the same over records already parsed (tests).
- :func:`triage_state`: live (gdb ``kd triage``, QMP watch): a CpuState and a Target, no log.

Reset counting trade-off: ``resets_before`` counts triple faults inside the scanned window only
(``resets_before_exact`` is False when the window did not start at byte 0, meaning "at least
N"); ``count_all_resets=True`` counts them in the whole file by a byte search (reads it all, at
about the speed of ``grep -c``).
"""

from __future__ import annotations

from kdiag._log import warning
from kdiag.errors import InputError
from kdiag.qemulog.records import (
    CheckException,
    CpuReset,
    HardwareInt,
    Interrupt,
    LogPos,
    Record,
    RegisterDump,
    SmmEvent,
    TripleFault,
)
from kdiag.qemulog.tail import count_occurrences, read_window, rfind_any, stream_size
from kdiag.triage.chain import ChainEvent, FatalChain, analyze_records
from kdiag.triage.facts import Facts, hx
from kdiag.triage.model import Diagnosis
from kdiag.triage.rank import rank
from kdiag.triage.rules import run_rules
from kdiag.x86.exceptions import decode_page_fault_error
from kdiag.x86.state import CpuState

TYPE_CHECKING = False  # typing's constant without importing typing (start-up cost: kdiag._record)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import BinaryIO

    from kdiag.target.base import Target
    from kdiag.triage.location import KernelImage
    from kdiag.triage.memory import MemCheck
    from kdiag.unwind.frames import Backtrace


INITIAL_WINDOW = 256 << 10
MAX_WINDOW = 32 << 20
GROWTH = 4
TF_NEEDLES = (b"\nTriple fault", b"check_exception old: 0x8 new")
QEMU_RECORDS = (CheckException, Interrupt, HardwareInt, TripleFault, CpuReset, SmmEvent,
                RegisterDump)

FLAGS_HINT = "-d int,cpu_reset -no-reboot"


def _check_binary(stream: BinaryIO, size: int, name: str) -> None:
    probes = [0] + ([max(0, size - 4096)] if size > 4096 else [])
    for off in probes:
        stream.seek(off)
        block = stream.read(4096)
        if block.count(b"\0") > 8 or (block and sum(b < 9 or 13 < b < 32 for b in block)
                                      > len(block) // 10):
            raise InputError(f"{name}: binary data, not a QEMU -d text log")


def triage_path(path: str | Path, image: KernelImage | None = None,
                count_all_resets: bool = False, target: Target | None = None) -> Diagnosis:
    """Triage the log at ``path``. Raises InputError for unreadable, binary or foreign files.

    With ``target`` (a core dump or a frozen live machine of the same run) the memory-backed
    rules also read the IDT, GDT, TSS and page tables; the chain and registers come from the log.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from err
    with f:
        return triage_stream(f, str(path), image=image, count_all_resets=count_all_resets,
                             target=target)


def triage_stream(stream: BinaryIO, name: str = "<log>", image: KernelImage | None = None,
                  count_all_resets: bool = False, target: Target | None = None) -> Diagnosis:
    size = stream_size(stream)
    if size == 0:
        raise InputError(f"{name}: empty file")
    _check_binary(stream, size, name)
    window = INITIAL_WINDOW
    while True:
        start = max(0, size - window)
        records = read_window(stream, start)
        chain = analyze_records(records, whole=start == 0)
        if start == 0 or (chain.fatal and chain.complete) or window >= MAX_WINDOW:
            break
        window *= GROWTH
    scanned = size - start
    notes: list[str] = []
    if not chain.fatal and start > 0:
        x = rfind_any(stream, TF_NEEDLES, start + 64)
        if x is not None:
            wstart = max(0, x - (1 << 20))
            wrecs = read_window(stream, wstart, min(size, x + (256 << 10)))
            chain2 = analyze_records(wrecs, whole=wstart == 0)
            if chain2.fatal:
                notes.append(f"the last triple fault is at byte {x} of {size}; the guest "
                             "rebooted and the log goes on after it without another one")
                chain, records, start = chain2, wrecs, wstart
        else:
            notes.append(f"no triple fault anywhere in the log (searched all {size} bytes)")
        scanned = size
    if not any(isinstance(r, QEMU_RECORDS) for r in records):
        where = "the file" if start == 0 else f"the last {size - start} bytes"
        raise InputError(f"{name}: no QEMU -d records in {where} (not a QEMU -d int/cpu_reset "
                         "log?)")
    diag = diagnose(chain, image=image, target=target)
    diag.notes = notes + diag.notes
    diag.log_path, diag.log_size, diag.scanned_bytes = name, size, scanned
    diag.resets_before = chain.resets_before
    diag.resets_before_exact = start == 0
    if count_all_resets and start > 0:
        needle = b"\nTriple fault" if chain.has_reset_records else b"check_exception old: 0x8 new"
        diag.resets_before += count_occurrences(stream, needle, 0, start)
        diag.resets_before_exact = True
    _reset_notes(diag)
    return diag


def triage_records(records: list[Record], image: KernelImage | None = None,
                   whole: bool = True) -> Diagnosis:
    chain = analyze_records(records, whole=whole)
    diag = diagnose(chain, image=image)
    diag.resets_before = chain.resets_before
    diag.resets_before_exact = whole
    _reset_notes(diag)
    return diag


def triage_state(state: CpuState, target: Target | None = None,
                 image: KernelImage | None = None, chain: FatalChain | None = None,
                 outcome: str = "triple-fault") -> Diagnosis:
    """Live triage of a stopped CPU (e.g. QEMU frozen by -no-reboot -no-shutdown after a triple
    fault). Without a log the chain is unknown; rules use the registers and, through
    ``target``, the IDT, GDT, TSS and page tables. ``chain`` may come from a log read alongside.
    """
    if chain is None:
        chain = FatalChain(outcome=outcome)
        if outcome == "triple-fault":
            chain.events = [ChainEvent("triple-fault")]
        chain.cpu = state.cpu_index
    return diagnose(chain, image=image, target=target, live_state=state)


def _to_state(chain: FatalChain) -> tuple[CpuState | None, int, LogPos | None]:
    d = chain.decisive
    if d is None:
        return None, 0, None
    return d.to_state(chain.cpu or 0), d.width, chain.decisive_pos


def _final_state(chain: FatalChain) -> tuple[CpuState | None, LogPos | None]:
    if chain.reset is not None and chain.reset.dump is not None and not chain.reset.power_on \
            and chain.reset.dump.complete:
        return chain.reset.dump.to_state(chain.reset.cpu), chain.reset.pos
    for pos, d in chain.dumps:  # dumps are collected newest first
        if d.complete:
            return d.to_state(chain.cpu or 0), pos
    return None, None


def diagnose(chain: FatalChain, image: KernelImage | None = None, target: Target | None = None,
             live_state: CpuState | None = None) -> Diagnosis:
    """Run the rules over ``chain`` and build the Diagnosis (pure but for ELF/target reads)."""
    state: CpuState | None
    final: CpuState | None
    if live_state is not None:
        state, width, pos = live_state, (64 if live_state.efer & (1 << 10) else 32), None
        final, fpos = live_state, None
    else:
        state, width, pos = _to_state(chain)
        final, fpos = _final_state(chain)
        if final is None:
            final, fpos = state, pos
    diag = Diagnosis(outcome=chain.outcome, chain=chain, registers=state, registers_width=width,
                     registers_pos=pos,
                     registers_source="live" if live_state is not None else chain.decisive_source)
    ff = chain.first_fault
    if ff is not None and ff.ip is not None:
        diag.first_fault_ip = ff.ip
    elif chain.fatal and state is not None:
        diag.first_fault_ip = state.rip
        diag.first_fault_ip_inferred = True
    if image is not None and diag.first_fault_ip is not None:
        try:
            diag.location = image.locate(diag.first_fault_ip, state)
        except Exception as err:  # noqa: BLE001 - a location is a bonus, never fatal
            warning(__name__, "locating %#x failed: %s", diag.first_fault_ip, err)
    facts = Facts(chain=chain, state=state, state_pos=pos, dump=chain.decisive, final=final,
                  final_pos=fpos, target=target, image=image, location=diag.location,
                  live=live_state is not None)
    if target is not None and (final or state) is not None:
        diag.memory = _inspect(target, final or state, chain)  # type: ignore[arg-type]
        facts.extra["memory"] = diag.memory
        if image:
            diag.backtrace = _backtrace(target, image, final or state)  # type: ignore[arg-type]
    diag.causes = rank(run_rules(facts)) if chain.fatal else []
    diag.notes = list(chain.notes) + _notes(chain, diag)
    diag.verdict = _verdict(diag)
    return diag


BACKTRACE_LIMIT = 24


def _backtrace(target: Target, image: KernelImage, st: CpuState) -> Backtrace | None:
    """The call stack at ``st`` through the same unwinder and symbolizer as ``kd bt`` /
    ``kdiag bt`` (CFI, frame pointers, interrupt frames); None when it cannot start."""
    from kdiag.unwind import unwind

    try:
        return unwind(target, image.symbolizer, state=st, limit=BACKTRACE_LIMIT)
    except Exception as err:  # noqa: BLE001 - a backtrace is a bonus, never fatal
        warning(__name__, "backtrace failed: %s", err)
        return None


def _inspect(target: Target, st: CpuState, chain: FatalChain) -> list[MemCheck]:
    """The memory checks for ``st``: the gates of the chain's vectors (from a log), else of
    #DF (a triple fault is a failed #DF delivery) and the likely first fault (#PF when CR2 is
    set, else #GP)."""
    vecs: list[int] = []
    from_cpl = None
    software = False
    if chain.trigger is not None and chain.trigger.vector is not None:
        vecs.append(chain.trigger.vector)
        from_cpl = chain.trigger.cpl
        software = chain.trigger.kind == "int"
    vecs += [e.vector for e in chain.events if e.vector is not None]
    if not vecs:
        vecs = [14 if st.cr2 else 13]
    if chain.outcome == "triple-fault":
        vecs.append(8)
    from kdiag.triage.memory import inspect_state  # x86 table decoders: only with memory

    try:
        return inspect_state(target, st, tuple(dict.fromkeys(vecs)), from_cpl, software)
    except Exception as err:  # noqa: BLE001 - memory checks are a bonus, never fatal
        warning(__name__, "memory checks failed: %s", err)
        return []


def _notes(chain: FatalChain, diag: Diagnosis) -> list[str]:
    notes: list[str] = []
    if chain.outcome == "triple-fault":
        if not chain.has_int_records:
            if diag.registers is None:
                notes.append(
                    "the log holds no fault state: with -no-reboot and only -d cpu_reset QEMU logs "
                    "`Triple fault` but no register dump. Add -d int (keep -no-reboot), or drop "
                    "-no-reboot to get the `CPU Reset` dump of the faulting state")
            elif diag.registers_source == "live":
                notes.append(
                    "diagnosed from the machine state alone (no -d int log): the exception "
                    "vectors, error codes and the order of the faults are unknown; this rests on "
                    "the frozen CPU's registers and the tables in its memory. Give the run's log "
                    f"too (QEMU {FLAGS_HINT}) for the full chain")
            else:
                notes.append(
                    "the log has no -d int records: the exception vectors, error codes and the "
                    "order of the faults are unknown; this diagnosis rests on the register dump "
                    "QEMU logged before the reset (RIP, CR2, IDTR/GDTR/TR, CPL). Run with "
                    f"{FLAGS_HINT} for the full chain")
        elif chain.reset is None and not chain.has_reset_records:
            notes.append("the log has no -d cpu_reset records; add it to see `Triple fault` and "
                         "the state before each reset")
    if chain.outcome == "clean" and not chain.has_int_records:
        if chain.has_reset_records:
            notes.append("the log only has QEMU's start-up `CPU Reset` dumps (power-on state): no "
                         f"exception information. Run with {FLAGS_HINT}")
        else:
            notes.append(f"the log has no interrupt records; run QEMU with {FLAGS_HINT}")
    if not chain.complete:
        notes.append("the chain may start before the part of the log that was read")
    if chain.records_after and chain.outcome in ("triple-fault", "reset"):
        notes.append(f"{chain.records_after} records follow the {chain.outcome} (the guest "
                     "rebooted and ran on)")
    if diag.first_fault_ip_inferred and diag.first_fault_ip is not None:
        src = "the live RIP" if diag.registers_source == "live" else \
            "the RIP of the register dump"
        notes.append(f"first_fault.ip {diag.first_fault_ip:#x} is {src} (the faulting "
                     "instruction when delivery failed)")
    return notes


def _reset_notes(diag: Diagnosis) -> None:
    n = diag.resets_before
    if not n:
        return
    at_least = "" if diag.resets_before_exact else "at least "
    ips = [ip for _, ip in diag.chain.earlier_faults if ip is not None]
    text = f"{at_least}{n} earlier triple fault{'s' if n != 1 else ''} in the log"
    if not diag.resets_before_exact:
        text += " (counted in the part read; --count-resets counts the whole file)"
    if ips:
        uniq = list(dict.fromkeys(ips))
        cur = diag.first_fault_ip
        same = cur is not None and all(ip == cur for ip in ips)
        text += "; " + ("all at the same RIP: a reboot loop" if same else
                        "at RIP " + ", ".join(f"{ip:#x}" for ip in uniq[-4:]))
    diag.notes.append(text)


def _verdict(diag: Diagnosis) -> str:
    ch = diag.chain
    ff = ch.first_fault
    top = diag.causes[0] if diag.causes else None
    likely = f"; most likely {top.id}: {top.summary}" if top else ""
    where = ""
    if diag.location is not None:
        where = f" in {diag.location.where}"
    if ch.outcome == "clean":
        return "no fatal exception in the log"
    if ch.outcome == "reset":
        st = diag.registers
        return (f"the guest reset the CPU (no triple fault) at RIP {hx(st.rip if st else None)}"
                f"{where}{likely}")
    if ff is None:
        what = "triple fault" if ch.outcome == "triple-fault" else ch.outcome
        ip = diag.first_fault_ip
        if ip is None:
            return f"{what}, but the log holds no fault state (no -d int records, no register " \
                   "dump after it)"
        how = ("no log: judged from the live machine state and its memory"
               if diag.registers_source == "live" else
               "no -d int records: judged from the register dump")
        return f"{what} with RIP {hx(ip)}{where} ({how}){likely}"
    desc = ff.mnemonic
    if ff.vector == 14 and ff.error_code is not None and ff.cr2 is not None:
        desc += f" ({decode_page_fault_error(ff.error_code).describe()}, CR2={ff.cr2:#x})"
    elif ff.error_code:
        desc += f" (error code {ff.error_code:#x})"
    trig = ""
    if ch.trigger is not None and ch.trigger is not ff:
        t = ch.trigger
        trig = (f" while delivering {'IRQ' if t.kind == 'irq' else 'INT'} {t.vector:#04x}"
                if t.vector is not None else "")
    at = f" at {ff.cs:04x}:{ff.ip:#x}" if ff.cs is not None and ff.ip is not None else ""
    if ch.outcome == "triple-fault":
        kinds = [e.mnemonic for e in ch.events if e.kind in ("exception", "folded")]
        path = " -> ".join(dict.fromkeys(kinds)) if kinds else desc
        return f"triple fault: {desc}{trig}{at}{where} escalated ({path} -> triple fault){likely}"
    return f"exception: {desc}{trig}{at}{where} reached a handler and the guest stopped{likely}"
