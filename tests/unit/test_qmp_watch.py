"""kdiag watch: event classification, waiting, core saving and output on a scripted session."""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kdiag.errors import TargetGone, UsageError
from qmp_tools import watch as W
from qmp_tools.session import event_filter

TRIPLE = {"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-reset"},
          "timestamp": {"seconds": 1000, "microseconds": 0}}
POWEROFF = {"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-shutdown"}}
REBOOT = {"event": "RESET", "data": {"guest": True, "reason": "guest-reset"}}


class ScriptedSession:
    """``status`` at connect, events already queued, then events that arrive while waiting."""

    def __init__(self, status: str = "running", queued: list[dict] | None = None,
                 arriving: list[dict] | None = None, dump: Callable[[str], None] | None = None,
                 dies: bool = False, registers: str = "") -> None:
        self.registers = registers
        self._status = status
        self.queued = list(queued or [])
        self.arriving = list(arriving or [])
        self.dump = dump
        self.dies = dies
        self.commands: list[tuple[str, Any]] = []
        self.address = "/fake/qmp.sock"
        self.where = self.address
        self.alive = True
        self.run_state_epoch = 0

    def status(self) -> str:
        return self._status

    def take_events(self) -> list[dict]:
        out, self.queued = self.queued, []
        return out

    def wait_event(self, accept: Any, timeout: float | None = None) -> dict | None:
        pred = accept if callable(accept) else event_filter(accept)
        while self.arriving:
            ev = self.arriving.pop(0)
            if pred(ev):
                return ev
        if self.dies:
            raise TargetGone("QEMU at /fake/qmp.sock is gone (the QMP connection closed)")
        return None

    def hmp(self, line: str, timeout: float | None = None) -> str:
        assert line == "info registers -a"
        return self.registers

    def execute(self, command: str, arguments: dict | None = None,
                timeout: float | None = None) -> Any:
        self.commands.append((command, arguments))
        if command == "dump-guest-memory" and self.dump:
            assert arguments is not None
            self.dump(arguments["protocol"].removeprefix("file:"))
            return {}
        if command == "query-status":
            return {"status": self._status, "running": self._status == "running"}
        raise AssertionError(command)


def test_classify() -> None:
    assert W.classify(TRIPLE) == "triple-fault"
    assert W.classify(POWEROFF) == "shutdown"
    assert W.classify({"event": "GUEST_PANICKED", "data": {"action": "pause"}}) == "panicked"
    assert W.classify({"event": "STOP"}) is None
    assert W.classify(REBOOT) is None


def test_wait_sees_the_triple_fault_event() -> None:
    s = ScriptedSession(arriving=[{"event": "RESUME"}, TRIPLE, {"event": "STOP"}])
    assert W.wait_for_stop(s) == ("triple-fault", TRIPLE, False)  # type: ignore[arg-type]


def test_wait_finds_an_event_queued_before_the_status_check() -> None:
    s = ScriptedSession(status="shutdown", queued=[{"event": "RESUME"}, TRIPLE])
    assert W.wait_for_stop(s) == ("triple-fault", TRIPLE, False)  # type: ignore[arg-type]


def test_already_shut_down_at_connect() -> None:
    s = ScriptedSession(status="shutdown")
    assert W.wait_for_stop(s) == ("triple-fault", None, True)  # type: ignore[arg-type]


def test_poweroff_is_not_a_fault_and_reboot_is_warned_about() -> None:
    said: list[str] = []
    s = ScriptedSession(arriving=[REBOOT, REBOOT, POWEROFF])
    assert W.wait_for_stop(s, say=said.append)[0] == "shutdown"  # type: ignore[arg-type]
    assert len(said) == 1 and "-no-reboot -no-shutdown" in said[0]


def test_paused_guest_is_left_alone_and_timeout_reported() -> None:
    said: list[str] = []
    s = ScriptedSession(status="prelaunch")
    assert W.wait_for_stop(s, timeout=0.01, say=said.append) == (  # type: ignore[arg-type]
        "timeout", None, False)
    assert "never resumes" in said[0]
    assert all(c not in ("cont", "system_reset", "stop") for c, _ in s.commands)


def fake_diagnose(target: Any, elfs: Any = (), log: Any = None) -> tuple[Any, str, dict]:
    return object(), "TRIPLE FAULT: cause idt-missing\n", {"outcome": "triple-fault",
                                                          "causes": [{"id": "idt-missing"}]}


