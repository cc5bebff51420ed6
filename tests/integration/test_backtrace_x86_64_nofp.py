"""CFI unwinding on the x86-64 kernel built with -fomit-frame-pointer, real QEMU + real gdb.

kernel/build/kernel-x86_64-nofp.elf (`make -C kernel x86_64-nofp`) is the bundled kernel with
the same flags as the default build except -fomit-frame-pointer: %rbp is an ordinary register,
so only the CFI in .debug_frame (with the entry stubs' signal-frame CIEs, augmentation "S")
describes the frames. One VM, scenario null-deref, gdb attached over MI (pygdbmi):

1. at the first kdiag_line() call (boot, inside a system call from user mode), the frames of
   `kd bt` equal gdb's own `bt`, frame for frame, found by CFI; without CFI (`--no-cfi`) the
   walk cannot follow them;
2. at the kdiag_line() call that prints "EXCEPTION ..." inside the #PF handler, `kd bt`
   crosses the exception frame into sc_null_deref (the faulting rip the kernel printed) and
   its callers, marking "--- interrupt 14 (#PF) from CPL0 ---"; the kernel's own
   frame-pointer walk ("KDIAG BACKTRACE", printed next) cannot follow them on this build;
3. the same machine saved with dump-guest-memory: `kdiag bt --core` gives the same frames.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdiag.cli import main
from qmp_tools import launcher as L
from tests.integration.gdb_session import vm_with_gdb
from tests.integration.test_backtrace_i386 import GdbSession

ROOT = Path(__file__).resolve().parents[2]
NOFP = ROOT / "kernel" / "build" / "kernel-x86_64-nofp.elf"


@pytest.fixture(scope="module")
def built() -> Path:
    L.build_kernel("x86_64")  # the loader, shared by both kernels
    subprocess.run(["make", "-s", "-C", str(ROOT / "kernel"), "x86_64-nofp"], check=True,
                   capture_output=True)
    return NOFP


@pytest.fixture(scope="module")
def session(built: Path) -> Iterator[tuple[L.QemuInstance, GdbSession]]:
    cfg = L.QemuConfig(kernel="x86_64", scenario="null-deref", gdb_port=0, wait_gdb=True,
                       build=False, elf=built)
    with vm_with_gdb(cfg, built) as pair:
        yield pair


def frame_names(text: str) -> list[str]:
    """Function names of `bt` / `kd bt` frame lines, inlined calls as frames of their own as
    gdb shows them (gdb's "<signal handler called>" and kdiag's boundary markers are not
    frames of a function and are left out)."""
    return [m.group(1) for ln in text.splitlines()
            if (m := re.match(r"(?:#\d+\s+(?:0x[0-9a-f]+ in )?|    inlined into )(\w+)", ln))]


def stop_info(gdb: GdbSession) -> dict[str, str]:
    return {"kd": gdb.console("kd bt"), "json": gdb.console("kd bt --json"),
            "nocfi": gdb.console("kd bt --no-cfi"), "gdb": gdb.console("bt 30")}


@pytest.fixture(scope="module")
def stops(session: tuple[L.QemuInstance, GdbSession], tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, object]:
    vm, gdb = session
    gdb.console("break kdiag_line")
    payload = gdb.cont(timeout=180)
    assert payload.get("reason") == "breakpoint-hit", payload
    boot = stop_info(gdb)
    gdb.console("delete")
    # the fatal report's first KDIAG line, from inside the #PF handler
    gdb.console("break kdiag_line if ((char *) $rdi)[0] == 'E' && ((char *) $rdi)[1] == 'X'")
    payload = gdb.cont(timeout=180)
    assert payload.get("reason") == "breakpoint-hit", payload
    fault = stop_info(gdb)
    gdb.console("delete")
    gdb.gdb.write("-exec-continue", read_response=False)
    line = vm.wait_serial(r"KDIAG BACKTRACE", timeout=120, halt_check=False)
    vm.qmp("stop")
    gdb._until(lambda r: r.get("type") == "notify" and r.get("message") == "stopped", 60)
    halted = {"kd": gdb.console("kd bt --json")}
    core = tmp_path_factory.mktemp("core") / "dump.elf"
    vm.qmp("dump-guest-memory", paging=False, protocol=f"file:{core}")
    return {"boot": boot, "fault": fault, "halted": halted, "kernel_bt": line,
            "serial": vm.serial_text(), "core": core}


def test_the_build_has_no_frame_pointers(built: Path) -> None:
    dis = subprocess.run(["objdump", "-d", str(built)], capture_output=True, text=True,
                         check=True).stdout
    body = dis.split("<trap_dispatch>:", 1)[1].split("\n\n", 1)[0]
    assert "mov    %rsp,%rbp" not in body  # %rbp is a general register here


def test_cfi_frames_equal_gdb_bt_deep_in_a_call_chain(stops: dict[str, object]) -> None:
    boot = stops["boot"]
    assert isinstance(boot, dict)
    gdb_names = frame_names(boot["gdb"])
    ours = [n for n in frame_names(boot["kd"]) if n != "syscall_entry"]
    assert gdb_names[0] == "kdiag_line" and len(gdb_names) >= 4, boot["gdb"]
    assert ours == gdb_names, boot["kd"] + "\n---\n" + boot["gdb"]
    doc = json.loads(boot["json"])
    methods = [f["method"] for f in doc["frames"][1:] if not f["boundary"]]
    assert methods and all(m == "cfi" for m in methods), methods
    assert "--- syscall from CPL3 ---" in boot["kd"]
    # and without CFI kdiag cannot follow this build's frames
    assert frame_names(boot["nocfi"]) != frame_names(boot["kd"])


def test_page_fault_handler_backtrace_continues_into_the_faulting_code(
        stops: dict[str, object]) -> None:
    fault = stops["fault"]
    assert isinstance(fault, dict)
    doc = json.loads(fault["json"])
    frames = doc["frames"]
    assert frames[0]["function"] == "kdiag_line"
    k, k2 = [i for i, f in enumerate(frames) if f["boundary"]]  # the #PF, then the syscall
    b = frames[k]["boundary"]
    assert (b["vector"], b["mnemonic"], b["from_cpl"], b["error_code"]) == (14, "#PF", 0, "0x0")
    # isr_common is a known stub name; its signal-frame CFI rules locate the hardware frame
    assert (b["stub"], b["recognized_by"], b["found_by"]) == ("isr_common", "symbol", "cfi")
    assert "--- interrupt 14 (#PF) from CPL0 ---" in fault["kd"]
    # the interrupted instruction is the rip the kernel reports for the fault
    rip = re.search(r"EXCEPTION vector=0xe .* rip=(0x[0-9a-f]+)", str(stops["serial"]))
    assert rip is not None
    assert int(frames[k]["pc"], 16) == int(rip.group(1), 16)
    assert frames[k]["function"] == "sc_null_deref"
    # ... and its callers, by CFI, down to the system call from user mode
    assert all(f["method"] == "cfi" for f in frames[k + 1:k2]), [f["method"] for f in frames]
    assert frames[k2]["boundary"]["text"] == "--- syscall from CPL3 ---"
    assert frames[k2]["boundary"]["found_by"] == "cfi"
    assert frames[k2]["function"] == "user_entry" and frames[k2]["cpl"] == 3
    # gdb's own bt (the stubs carry CFI signal-frame rules, so gdb crosses too): same frames
    gdb_names = frame_names(fault["gdb"])
    ours = [n for n in frame_names(fault["kd"]) if n not in ("isr_common", "syscall_entry")]
    assert ours == gdb_names, fault["kd"] + "\n---\n" + fault["gdb"]


def test_the_kernels_own_frame_pointer_walk_cannot(stops: dict[str, object]) -> None:
    fault = stops["fault"]
    assert isinstance(fault, dict)
    frames = json.loads(fault["json"])["frames"]
    k = next(i for i, f in enumerate(frames) if f["boundary"])
    callers = [int(f["pc"], 16) for f in frames[k:]]
    kernel = [int(x, 16) for x in str(stops["kernel_bt"]).split("BACKTRACE", 1)[1].split()]
    assert kernel[0] == callers[0]  # the faulting rip, from the trap frame
    assert len(callers) >= 4
    assert kernel[1:] != callers[1:4]  # the rbp chain is not there to follow


def test_offline_core_gives_the_live_frames(stops: dict[str, object],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    halted = stops["halted"]
    assert isinstance(halted, dict)
    live = [(f["pc"], f["symbol"]) for f in json.loads(halted["kd"])["frames"]]
    assert main(["bt", "--core", str(stops["core"]), "--elf", str(NOFP), "--json"]) == 0
    offline = [(f["pc"], f["symbol"]) for f in json.loads(capsys.readouterr().out)["frames"]]
    assert offline == live
    names = [fn for _pc, fn in offline]
    assert names[:3] == ["trap_dispatch", "isr_common", "sc_null_deref"], offline
    assert names[-2:] == ["syscall_entry", "user_entry"], offline
