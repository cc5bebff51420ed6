"""kd bt on the bundled i386 JOS-style kernel, under real QEMU + gdb (pygdbmi).

One VM (scenario healthy, gdbstub, started halted with -S). gdb breaks at every call of
mon_backtrace; at each stop `kd bt --format jos` must print exactly the block the kernel then
prints on serial (test_backtrace(5), the five-function chain, the int3 trap frame, the
int $0x30 from CPL3), and `kd bt` must cross the interrupt frames gdb's own `bt` cannot.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmp_tools import launcher as L
from tests.integration.gdb_session import MiGdb, vm_with_gdb

ROOT = Path(__file__).resolve().parents[2]
ELF = ROOT / "kernel" / "build" / "kernel-i386.elf"

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed")


# gdb over MI (pygdbmi) with the kdiag extension loaded; the other backtrace modules import it
# from here under this name.
GdbSession = MiGdb


def serial_blocks(text: str) -> list[list[str]]:
    """The "Stack backtrace:" blocks the kernel printed, each as its list of lines."""
    blocks: list[list[str]] = []
    cur: list[str] | None = None
    for line in text.splitlines():
        line = line.rstrip("\r")
        if line == "Stack backtrace:":
            cur = [line]
            blocks.append(cur)
        elif cur is not None and (line.startswith("  ebp ") or line.startswith("         ")):
            cur.append(line)
        else:
            cur = None
    return blocks


@pytest.fixture(scope="module")
def session() -> Iterator[tuple[L.QemuInstance, GdbSession]]:
    L.build_kernel("i386")
    cfg = L.QemuConfig(kernel="i386", scenario="healthy", gdb_port=0, wait_gdb=True, build=False)
    with vm_with_gdb(cfg, ELF) as pair:
        yield pair


@pytest.fixture(scope="module")
def stops(session: tuple[L.QemuInstance, GdbSession]) -> list[dict[str, str]]:
    """At each mon_backtrace call: kdiag's jos and full backtraces, and gdb's own bt."""
    vm, gdb = session
    gdb.console("break mon_backtrace")
    out = []
    for _ in range(4):
        payload = gdb.cont()
        assert payload.get("reason") == "breakpoint-hit", payload
        out.append({"jos": gdb.console("kd bt --format jos"), "full": gdb.console("kd bt"),
                    "json": gdb.console("kd bt --json"), "gdb": gdb.console("bt 12")})
    gdb.console("delete")
    gdb.gdb.write("-exec-continue", read_response=False)
    vm.wait_serial(r"\[kernel\] ready", timeout=60, halt_check=False)
    return out


def test_jos_format_matches_the_kernel_line_by_line(session, stops) -> None:
    vm, _ = session
    blocks = serial_blocks(vm.serial_text())
    assert len(blocks) == 4
    for i, (stop, block) in enumerate(zip(stops, blocks, strict=True)):
        ours = stop["jos"].rstrip("\n").split("\n")
        assert ours == block, f"stop {i}:\n" + "\n".join(ours) + "\n---\n" + "\n".join(block)


def test_test_backtrace_chain_has_arguments(stops) -> None:
    full = stops[0]["full"]
    frames = re.findall(r"in test_backtrace\+0x[0-9a-f]+ \((0x[0-9a-f]+)\)", full)
    assert [int(a, 16) for a in frames] == [0, 1, 2, 3, 4, 5]
    assert "i386_init" in full
    assert "(end of the frame-pointer chain (frame pointer 0))" in full


def test_five_distinct_functions_with_arguments(stops) -> None:
    full = stops[1]["full"]
    for n, args in ((5, "0x11, 0x22, 0x33, 0x44, 0x55"), (4, "0x11, 0x22, 0x33, 0x44"),
                    (3, "0x11, 0x22, 0x33"), (2, "0x11, 0x22"), (1, "0x11")):
        assert re.search(rf"in chain_level{n}\+0x[0-9a-f]+ \({args}\) at kern/init\.c:\d+",
                         full), full


def test_int3_trap_frame_is_crossed(stops) -> None:
    full = stops[2]["full"].splitlines()
    marker = full.index("--- interrupt 3 (#BP) from CPL0 ---")
    assert "_alltraps" in full[marker - 1] and "[entry stub]" in full[marker - 1]
    # the interrupted function itself, which JOS's naive walk skips
    assert re.match(r"#\d+\s+0x[0-9a-f]+ in brk_inner\+0x[0-9a-f]+ \(0x2, 0xb0b\) "
                    r"at kern/init\.c:\d+", full[marker + 1]), full[marker + 1]
    assert "brk_inner" not in stops[2]["jos"]
    assert "brk_outer" in full[marker + 2]


def test_user_kernel_boundary_is_crossed(stops) -> None:
    full = stops[3]["full"].splitlines()
    marker = full.index("--- interrupt 48 (INT 0x30) from CPL3 ---")
    below = full[marker + 1:]
    names = [re.search(r" in (\w+)", ln).group(1) for ln in below if ln.startswith("#")]
    assert names == ["ulevel3", "ulevel2", "ulevel1", "umain"]
    assert all("[user]" in ln for ln in below if ln.startswith("#"))
    assert full[-1] == "(end of the call chain (return address 0))"


def test_json_names_the_boundary(stops) -> None:
    import json

    doc = json.loads(stops[3]["json"])
    bounds = [f["boundary"] for f in doc["frames"] if f["boundary"]]
    assert len(bounds) == 1
    b = bounds[0]
    assert (b["vector"], b["from_cpl"], b["to_cpl"], b["stack_switch"]) == (48, 3, 0, True)
    assert b["stub"] == "_alltraps"
    assert doc["frames"][0]["function"] == "mon_backtrace"


def test_gdb_bt_does_not_reach_the_interrupted_code(stops) -> None:
    """The reason kd bt exists: gdb's own bt stops (or derails) at the first trap frame."""
    for stop in stops[2:]:
        assert "brk_inner" not in stop["gdb"] and "ulevel3" not in stop["gdb"]


