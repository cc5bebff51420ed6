"""Watch a QEMU for the triple fault and diagnose it live over QMP.

QEMU 7.2 with ``-no-reboot -no-shutdown`` reports a triple fault as ``SHUTDOWN {guest: true,
reason: guest-reset}`` followed by ``STOP``, and keeps the faulting CPU state and memory
(notes section 3). :func:`watch` waits for that (or finds the machine already in the
``shutdown`` run state when it connects), reads the machine through :class:`QmpTarget`, runs
the triage engine's live rules (the ones the gdb ``kd triage`` uses), prints the report (text,
or the ``kdiag triage --json`` document) and, if asked, saves a ``dump-guest-memory`` ELF core
(``paging: false``) that ``kdiag triage --core FILE`` analyses offline with the same result.

It never resumes, resets or stops the guest: a guest paused at start (``-S``) is left for
gdb or the user to continue.

Outcomes and exit codes (``kdiag watch``)::

    triple-fault   1   diagnosed (the report names the cause)
    shutdown       0   the guest powered off / shut down by itself, nothing to diagnose
    timeout        4   --timeout expired first
    (errors)       2   QEMU gone, refused QMP, unusable state: one line on stderr
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kdiag.errors import KdiagError, TargetGone, UsageError
from qmp_tools.session import (
    Event,
    QmpSession,
    event_time,
    is_triple_fault,
    stop_reason,
)
from qmp_tools.target import QmpTarget

log = logging.getLogger(__name__)

EXIT_CLEAN = 0
EXIT_DIAGNOSED = 1
EXIT_ERROR = 2
EXIT_TIMEOUT = 4
DUMP_TIMEOUT = 600.0

#: Events that end the wait: the machine stopped for good (or QEMU is about to exit).
STOP_EVENTS = frozenset({"SHUTDOWN", "GUEST_PANICKED"})


@dataclass
class WatchResult:
    """What :func:`watch` saw and did. Times are wall-clock seconds (QEMU's event clock)."""

    outcome: str  # "triple-fault", "shutdown", "panicked", "timeout"
    exit_code: int
    event: Event | None = None
    already_stopped: bool = False
    diagnosis: Any = None
    document: dict[str, Any] | None = None
    text: str = ""
    core_path: Path | None = None
    fault_time: float | None = None
    report_time: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def latency(self) -> float | None:
        """Seconds from QEMU's SHUTDOWN event to the printed report (None if unknown)."""
        if self.fault_time is None or self.report_time is None:
            return None
        return self.report_time - self.fault_time


def classify(event: Event) -> str | None:
    """``triple-fault`` / ``shutdown`` / ``panicked`` for an event that ends the watch."""
    if is_triple_fault(event):
        return "triple-fault"
    if event.get("event") == "GUEST_PANICKED":
        return "panicked"
    if stop_reason(event) is not None:
        return "shutdown"
    return None


def halted_for_good(session: QmpSession) -> bool:
    """Every CPU in HLT with RFLAGS.IF=0 (only an NMI would wake it). False if unknown."""
    from kdiag.qemulog.regdump import halted_for_good as dump_halted

    try:
        return dump_halted(session.hmp("info registers -a"))
    except KdiagError:
        return False


def wait_for_stop(session: QmpSession, timeout: float | None = None,
                  say: Callable[[str], None] = lambda s: None) -> tuple[str, Event | None, bool]:
    """Block until the guest stops for good: ``(outcome, event, already_stopped)``.

    ``already_stopped`` is True when QEMU was in the ``shutdown`` run state at connect time
    (a triple fault happened before we attached; the reason is no longer known, the state
    is). A guest reboot (``RESET`` without -no-reboot) is reported through ``say`` and the
    wait goes on: the faulting state is gone by then.
    """
    status = session.status()
    for ev in session.take_events():
        kind = classify(ev)
        if kind:
            return kind, ev, False
    if status == "shutdown":
        return "triple-fault", None, True
    if status == "guest-panicked":
        return "panicked", None, True
    if status in ("prelaunch", "paused", "debug"):
        say(f"the guest is {status}; waiting for it to be continued (kdiag never resumes it)")
    deadline = None if timeout is None else time.monotonic() + timeout
    warned_reboot = False
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return "timeout", None, False
        got = session.wait_event(lambda e: e.get("event") in STOP_EVENTS | {"RESET"},
                                 timeout=remaining)
        if got is None:
            return "timeout", None, False
        if got.get("event") == "RESET":
            if (got.get("data") or {}).get("guest") and not warned_reboot:
                warned_reboot = True
                say("the guest reset itself and QEMU rebooted it: its state is lost; start "
                    "QEMU with -no-reboot -no-shutdown so a triple fault freezes the machine")
            continue
        kind = classify(got)
        if kind:
            return kind, got, False


def diagnose(target: QmpTarget, elfs: Sequence[str | Path] = (),
             log_path: str | Path | None = None) -> tuple[Any, str, dict[str, Any]]:
    """Run the live triage on ``target``; return ``(diagnosis, text, json_document)``.

    ``kdiag.triage.engine.triage_state`` applies the rules ``kd triage`` uses to the live
    registers, reading the IDT/GDT/TSS/page tables through ``target``. With ``log_path`` (the
    QEMU ``-d int,cpu_reset`` log of this run) the fatal chain from the log is added.
    """
    from kdiag.render.triage import to_json, to_text
    from kdiag.triage.engine import triage_path, triage_state
    from kdiag.triage.location import KernelImage, parse_elf_spec

    image = KernelImage([parse_elf_spec(str(e)) for e in elfs]) if elfs else None
    state = target.state()
    chain = triage_path(log_path, image=image).chain if log_path else None
    diag = triage_state(state, target=target, image=image, chain=chain)
    return diag, to_text(diag), to_json(diag)


def save_core(session: QmpSession, path: str | Path, timeout: float = DUMP_TIMEOUT) -> Path:
    """``dump-guest-memory`` (ELF, ``paging: false``) into ``path`` (replaced atomically).

    QEMU writes the file itself, so it goes to a private temporary name in the same directory
    first (QEMU creates it read-only for its owner), then replaces ``path``.
    """
    dest = Path(path).expanduser().resolve()
    if not dest.parent.is_dir():
        raise UsageError(f"--save-core: directory {dest.parent} does not exist")
    tmpdir = Path(tempfile.mkdtemp(prefix=".kdiag-core-", dir=dest.parent))  # 0700
    tmp = tmpdir / "core.elf"
    try:
        session.execute("dump-guest-memory", {"paging": False, "protocol": f"file:{tmp}"},
                        timeout=timeout)
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
        with contextlib.suppress(OSError):
            tmpdir.rmdir()
    return dest


def watch(session: QmpSession, *, elfs: Sequence[str | Path] = (), timeout: float | None = None,
          save_core_path: str | Path | None = None, as_json: bool = False,
          log_path: str | Path | None = None,
          out: TextIO | None = None, err: TextIO | None = None) -> WatchResult:
    """Wait for the triple fault on ``session``, diagnose it, print the report.

    Reports go to ``out`` (stdout), progress lines to ``err`` (stderr). Raises KdiagError
    (TargetGone when QEMU exits instead of freezing) for the caller to print.
    """
    out = out or sys.stdout
    err = err or sys.stderr

    def say(text: str) -> None:
        print(f"kdiag: {text}", file=err, flush=True)

    outcome, event, already = wait_for_stop(session, timeout, say)
    result = WatchResult(outcome=outcome, exit_code=EXIT_CLEAN, event=event,
                         already_stopped=already,
                         fault_time=event_time(event) if event else None)
    if outcome == "timeout":
        result.exit_code = EXIT_TIMEOUT
        say(f"no triple fault within {timeout:g}s" if timeout else "no triple fault")
        if halted_for_good(session):
            say("the guest is halted with interrupts disabled: its kernel stopped itself (a "
                "panic, or an exception its handler caught), which is not a triple fault; "
                "`kdiag triage LOG` diagnoses handled exceptions from the QEMU -d log")
        return result
    if outcome == "shutdown":
        reason = stop_reason(event or {}) or "unknown"
        say(f"the guest shut down ({reason}); no fault to diagnose")
        return result
    if already:
        say("the machine was already stopped in the shutdown state when kdiag attached (as "
            "after a triple fault under -no-reboot -no-shutdown); diagnosing that state")
    elif outcome == "panicked":
        say("the guest reported a panic (GUEST_PANICKED); diagnosing the stopped state")
    target = QmpTarget(session, owns_session=False)
    try:
        try:
            diag, text, doc = diagnose(target, elfs, log_path)
        except TargetGone as gone:
            raise TargetGone(f"{gone}: QEMU exited after the guest stopped; start it with "
                             "-no-reboot -no-shutdown so the machine stays frozen") from gone
        result.diagnosis, result.text, result.document = diag, text, doc
        if as_json:
            out.write(json.dumps(doc, indent=2) + "\n")
        else:
            out.write(text.rstrip("\n") + "\n")
        out.flush()
        result.report_time = time.time()
        result.exit_code = int(getattr(diag, "exit_code", EXIT_DIAGNOSED))
        if result.latency is not None:
            say(f"report printed {result.latency * 1000:.0f} ms after the triple fault")
        if save_core_path is not None:
            t0 = time.monotonic()
            result.core_path = save_core(session, save_core_path)
            say(f"saved the machine to {result.core_path} ({time.monotonic() - t0:.1f}s); "
                f"analyse it later with: kdiag triage --core {result.core_path}")
    finally:
        target.close()
    return result


def watch_path(qmp_path: str, elfs: Sequence[str | Path] = (), timeout: float | None = None,
               save_core_path: str | Path | None = None, as_json: bool = False,
               log_path: str | Path | None = None) -> int:
    """Connect to ``qmp_path``, :func:`watch`, return the exit code (errors: one line, 2).

    The entry point of ``kdiag run --watch``.
    """
    try:
        with QmpSession.connect(qmp_path) as session:
            return watch(session, elfs=elfs, timeout=timeout, save_core_path=save_core_path,
                         as_json=as_json, log_path=log_path).exit_code
    except KdiagError as error:
        print(f"kdiag: error: {error}", file=sys.stderr)
        return error.exit_code
