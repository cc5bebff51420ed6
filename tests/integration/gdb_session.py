"""Drive a real gdb against QEMU's gdbstub for the integration tests: MI (pygdbmi) and console.

``MiGdb`` runs gdb with ``--interpreter=mi3`` (what IDEs use); ``console_gdb`` runs a plain
``gdb -batch`` with a command file (what a person types). Both load the kdiag extension with
``source gdbext/init.py`` and attach after ``set architecture i386:x86-64``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qmp_tools import launcher as L

ROOT = Path(__file__).resolve().parents[2]
INIT = ROOT / "gdbext" / "init.py"
KERNEL_ELF = ROOT / "kernel" / "build" / "kernel-x86_64.elf"


class GdbError(RuntimeError):
    """gdb answered a command with an error result; ``message`` is gdb's text."""

    def __init__(self, command: str, message: str, log: str) -> None:
        super().__init__(f"gdb: {command}: {message}")
        self.message = message
        self.log = log


def setup_lines(port: int, elf: Path | None = KERNEL_ELF) -> list[str]:
    lines = ["set pagination off", "set confirm off", "set width 0",
             "set architecture i386:x86-64"]
    if elf is not None:
        lines.append(f"file {elf}")
    return lines + [f"source {INIT}", f"target remote 127.0.0.1:{port}"]


def mi_until(controller: Any, done: Any, timeout: float) -> list[dict[str, Any]]:
    """Read a pygdbmi ``GdbController``'s records until one satisfies ``done`` (all of them
    returned), or raise TimeoutError with the last few after ``timeout`` seconds."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = controller.get_gdb_response(timeout_sec=0.05, raise_error_on_timeout=False)
        out += batch
        if any(done(r) for r in batch):
            return out
    raise TimeoutError(f"gdb did not answer in {timeout}s: {out[-5:]}")


class MiGdb:
    """gdb over MI3. ``console(cmd)`` returns the ``~`` console text of a CLI command."""

    def __init__(self, port: int, elf: Path | None = KERNEL_ELF) -> None:
        from pygdbmi.gdbcontroller import GdbController

        self.gdb = GdbController(command=["gdb", "--nx", "--quiet", "--interpreter=mi3"],
                                 time_to_check_for_additional_output_sec=0.01)
        self.last: list[dict[str, Any]] = []
        for line in setup_lines(port, elf):
            self.console(line)

    def _until(self, done: Any, timeout: float) -> list[dict[str, Any]]:
        return mi_until(self.gdb, done, timeout)

    def console(self, line: str, timeout: float = 60.0) -> str:
        """Run a CLI command through ``-interpreter-exec console``; raise GdbError on error."""
        esc = line.replace("\\", "\\\\").replace('"', '\\"')
        self.gdb.write(f'-interpreter-exec console "{esc}"', read_response=False)
        resp = self._until(lambda r: r.get("type") == "result", timeout)
        self.last = resp
        result = next(r for r in resp if r.get("type") == "result")
        log = "".join(r.get("payload") or "" for r in resp if r.get("type") == "log")
        if result.get("message") == "error":
            payload = result.get("payload") or {}
            raise GdbError(line, str(payload.get("msg", payload)), log)
        return "".join(r.get("payload") or "" for r in resp if r.get("type") == "console")

    def json(self, line: str) -> Any:
        return json.loads(self.console(line))

    def cont_to(self, location: str, timeout: float = 120.0) -> dict[str, Any]:
        """Break at ``location``, continue until it is hit, delete the breakpoint."""
        self.console(f"break {location}")
        self.gdb.write("-exec-continue", read_response=False)
        resp = self._until(lambda r: r.get("type") == "notify" and r.get("message") == "stopped",
                           timeout)
        self.console("delete")
        return next(r for r in resp if r.get("message") == "stopped")["payload"] or {}

    def cont(self, timeout: float = 60.0) -> dict[str, Any]:
        """Continue and wait for the next stop; return the *stopped payload."""
        self.gdb.write("-exec-continue", read_response=False)
        return self.wait_stopped(timeout)

    def interrupt_after(self, seconds: float, timeout: float = 30.0) -> dict[str, Any]:
        self.gdb.write("-exec-continue", read_response=False)
        time.sleep(seconds)
        self.gdb.write("-exec-interrupt", read_response=False)
        resp = self._until(lambda r: r.get("type") == "notify" and r.get("message") == "stopped",
                           timeout)
        return next(r for r in resp if r.get("message") == "stopped")["payload"] or {}

    def wait_stopped(self, timeout: float = 120.0) -> dict[str, Any]:
        resp = self._until(lambda r: r.get("type") == "notify" and r.get("message") == "stopped",
                           timeout)
        return next(r for r in resp if r.get("message") == "stopped")["payload"] or {}

    def close(self) -> None:
        try:
            self.gdb.write("-target-detach", read_response=False, timeout_sec=1)
        except Exception:
            pass
        try:
            self.gdb.exit()
        except Exception:
            pass


def console_gdb(port: int, commands: list[str], tmp: Path, elf: Path | None = KERNEL_ELF,
                timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    """Run plain ``gdb -batch -x FILE`` (console interpreter) with kdiag loaded."""
    script = tmp / "cmds.gdb"
    script.write_text("\n".join(setup_lines(port, elf) + commands + ["detach"]) + "\n")
    return subprocess.run(["gdb", "--nx", "-batch", "-x", str(script)], capture_output=True,
                          text=True, timeout=timeout)


def kdiag_lines(serial: str) -> dict[str, dict[str, str]]:
    """``KDIAG KEY a=b c=d`` serial lines -> {KEY: {a: b, c: d}} (last one wins; STACK by name)."""
    out: dict[str, dict[str, str]] = {}
    for line in serial.splitlines():
        line = line.strip()
        if not line.startswith("KDIAG "):
            continue
        parts = line.split()
        fields = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
        key = parts[1]
        if key == "STACK":
            key = f"STACK {fields.get('name')}"
        out[key] = fields
    return out


@contextlib.contextmanager
def vm_with_gdb(config: L.QemuConfig, elf: Path | None = KERNEL_ELF
                ) -> Iterator[tuple[L.QemuInstance, MiGdb]]:
    """Start QEMU with ``config`` (it should ask for a gdbstub, usually ``wait_gdb=True``),
    attach a :class:`MiGdb` with kdiag loaded, and stop both on the way out."""
    vm = L.QemuInstance.start(config)
    gdb = None
    try:
        assert vm.gdb_port is not None, "the config asks for no gdbstub"
        gdb = MiGdb(vm.gdb_port, elf)
        yield vm, gdb
    finally:
        if gdb is not None:
            gdb.close()
        vm.stop()
