"""kd bt from the i386 kernel's #PF handler after a fault in user mode (scenario user-pagefault).

ulevel1 -> ulevel2 -> ulevel3 (CPL3) write to address 0; the handler calls mon_backtrace.
`kd bt --format jos` must equal the kernel's own block; `kd bt` must cross the exception
frame (with the CPU's stack switch) into the faulting user instruction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmp_tools import launcher as L
from tests.integration.test_backtrace_i386 import ELF, GdbSession, serial_blocks


@pytest.fixture(scope="module")
def stop() -> Iterator[dict[str, str]]:
    L.build_kernel("i386")
    vm = L.QemuInstance.start(L.QemuConfig(kernel="i386", scenario="user-pagefault",
                                           gdb_port=0, wait_gdb=True, build=False))
    gdb = None
    try:
        assert vm.gdb_port is not None
        gdb = GdbSession(vm.gdb_port, Path(ELF))
        gdb.console("break mon_backtrace")
        assert gdb.cont().get("reason") == "breakpoint-hit"
        out = {"jos": gdb.console("kd bt --format jos"), "full": gdb.console("kd bt"),
               "json": gdb.console("kd bt --json")}
        gdb.console("delete")
        gdb.gdb.write("-exec-continue", read_response=False)
        vm.wait_serial(r"\[kernel\] ready", timeout=60, halt_check=False)
        out["serial"] = vm.serial_text()
        yield out
    finally:
        if gdb is not None:
            gdb.close()
        vm.stop()


def test_jos_block_matches_the_kernel(stop: dict[str, str]) -> None:
    (block,) = serial_blocks(stop["serial"])
    assert stop["jos"].rstrip("\n").split("\n") == block
    # the kernel's naive walk goes from the handler through the trap frame into user code
    assert len(block) >= 1 + 2 * 5 and "kern/user.c" in block[-3]


def test_crosses_into_the_faulting_user_instruction(stop: dict[str, str]) -> None:
    full = stop["full"].splitlines()
    marker = full.index("--- interrupt 14 (#PF) from CPL3 ---")
    assert re.match(r"#\d+\s+0x[0-9a-f]+ in ulevel3\+0x[0-9a-f]+ \(0x1, 0x1111, 0x2222\) "
                    r"at kern/user\.c:21  \[user\]", full[marker + 1]), full[marker + 1]
    # and on, by the user's frame pointers, to the end of the user's call chain
    names = [m.group(1) for ln in full[marker + 1:] if (m := re.match(r"#\d+\s+\S+ in (\w+)", ln))]
    assert names == ["ulevel3", "ulevel2", "ulevel1", "umain"], full
    assert all("[user]" in ln for ln in full[marker + 1:] if ln.startswith("#"))
    assert full[-1] == "(end of the call chain (return address 0))"
    doc = json.loads(stop["json"])
    (f,) = [f for f in doc["frames"] if f["boundary"]]
    b = f["boundary"]
    assert (b["error_code"], b["stack_switch"], b["from_cpl"], b["to_cpl"]) == ("0x6", True, 3, 0)
    assert (b["vector"], b["stub"], b["recognized_by"], b["found_by"]) == \
        (14, "_alltraps", "symbol", "scan")
    serial_pf = re.search(r"page fault va 00000000 eip ([0-9a-f]{8})", stop["serial"])
    assert serial_pf and int(f["pc"], 16) == int(serial_pf.group(1), 16)
