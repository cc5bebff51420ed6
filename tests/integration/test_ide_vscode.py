"""The generated VS Code configuration, run the way VS Code runs it, against the real kernel.

1. ``kdiag ide vscode --project DIR --gdb 127.0.0.1:PORT`` writes launch.json/tasks.json;
2. the ``preLaunchTask`` is started from tasks.json exactly as written (command + args, cwd) and
   considered ready when a line matches its problem matcher's ``endsPattern`` (VS Code's rule
   for background tasks);
3. gdb runs in MI mode (pygdbmi) and gets what cppdbg (microsoft/MIEngine,
   ``DebuggedProcess.Initialize``/``GetInitializeCommands``) sends, in its order:
   ``-gdb-set mi-async on`` (``EnableTargetAsyncOption``), every ``setupCommands`` text
   (``-interpreter-exec console "..."`` unless it is an MI command), ``set pagination off``,
   then ``customLaunchSetupCommands`` (they replace cppdbg's own ``-file-exec-and-symbols`` /
   ``-target-select``), then the ``launchCompleteCommand`` (``-exec-continue``);
4. the kernel boots to ``[kernel] ready`` (serial echoed by ``kdiag run``); the pause button
   (``-exec-interrupt``: a remote gdb is interrupted through MI, not a signal) stops it and
   ``kd gdt`` prints the GDT the kernel reports about itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qmp_tools import launcher as L
from tests.integration.gdb_session import kdiag_lines, mi_until

READY = re.compile(r"\[kernel\] ready")


class Output:
    """A process's merged stdout/stderr in a file, searched by regex."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        return self.path.read_text(errors="replace") if self.path.exists() else ""

    def wait(self, rx: re.Pattern[str] | str, proc: subprocess.Popen[bytes],
             timeout: float) -> str:
        pattern = re.compile(rx) if isinstance(rx, str) else rx
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.text().splitlines():
                if pattern.search(line):
                    return line
            if proc.poll() is not None:
                pytest.fail(f"the task exited ({proc.returncode}):\n{self.text()[-3000:]}")
            time.sleep(0.1)
        pytest.fail(f"no line matching {pattern.pattern!r}:\n{self.text()[-3000:]}")


class Mi:
    """gdb/MI the way cppdbg drives it."""

    def __init__(self, gdb: str, cwd: Path | None = None, extra: list[str] | None = None) -> None:
        """gdb with no init file at all (VS Code's case), or, given ``cwd``, gdb started in
        that directory reading its ``.gdbinit`` (not ``~/.gdbinit``: ``extra`` stands in).
        gdb looks for the local init file in the directory it starts in (``--cd`` is too
        late for that), and pygdbmi has no cwd parameter: hence the chdir around the spawn."""
        from pygdbmi.gdbcontroller import GdbController

        init = ["--nx"] if cwd is None else ["-nh"]
        with contextlib.chdir(cwd or os.getcwd()):
            self.gdb = GdbController(command=[gdb, *init, *(extra or []), "--quiet",
                                              "--interpreter=mi3"],
                                     time_to_check_for_additional_output_sec=0.01)

    def until(self, done: Any, timeout: float) -> list[dict[str, Any]]:
        return mi_until(self.gdb, done, timeout)

    def send(self, command: str, timeout: float = 60) -> tuple[dict[str, Any], str]:
        """One MIEngine launch command: returns (result record, console text)."""
        if not command.startswith("-"):
            esc = command.replace("\\", "\\\\").replace('"', '\\"')
            command = f'-interpreter-exec console "{esc}"'
        self.gdb.write(command, read_response=False)
        resp = self.until(lambda r: r.get("type") == "result", timeout)
        result = next(r for r in resp if r.get("type") == "result")
        console = "".join(r.get("payload") or "" for r in resp if r.get("type") == "console")
        return result, console

    def close(self) -> None:
        try:
            self.gdb.exit()
        except Exception:  # noqa: BLE001
            pass


@pytest.fixture
def project(tmp_path: Path) -> Path:
    d = tmp_path / "myproject"
    d.mkdir()
    return d


@pytest.fixture
def port() -> int:
    return L.pick_port("127.0.0.1", 0)


@pytest.fixture
def started(project: Path, port: int, built_kernel: Path,
            tmp_path: Path) -> Iterator[tuple[dict[str, Any], subprocess.Popen[bytes], Output]]:
    gen = subprocess.run([sys.executable, "-m", "kdiag", "ide", "vscode", "--project",
                          str(project), "--gdb", f"127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=60)
    assert gen.returncode == 0, gen.stderr
    launch = json.loads((project / ".vscode" / "launch.json").read_text())
    tasks = json.loads((project / ".vscode" / "tasks.json").read_text())
    cfg = launch["configurations"][0]
    task = next(t for t in tasks["tasks"] if t["label"] == cfg["preLaunchTask"])
    assert task["type"] == "process" and task["isBackground"]
    out = Output(tmp_path / "task.out")
    with open(out.path, "wb") as f:
        proc = subprocess.Popen([task["command"], *task["args"]], cwd=task["options"]["cwd"],
                                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        out.wait(task["problemMatcher"]["background"]["endsPattern"], proc, timeout=300)
        yield cfg, proc, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # kdiag run stops QEMU on Ctrl-C
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_vscode_configuration_attaches_and_kd_gdt_works(
        started: tuple[dict[str, Any], subprocess.Popen[bytes], Output], port: int) -> None:
    cfg, proc, out = started
    assert cfg["miDebuggerServerAddress"] == f"127.0.0.1:{port}"
    mi = Mi(cfg["miDebuggerPath"])
    try:
        result, _ = mi.send("-gdb-set mi-async on")
        assert result["message"] == "done", result
        for cmd in cfg["setupCommands"]:
            result, _ = mi.send(cmd["text"])
            assert result["message"] in ("done", "connected"), (cmd["text"], result)
        result, _ = mi.send("set pagination off")
        assert result["message"] == "done", result
        for cmd in cfg["customLaunchSetupCommands"]:  # empty: nothing may connect twice
            mi.send(cmd["text"])
        assert cfg["launchCompleteCommand"] == "exec-continue"
        result, _ = mi.send("-exec-continue")
        assert result["message"] == "running"
        out.wait(READY, proc, timeout=300)
        mi.gdb.write("-exec-interrupt", read_response=False)
        mi.until(lambda r: r.get("type") == "notify" and r.get("message") == "stopped", 60)
        result, text = mi.send("kd gdt")
        assert result["message"] == "done", result
        assert "Code segment" in text and "Traceback" not in text
        kd = kdiag_lines(out.text())
        result, text = mi.send("kd gdt --json")
        assert result["message"] == "done", result
        doc = json.loads(text)
        assert int(doc["base"], 16) == int(kd["GDTR"]["base"], 16)
        assert int(doc["limit"], 16) == int(kd["GDTR"]["limit"], 16)
        by_sel = {e["selector"] & ~7: e for e in doc["entries"]}
        cs = by_sel[int(kd["SEG"]["cs"], 16) & ~7]  # the kernel's own CS: a 64-bit code segment
        assert cs["long"] and cs["present"] and cs["dpl"] == 0 and "code" in cs["kind"].lower()
        tss = by_sel[int(kd["TR"]["sel"], 16) & ~7]  # TR's descriptor: the kernel's TSS
        assert int(tss["base"], 16) == int(kd["TSS"]["base"], 16)
    finally:
        mi.close()
