"""Integration fixtures: real QEMU (TCG), the bundled kernel, real gdb. One VM per module.

Use ``boot_module_vm(request, QemuConfig(...))`` from a module-scoped fixture, or the ready-made
``healthy_vm`` (booted with a gdbstub on a free loopback port, stopped after the module).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmp_tools import launcher as L

ROOT = Path(__file__).resolve().parents[2]
READY = r"\[kernel\] ready"


def qemu_pids_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line contains ``text`` (leak checks)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and "qemu-system" in cmd and state != "Z":
            pids.append(int(entry))
    return pids


@pytest.fixture(scope="session")
def built_kernel() -> Path:
    """Build the x86-64 kernel once per session (incremental make)."""
    return L.build_kernel("x86_64")


def start_vm(config: L.QemuConfig, ready: str | None = READY,
             timeout: float = 240.0) -> L.QemuInstance:
    vm = L.QemuInstance.start(config)
    try:
        if ready is not None:
            vm.wait_serial(ready, timeout=timeout)
    except BaseException:
        vm.stop()
        raise
    return vm


@pytest.fixture(scope="module")
def healthy_vm(built_kernel: Path) -> Iterator[L.QemuInstance]:
    """The healthy kernel, booted to its ready line, gdbstub on a free loopback port."""
    vm = start_vm(L.QemuConfig(scenario="healthy", gdb_port=0, build=False))
    try:
        yield vm
    finally:
        vm.stop()