def test_stabs_lookups_equal_addr2line_on_the_kernel() -> None:
    """Every function start (ELF STT_FUNC and STABS N_FUN) and 2,000 random addresses of the
    executable sections of kernel-i386.elf (padding included): kdiag's STABS answer equals
    binutils' addr2line (which reads STABS), except where addr2line has no line either (the
    multiboot header: data, answered from the symbol table as "entry.o:?")."""
    import random
    import subprocess

    from kdiag.symbols import Symbolizer
    from kdiag.symbols.elffile import SHF_EXECINSTR, ElfFile
    from kdiag.symbols.stabs import StabTable, read_lines

    L.build_kernel("i386")
    sym = Symbolizer(use_cache=False)
    sym.add_elf(ELF)
    with ElfFile(ELF) as e:
        funcs = [v for _n, v, size, info, _s in e.symbols() if info & 0xF == 2]
        stab_funcs = read_lines(StabTable(e.section_data(".stab"), e.section_data(".stabstr")))
        code = [a for sc in e.sections if sc.flags & SHF_EXECINSTR
                for a in range(sc.addr, sc.addr + sc.size)]
    starts = sorted(set(funcs) | {f[0] for f in stab_funcs.funcs})
    addrs = starts + random.Random(6).sample(code, 2000)
    out = subprocess.run(["addr2line", "-f", "-e", str(ELF)], input="\n".join(map(hex, addrs)),
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(starts) >= 60 and len(out) == 2 * len(addrs)
    compared = 0
    for n, a in enumerate(addrs):
        expected = (out[2 * n], out[2 * n + 1].split(" (")[0])
        if expected[1].endswith(":?"):
            continue
        loc = sym.lookup(a)
        assert loc is not None and loc.source == "stabs", hex(a)
        assert (loc.function or "??", f"{loc.file}:{loc.line}") == expected, hex(a)
        compared += 1
    assert compared >= len(addrs) - 10
