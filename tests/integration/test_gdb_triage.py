"""``kd triage`` in a real gdb on the bundled kernel's triple-faulting scenarios (QEMU TCG + OVMF).

For each scenario that ends in a triple fault (kernel/SCENARIOS.md: the others are handled by
the kernel's own exception handler), QEMU starts halted (-S, -no-reboot -no-shutdown, the
launcher's -d int,cpu_reset log), gdb attaches over MI (what IDEs use), continues, and sees
SIGQUIT when the triple fault freezes the machine. Then ``kd triage --json`` must name the
scenario's expected cause (kernel/x86_64/scenarios.list, column 3) first and the memory check
that shows it must name the entry (a page-table entry, the IDTR, the operand's walk). The same
run's log, triaged offline, must agree on the top cause. One VM per scenario (module-scoped,
parametrized fixture): about 8-12 s each, most of it OVMF.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kdiag.triage.engine import triage_path
from kdiag.triage.location import ElfSpec, KernelImage
from qmp_tools import launcher as L
from tests.integration.gdb_session import KERNEL_ELF, GdbError, MiGdb

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed")]

ROOT = Path(__file__).resolve().parents[2]
LIST = ROOT / "kernel" / "x86_64" / "scenarios.list"
# The scenarios that triple-fault (kernel/SCENARIOS.md "outcome"), with the memory check that
# must carry the evidence: (check name, entry it must name or a prefix of it).
TRIPLE = {
    "cr3-unmapped-rip": ("RIP", "PML4["),   # the new CR3 lacks the kernel half
    "stack-overflow": ("RSP-8", "PT["),     # the guard page below the RSP0 stack
    "idt-missing": ("IDT", "IDTR"),         # IDTR.limit = 0
    "abi-mismatch": (None, None),           # the operand walk of `mov ..., [rdi=0]`
}


def _expected() -> dict[str, str]:
    out = {}
    for line in LIST.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and not parts[0].startswith("#"):
            out[parts[0]] = parts[2]
    return out


EXPECTED = _expected()


@dataclass
class Stopped:
    scenario: str
    gdb: MiGdb
    vm: L.QemuInstance
    stop: dict[str, Any]


@pytest.fixture(scope="module", params=sorted(TRIPLE))
def stopped(request: pytest.FixtureRequest, built_kernel: Path) -> Iterator[Stopped]:
    name = request.param
    vm = L.QemuInstance.start(L.QemuConfig(scenario=name, gdb_port=0, wait_gdb=True,
                                           build=False))
    gdb = None
    try:
        assert vm.gdb_port
        gdb = MiGdb(vm.gdb_port)
        gdb.gdb.write("-exec-continue", read_response=False)
        stop = gdb.wait_stopped(timeout=180)
        yield Stopped(name, gdb, vm, stop)
    finally:
        if gdb is not None:
            gdb.close()
        vm.stop()


def test_scenarios_are_listed() -> None:
    for name in TRIPLE:
        assert name in EXPECTED and EXPECTED[name] != "-", name


def test_gdb_sees_sigquit_and_qemu_is_frozen(stopped: Stopped) -> None:
    assert stopped.stop.get("signal-name") == "SIGQUIT", stopped.stop
    assert stopped.vm.status() == "shutdown"


def test_kd_triage_names_the_expected_cause_and_the_entry(stopped: Stopped) -> None:
    doc = stopped.gdb.json("kd triage --json")
    ids = [c["id"] for c in doc["causes"]]
    expected = EXPECTED[stopped.scenario]
    assert doc["outcome"] == "triple-fault"
    assert ids and ids[0] == expected, (ids, doc["verdict"])
    assert doc["registers"]["source"] == "live"
    assert doc["first_fault"]["ip"] == doc["registers"]["rip"]
    # the location comes from the ELF gdb loaded (`file kernel-x86_64.elf`)
    assert doc["location"] is not None and doc["location"]["symbol"], doc["location"]
    mem = {m["name"]: m for m in doc["memory"]}
    top = doc["causes"][0]
    mem_evidence = [e["text"] for e in top["evidence"] if e["source"] == "memory"]
    name, entry = TRIPLE[stopped.scenario]
    if name is not None:
        check = mem[name]
        assert not check["ok"] and check["entry"].startswith(entry), check
        if name in ("RIP", "RSP-8"):  # a page walk: the entry is in the cause's evidence
            assert any(check["entry"] in t and "not present while walking" in t
                       for t in mem_evidence), top
    if stopped.scenario == "cr3-unmapped-rip":
        assert doc["location"]["previous"][-1].endswith("mov cr3, rax"), doc["location"]
        assert any("mov cr3" in e["text"] for e in top["evidence"])
        assert "paging-setup" in ids[1:3], ids
    elif stopped.scenario == "abi-mismatch":
        assert any("walking the operand 0x0" in t for t in mem_evidence), top
        assert doc["location"]["symbol"] == "kmain"
        assert "idt-missing" in ids, ids  # the loader's IDT (limit 0): why it escalated
    elif stopped.scenario == "stack-overflow":
        assert doc["location"]["symbol"].startswith("recurse")
        assert mem["IDT[0x08] (#DF)"]["ok"], mem  # the gate is fine; there is no IST for it
    # the call stack at the fault, from the same unwinder as `kd bt`: frame 0 is the location
    frames = doc["backtrace"]["frames"]
    assert frames and frames[0]["pc"] == doc["registers"]["rip"], doc["backtrace"]
    assert frames[0]["symbol"] == doc["location"]["symbol"]
    if stopped.scenario == "stack-overflow":  # deep in the recursion, called from recurse
        assert len(frames) > 3 and all(f["symbol"].startswith("recurse") for f in frames[:4])
    elif stopped.scenario == "idt-missing":
        assert doc["registers"]["idtr"]["limit"] == "0x0"


def test_kd_triage_text_puts_the_verdict_first(stopped: Stopped) -> None:
    text = stopped.gdb.console("kd triage --no-registers")
    lines = text.splitlines()
    assert lines[0].startswith("TRIPLE FAULT")
    assert "most likely " + EXPECTED[stopped.scenario] in " ".join(lines[1:6])
    assert "Memory (read from the machine):" in text and "Registers" not in text
    assert "Backtrace (the same unwinder as kd bt):" in text
    if stopped.scenario == "stack-overflow":
        assert "more times (recursion)" in text


def test_live_agrees_with_the_log_of_the_same_run(stopped: Stopped) -> None:
    live = [c["id"] for c in stopped.gdb.json("kd triage --json")["causes"]]
    diag = triage_path(stopped.vm.log_path, image=KernelImage([ElfSpec(str(KERNEL_ELF))]))
    assert diag.outcome == "triple-fault"
    assert diag.causes and diag.causes[0].id == live[0], ([c.id for c in diag.causes], live)
    # --log: the chain from the log, the memory from the machine
    doc = stopped.gdb.json(f"kd triage --json --log {stopped.vm.log_path}")
    assert [e["kind"] for e in doc["chain"]][-1] == "triple-fault"
    assert doc["first_fault"]["vector"] is not None and doc["memory"]
    assert doc["causes"][0]["id"] == EXPECTED[stopped.scenario]


def test_bad_input_is_one_line_and_the_session_survives(stopped: Stopped) -> None:
    with pytest.raises(GdbError, match=r"kd triage: .*nonexistent"):
        stopped.gdb.console("kd triage --elf /nonexistent/kernel.elf")
    with pytest.raises(GdbError, match="unrecognized arguments"):
        stopped.gdb.console("kd triage --bogus")
    assert stopped.gdb.json("kd triage --json --no-elf")["location"] is None


def test_i386_kernel_not_a_triple_fault_and_with_its_log(tmp_path: Path) -> None:
    """The 32-bit kernel (a fast boot) stopped by gdb after its handled #PF: not a triple
    fault, so no verdict without the log; with --log the chain comes from the log, the memory
    checks from the machine (32-bit paging walk of CR2)."""
    L.build_kernel("i386")
    elf = ROOT / "kernel" / "build" / "kernel-i386.elf"
    vm = L.QemuInstance.start(L.QemuConfig(kernel="i386", scenario="pagefault", gdb_port=0,
                                           build=False))
    gdb = None
    try:
        vm.wait_serial(r"\[kernel\] ready", timeout=60)
        assert vm.gdb_port
        gdb = MiGdb(vm.gdb_port, elf=elf)  # attaching stops the guest
        doc = gdb.json("kd triage --json")
        assert doc["outcome"] == "clean" and doc["causes"] == []
        assert "not stopped by a triple fault" in doc["verdict"]
        assert doc["registers"]["width"] == 32 and doc["mode"] == "protected"
        cr2 = next(m for m in doc["memory"] if m["name"] == "CR2")
        assert not cr2["ok"] and cr2["entry"] == "PD[0x380]"  # 0xe0000000 >> 22
        doc = gdb.json(f"kd triage --json --log {vm.log_path}")
        assert doc["outcome"] == "exception" and doc["causes"][0]["id"] == "data-unmapped"
        assert doc["location"]["symbol"] == "fault_write"
        assert all(c["id"] != "idt-gate-invalid" for c in doc["causes"]), doc["causes"]
    finally:
        if gdb is not None:
            gdb.close()
        vm.stop()