def test_watch_prints_text_then_saves_a_core(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(W, "diagnose", fake_diagnose)
    written: list[str] = []

    def dump(path: str) -> None:  # QEMU creates the core read-only for its owner
        written.append(path)
        Path(path).write_bytes(b"\x7fELF core")
        os.chmod(path, 0o400)

    out, err = io.StringIO(), io.StringIO()
    s = ScriptedSession(arriving=[TRIPLE], dump=dump)
    (tmp_path / "crash.elf").write_text("an older core")
    res = W.watch(s, save_core_path=tmp_path / "crash.elf", out=out, err=err)  # type: ignore[arg-type]
    assert res.exit_code == W.EXIT_DIAGNOSED and res.outcome == "triple-fault"
    assert out.getvalue() == "TRIPLE FAULT: cause idt-missing\n"
    assert res.core_path == (tmp_path / "crash.elf").resolve()
    assert (tmp_path / "crash.elf").read_bytes() == b"\x7fELF core"  # replaced
    assert Path(written[0]).parent != tmp_path  # QEMU wrote into a private dir first
    assert [p.name for p in tmp_path.iterdir()] == ["crash.elf"]
    assert stat.S_IMODE((tmp_path / "crash.elf").stat().st_mode) == 0o600
    assert "kdiag triage --core" in err.getvalue()
    assert res.latency is not None  # report time vs QEMU's event timestamp
    cmd = [a for c, a in s.commands if c == "dump-guest-memory"][0]
    assert cmd["paging"] is False


def test_watch_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(W, "diagnose", fake_diagnose)
    out = io.StringIO()
    res = W.watch(ScriptedSession(status="shutdown"), as_json=True, out=out,  # type: ignore[arg-type]
                  err=io.StringIO())
    assert json.loads(out.getvalue())["causes"][0]["id"] == "idt-missing"
    assert res.already_stopped and res.latency is None


def test_watch_exit_codes_without_a_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(W, "diagnose", fake_diagnose)
    err = io.StringIO()
    res = W.watch(ScriptedSession(arriving=[POWEROFF]), out=io.StringIO(), err=err)  # type: ignore[arg-type]
    assert res.exit_code == W.EXIT_CLEAN and "shut down (guest-shutdown)" in err.getvalue()
    res = W.watch(ScriptedSession(), timeout=0.01, out=io.StringIO(),  # type: ignore[arg-type]
                  err=io.StringIO())
    assert res.exit_code == W.EXIT_TIMEOUT


def test_timeout_on_a_guest_that_halted_itself_says_so() -> None:
    halted = ("CPU#0\nRIP=ffffffff80001234 RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\n"
              "CPU#1\nRIP=ffffffff80001234 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=1\n")
    err = io.StringIO()
    W.watch(ScriptedSession(registers=halted), timeout=0.01, out=io.StringIO(),  # type: ignore[arg-type]
            err=err)
    assert "halted with interrupts disabled" in err.getvalue()
    running = halted.replace("RFL=00000002", "RFL=00000202")
    err = io.StringIO()
    W.watch(ScriptedSession(registers=running), timeout=0.01, out=io.StringIO(),  # type: ignore[arg-type]
            err=err)
    assert "halted" not in err.getvalue()


def test_qemu_exiting_instead_of_freezing_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    def gone(target: Any, elfs: Any = (), log: Any = None) -> Any:
        raise TargetGone("QEMU at /fake/qmp.sock is gone")

    monkeypatch.setattr(W, "diagnose", gone)
    with pytest.raises(TargetGone, match="-no-reboot -no-shutdown"):
        W.watch(ScriptedSession(arriving=[TRIPLE]), out=io.StringIO(),  # type: ignore[arg-type]
                err=io.StringIO())
    with pytest.raises(TargetGone):
        W.watch(ScriptedSession(dies=True), out=io.StringIO(), err=io.StringIO())  # type: ignore[arg-type]


def test_save_core_needs_an_existing_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        W.save_core(ScriptedSession(), tmp_path / "nope" / "c.elf")  # type: ignore[arg-type]


def test_watch_path_turns_errors_into_exit_codes(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert W.watch_path(str(tmp_path / "missing.sock")) == 2
    assert "kdiag: error: no QMP socket" in capsys.readouterr().err
