"""kd bt on the bundled x86-64 kernel (DWARF, frame pointers, CFI in .debug_frame), real QEMU.

One VM, scenario null-deref, started halted with a gdbstub:
1. at the first kdiag_line() call during boot (in a system call from user mode), kdiag's
   frames equal gdb's own `bt` (this kernel marks its entry stubs as CFI signal frames, so
   gdb crosses them too: "<signal handler called>");
2. after the NULL read faults, the kernel prints "KDIAG BACKTRACE <rip> <return addresses>"
   (its own frame-pointer walk from the trap frame) and halts; interrupted there, `kd bt`
   must cross the #PF frame and list exactly those addresses after the boundary.
Also: DWARF lookups on kernel-x86_64.elf equal addr2line's.
"""

from __future__ import annotations

import random
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdiag.symbols import Symbolizer
from kdiag.symbols.elffile import ElfFile
from qmp_tools import launcher as L
from tests.integration.gdb_session import vm_with_gdb
from tests.integration.test_backtrace_i386 import GdbSession

ROOT = Path(__file__).resolve().parents[2]
ELF = ROOT / "kernel" / "build" / "kernel-x86_64.elf"


@pytest.fixture(scope="module")
def built() -> Path:
    return L.build_kernel("x86_64")


@pytest.fixture(scope="module")
def session(built: Path) -> Iterator[tuple[L.QemuInstance, GdbSession]]:
    cfg = L.QemuConfig(kernel="x86_64", scenario="null-deref", gdb_port=0, wait_gdb=True,
                       build=False)
    with vm_with_gdb(cfg, ELF) as pair:
        yield pair


def frame_names(text: str) -> list[str]:
    return [m.group(1) for ln in text.splitlines()
            if (m := re.match(r"#\d+\s+(?:0x[0-9a-f]+ in )?(\w+)", ln))]


@pytest.fixture(scope="module")
def boot_stop(session: tuple[L.QemuInstance, GdbSession]) -> dict[str, str]:
    _vm, gdb = session
    gdb.console("break kdiag_line")
    payload = gdb.cont(timeout=180)
    assert payload.get("reason") == "breakpoint-hit", payload
    out = {"kd": gdb.console("kd bt"), "gdb": gdb.console("bt")}
    gdb.console("delete")
    return out


@pytest.fixture(scope="module")
def fault_stop(session: tuple[L.QemuInstance, GdbSession], boot_stop: dict[str, str]
               ) -> dict[str, str]:
    vm, gdb = session
    gdb.gdb.write("-exec-continue", read_response=False)
    line = vm.wait_serial(r"KDIAG BACKTRACE", timeout=180, halt_check=False)
    vm.qmp("stop")  # gdb sees the VM stop (SIGINT) and gets control back
    gdb._until(lambda r: r.get("type") == "notify" and r.get("message") == "stopped", 60)
    return {"line": line, "kd": gdb.console("kd bt"), "json": gdb.console("kd bt --json"),
            "gdb": gdb.console("bt 20")}


def test_kd_bt_equals_gdb_bt_in_a_healthy_call_chain(boot_stop: dict[str, str]) -> None:
    # gdb shows the stub frame as "<signal handler called>"; kdiag names the stub and marks
    # the boundary; the rest must agree frame for frame
    gdb_names = [n for n in frame_names(boot_stop["gdb"])]
    ours = [n for n in frame_names(boot_stop["kd"]) if n != "syscall_entry"]
    assert gdb_names[0] == "kdiag_line" and len(gdb_names) >= 3
    assert ours == gdb_names
    assert "--- syscall from CPL3 ---" in boot_stop["kd"]


def test_kd_bt_crosses_the_page_fault_frame(fault_stop: dict[str, str]) -> None:
    import json

    expected = [int(x, 16) for x in fault_stop["line"].split("BACKTRACE", 1)[1].split()]
    doc = json.loads(fault_stop["json"])
    frames = doc["frames"]
    k, k2 = [i for i, f in enumerate(frames) if f["boundary"]]  # the #PF, then the syscall
    b = frames[k]["boundary"]
    assert (b["vector"], b["mnemonic"], b["from_cpl"]) == (14, "#PF", 0)
    assert b["error_code"] == "0x0" and b["stub"] in ("isr_common", "isr_stubs")
    after = [int(f["pc"], 16) for f in frames[k:]]
    assert after[:len(expected)] == expected
    assert frames[k]["function"] == "sc_null_deref"
    assert "--- interrupt 14 (#PF) from CPL0 ---" in fault_stop["kd"]
    assert frames[k2]["boundary"]["text"] == "--- syscall from CPL3 ---"
    assert frames[k2]["function"] == "user_entry" and frames[k2]["cpl"] == 3


def test_dwarf_lookups_equal_addr2line(built: Path) -> None:
    sym = Symbolizer()
    sym.add_elf(ELF)
    with ElfFile(ELF) as e:
        funcs = [v for _n, v, size, info, _s in e.symbols() if info & 0xF == 2 and size]
        text = e.section(".text")
        assert text is not None
        rng = random.Random(5)
        addrs = funcs + [rng.randrange(text.addr, text.addr + text.size) for _ in range(500)]
    out = subprocess.run(["addr2line", "-f", "-i", "-a", "-e", str(ELF)],
                         input="\n".join(map(hex, addrs)), capture_output=True, text=True,
                         check=True).stdout
    blocks = re.split(r"(?m)^0x[0-9a-f]+\n", out)[1:]
    for a, block in zip(addrs, blocks, strict=True):
        lines = block.splitlines()
        exp = [(lines[i], lines[i + 1].split(" (disc")[0]) for i in range(0, len(lines), 2)]
        if exp[0][1].startswith("??"):
            continue
        loc = sym.lookup(a)
        assert loc is not None
        assert [(f.function, f"{f.file}:{f.line}") for f in loc.frames()] == exp, hex(a)
