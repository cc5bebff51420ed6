"""Foundation: the bundled UEFI loader + kernel boot under OVMF, and `kdiag run` behaves."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qmp_tools import launcher as L
from tests.integration.conftest import ROOT, qemu_pids_mentioning

KDIAG = [sys.executable, "-m", "kdiag"]


def expected_stages() -> list[str]:
    """Stage lines listed in kernel/STAGES.md (lines starting with `[loader]`/`[kernel]`)."""
    text = (ROOT / "kernel" / "STAGES.md").read_text()
    return re.findall(r"^\s*[-*]?\s*`(\[(?:loader|kernel)\][^`]*)`", text, re.M)


def test_healthy_boot_prints_every_stage_in_order(healthy_vm: L.QemuInstance) -> None:
    lines = healthy_vm.serial_lines()
    stages = expected_stages()
    assert len(stages) >= 8, "kernel/STAGES.md lists the stage lines"
    pos = 0
    for stage in stages:
        prefix = stage.split("0x")[0].split("...")[0].strip()
        for i in range(pos, len(lines)):
            if prefix in lines[i]:
                pos = i + 1
                break
        else:
            pytest.fail(f"stage {stage!r} missing or out of order in serial output:\n"
                        + "\n".join(lines[-30:]))
    assert lines[pos - 1].startswith("[kernel] ready")


def test_healthy_keeps_running_after_ready(healthy_vm: L.QemuInstance) -> None:
    assert healthy_vm.status() == "running"
    assert not healthy_vm.guest_halted_for_good()


def test_gdbstub_listens_on_loopback_only(healthy_vm: L.QemuInstance) -> None:
    assert healthy_vm.gdb_port
    assert f"tcp:127.0.0.1:{healthy_vm.gdb_port}" in healthy_vm.argv
    listening = Path("/proc/net/tcp").read_text()
    port_hex = f":{healthy_vm.gdb_port:04X}"
    rows = [r.split() for r in listening.splitlines()[1:] if port_hex in r.split()[1]]
    assert rows and all(r[1].startswith("0100007F") for r in rows)  # 127.0.0.1


def test_run_dir_and_qmp_socket_are_private(healthy_vm: L.QemuInstance) -> None:
    assert (healthy_vm.run_dir.stat().st_mode & 0o777) == 0o700
    assert healthy_vm.qmp_path.parent == healthy_vm.run_dir


def run_kdiag(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(KDIAG + args, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def test_kdiag_run_batch_exits_0_at_ready_and_leaves_no_qemu(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_kdiag(["run", "--batch", "--no-build", "--run-dir", str(run_dir)])
    assert proc.returncode == 0, proc.stderr
    assert "[kernel] ready" in proc.stdout
    assert "guest is ready" in proc.stderr
    assert qemu_pids_mentioning(str(run_dir)) == []


def test_kdiag_run_timeout_exits_4_with_last_lines(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_kdiag(["run", "--batch", "--no-build", "--timeout", "1", "--run-dir", str(run_dir)])
    assert proc.returncode == 4, proc.stderr
    assert "timeout" in proc.stderr and "last serial lines" in proc.stderr
    assert qemu_pids_mentioning(str(run_dir)) == []


def test_kdiag_run_ctrl_c_leaves_no_qemu(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(KDIAG + ["run", "--no-build", "--run-dir", str(run_dir),
                                     "--serial", str(tmp_path / "serial.log")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 30
    while not qemu_pids_mentioning(str(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert qemu_pids_mentioning(str(run_dir)), "QEMU did not start"
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert qemu_pids_mentioning(str(run_dir)) == []


def test_gdb_port_in_use_is_one_line_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = run_kdiag(["run", "--batch", "--no-build", "--gdb", f"127.0.0.1:{port}",
                          "--run-dir", str(tmp_path / "run")])
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "in use" in proc.stderr


def test_kdiag_run_batch_exits_3_on_triple_fault(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_kdiag(["run", "--batch", "--no-build", "--scenario", "idt-missing",
                      "--run-dir", str(run_dir)])
    assert proc.returncode == 3, proc.stderr
    assert "triple" in proc.stderr.lower()
    assert qemu_pids_mentioning(str(run_dir)) == []
