"""The generated CLion/RustRover configuration, run the way the IDE runs it, against the real kernel.

1. ``kdiag ide clion --project DIR --gdb 127.0.0.1:PORT`` writes ``.run/kdiag-qemu.run.xml``
   (Remote Debug), ``.run/kdiag-qemu-start.run.xml`` (its before-launch step) and ``.gdbinit``;
2. the before-launch step runs exactly as written (interpreter, script, options, working
   directory) and must *exit* 0 once gdb may attach (the IDE waits for before-launch steps to
   finish): that is ``kdiag ide start``, which leaves ``kdiag run --wait-gdb`` running detached;
3. gdb (MI, as CLion drives it) starts in the project directory with the two lines the user adds
   to ``~/.gdbinit`` (given here as ``-iex``), so it reads the project's ``.gdbinit`` (the
   architecture and ``source gdbext/init.py``); then the configuration's ``symbolFile`` and
   ``remoteCommand`` (``-file-exec-and-symbols``, ``-target-select remote``) and continue;
4. the kernel boots to ``[kernel] ready``; the pause stops it and ``kd gdt --json`` shows the
   GDT the kernel reports about itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from qmp_tools import launcher as L
from tests.integration.gdb_session import kdiag_lines
from tests.integration.test_ide_vscode import Mi

READY = re.compile(r"\[kernel\] ready")


def options(path: Path) -> tuple[ET.Element, dict[str, str]]:
    cfg = ET.parse(path).getroot().find("configuration")
    assert cfg is not None
    return cfg, {o.get("name", ""): o.get("value", "") for o in cfg.findall("option")}


def wait_for(path: Path, rx: re.Pattern[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if rx.search(text):
            return text
        time.sleep(0.1)
    pytest.fail(f"no {rx.pattern!r} in {path}:\n{text[-3000:]}")


def test_clion_configuration_attaches_and_kd_gdt_works(tmp_path: Path,
                                                       built_kernel: Path) -> None:
    project = tmp_path / "myproject"
    project.mkdir()
    port = L.pick_port("127.0.0.1", 0)
    gen = subprocess.run([sys.executable, "-m", "kdiag", "ide", "clion", "--project",
                          str(project), "--gdb", f"127.0.0.1:{port}", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert gen.returncode == 0, gen.stderr
    home_lines = json.loads(gen.stdout)["home_gdbinit"]
    remote, _ = options(project / ".run" / "kdiag-qemu.run.xml")
    start, opts = options(project / ".run" / "kdiag-qemu-start.run.xml")
    assert remote.get("type") == "CLion_Remote" and remote.get("remoteCommand") == \
        f"127.0.0.1:{port}"
    task = remote.find("method/option[@name='RunConfigurationTask']")
    assert task is not None and task.get("run_configuration_name") == start.get("name")

    # the before-launch step, as the IDE runs a script-file shell configuration
    argv = [opts["INTERPRETER_PATH"], opts["SCRIPT_PATH"], *opts["SCRIPT_OPTIONS"].split()]
    step = subprocess.run(argv, cwd=opts["SCRIPT_WORKING_DIRECTORY"], capture_output=True,
                          text=True, timeout=300)
    assert step.returncode == 0, step.stdout + step.stderr
    assert f"waiting for gdb on 127.0.0.1:{port}" in step.stdout
    m = re.search(r"\(pid (\d+)\); its output: (\S+)", step.stdout)
    assert m, step.stdout
    run_pid, run_log = int(m.group(1)), Path(m.group(2))
    mi = None
    try:
        gdb = remote.findtext("debugger") or "gdb"
        mi = Mi(gdb, cwd=project, extra=[a for line in home_lines for a in ("-iex", line)])
        result, _ = mi.send("-gdb-set mi-async on")
        assert result["message"] == "done"
        result, _ = mi.send(f"-file-exec-and-symbols {remote.get('symbolFile')}")
        assert result["message"] == "done", result
        result, text = mi.send("help kd")  # the project's .gdbinit loaded the extension
        assert result["message"] == "done" and "gdt" in text, text
        result, _ = mi.send(f"-target-select remote {remote.get('remoteCommand')}")
        assert result["message"] == "connected", result
        result, _ = mi.send("-exec-continue")
        assert result["message"] == "running"
        wait_for(run_log, READY, 300)
        mi.gdb.write("-exec-interrupt", read_response=False)
        mi.until(lambda r: r.get("type") == "notify" and r.get("message") == "stopped", 60)
        result, text = mi.send("kd gdt --json")
        assert result["message"] == "done", result
        doc = json.loads(text)
        kd = kdiag_lines(run_log.read_text(errors="replace"))
        assert int(doc["base"], 16) == int(kd["GDTR"]["base"], 16)
        tss = {e["selector"] & ~7: e for e in doc["entries"]}[int(kd["TR"]["sel"], 16) & ~7]
        assert int(tss["base"], 16) == int(kd["TSS"]["base"], 16)
    finally:
        if mi is not None:
            mi.close()
        try:
            os.killpg(run_pid, signal.SIGINT)  # kdiag run stops its QEMU on Ctrl-C
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(run_pid):
            time.sleep(0.1)
        if _alive(run_pid):
            os.killpg(run_pid, signal.SIGKILL)
        if run_log.parent.name.startswith("kdiag-ide-"):  # `kdiag ide start`'s private log dir
            shutil.rmtree(run_log.parent, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (the detached `kdiag run` is not our child: no wait())."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
