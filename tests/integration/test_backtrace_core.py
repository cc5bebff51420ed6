"""`kdiag bt --core` offline, on a dump-guest-memory core of the i386 kernel after a #PF.

Scenario pagefault: fault_level1 -> fault_level2 -> fault_write writes to 0xE0000000; the
#PF handler prints its JOS backtrace and idles. From the idle loop, kdiag must unwind back
through the handler, across the exception frame, into the faulting function and its callers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdiag.cli import main
from qmp_tools import launcher as L

ROOT = Path(__file__).resolve().parents[2]
ELF = ROOT / "kernel" / "build" / "kernel-i386.elf"


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    L.build_kernel("i386")
    out = tmp_path_factory.mktemp("core") / "dump.elf"
    vm = L.QemuInstance.start(L.QemuConfig(kernel="i386", scenario="pagefault", build=False))
    try:
        vm.wait_serial(r"\[kernel\] ready", timeout=60, halt_check=False)
        vm.qmp("stop")
        vm.qmp("dump-guest-memory", paging=False, protocol=f"file:{out}")
        yield out
    finally:
        vm.stop()


def run_bt(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["bt", *args]) == 0
    return capsys.readouterr().out


def test_full_backtrace_crosses_the_page_fault(core: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = run_bt(capsys, "--core", str(core), "--elf", str(ELF)).splitlines()
    names = [m.group(1) for ln in out if (m := re.match(r"#\d+\s+0x[0-9a-f]+ in (\w+)", ln))]
    assert names[:1] == ["kernel_idle"]
    assert names[names.index("_alltraps"):] == ["_alltraps", "fault_write", "fault_level2",
                                                "fault_level1", "i386_init", "relocated"]
    marker = out.index("--- interrupt 14 (#PF) from CPL0 ---")
    assert " in fault_write+" in out[marker + 1] and "(0xe0000000, 0xdead0077)" in out[marker + 1]
    assert out[-1] == "(end of the frame-pointer chain (frame pointer 0))"


def test_json_has_the_error_code(core: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(run_bt(capsys, "--core", str(core), "--elf", str(ELF), "--json"))
    (b,) = [f["boundary"] for f in doc["frames"] if f["boundary"]]
    assert (b["vector"], b["mnemonic"], b["error_code"], b["from_cpl"]) == (14, "#PF", "0x2", 0)


def test_jos_format_offline(core: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_bt(capsys, "--core", str(core), "--elf", str(ELF), "--format", "jos")
    lines = out.splitlines()
    assert lines[0] == "Stack backtrace:"
    assert re.match(r"  ebp [0-9a-f]{8}  eip [0-9a-f]{8}  args( [0-9a-f]{8}){5}$", lines[1])
    assert "kern/trap.c" in out and "kern/entry.S" in lines[-1]


def test_limit_and_missing_elf(core: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_bt(capsys, "--core", str(core), "--elf", str(ELF), "3")
    assert out.splitlines()[-1] == "(limit of 3 frames reached)"
    assert main(["bt", "--core", str(core), "--elf", "/nonexistent.elf"]) == 2
