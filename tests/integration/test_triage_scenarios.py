"""``kdiag triage`` on the bundled kernel's fault scenarios (real QEMU, TCG, OVMF).

Each scenario of kernel/x86_64/scenarios.list is booted once the way the launcher boots it
(-d int,cpu_reset -no-reboot -no-shutdown). Its log is triaged with and without the kernel ELF:
the first cause must be the one the list names, and the first fault's vector, IP and symbol
must be the scenario's (table below; for the scenarios the kernel's own handler takes, the
vector and RIP it printed on serial, ``KDIAG EXCEPTION vector=.. rip=..``, are the reference
for the exception that reached it). For a triple fault the frozen machine is also triaged live
over QMP.

Then a representative subset is booted again with only ``-d cpu_reset`` and QEMU allowed to
reboot (QemuConfig(no_reboot=False, log_items="cpu_reset")): the four triple-faulting scenarios
(QEMU logs ``Triple fault`` and a ``CPU Reset`` dump of the state just before the reset) and one
the kernel's handler takes (``ud``: no reset happens, so the log holds only the power-on dumps).
Booting all 14 twice would add about 100 s for ten more logs that all say the same as ``ud``.
idt-missing is left to reboot once more, which gives a real multi-reset (reboot-loop) log.

One documented ambiguity: for a ring-3 instruction fetch the #PF error code is the same for an
XD page and a supervisor-only page (P=1 U=1 I=1), so offline triage lists nx-violation and
user-supervisor-violation with equal confidence; there the expected id must be in the top two.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kdiag.triage.engine import triage_path, triage_state
from kdiag.triage.location import ElfSpec, KernelImage
from kdiag.triage.model import Diagnosis
from qmp_tools import launcher as L

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LIST = ROOT / "kernel" / "x86_64" / "scenarios.list"
ELF = ROOT / "kernel" / "build" / "kernel-x86_64.elf"
AMBIGUOUS = {"user-nx", "user-supervisor"}

# scenario -> (vector of the first fault, symbol at its IP); from kernel/SCENARIOS.md
FIRST_FAULT: dict[str, tuple[int, str]] = {
    "cs-not-reloaded": (0x0D, "isr_iretq"),      # iretq pops the stale CS 0x38
    "sysret-gdt-order": (0x0D, "isr_iretq"),     # iretq pops CS=0x23 (data)
    "idt-missing": (0x0D, "timer_init"),         # IRQ 0x20 with IDTR.limit 0: #GP(0x202)
    "cr3-unmapped-rip": (0x0E, "paging_init"),   # the fetch right after mov cr3
    "fb-unmapped": (0x0E, "fb_"),                # the first framebuffer store
    "user-nx": (0x0E, "user_entry"),
    "user-supervisor": (0x0E, "user_entry"),
    "tss-rsp0-null": (0x0E, "user_"),            # the frame push to RSP0-8, from ring 3
    "abi-mismatch": (0x0E, "kmain"),             # bi->magic with bi = RDI = 0
    "null-deref": (0x0E, "sc_null_deref"),
    "noncanonical": (0x0D, "sc_noncanonical"),
    "ud": (0x06, "sc_ud"),
    "div0": (0x00, "sc_div0"),
    "stack-overflow": (0x0E, "recurse"),
}
# Without the ELF these lose their top cause, and what they give instead: noncanonical reads
# `movabs rax, [0x800000000000]`, the address is in the instruction, in no register of the dump,
# so the log alone only shows a #GP with error code 0 (whose advice names non-canonical).
NEEDS_ELF: dict[str, str] = {"noncanonical": "general-protection"}
# cpu_reset-only subset: scenario -> (top cause without ELF, top cause with ELF); None = the
# log holds no fault state (the kernel's handler halted; no reset happened)
RESET_ONLY: dict[str, tuple[str, str] | None] = {
    "idt-missing": ("idt-missing", "idt-missing"),
    "cr3-unmapped-rip": ("paging-setup", "code-unmapped"),  # CR2 in the IDT; mov cr3 at RIP-3
    "abi-mismatch": ("idt-missing", "null-pointer"),        # `mov rdx, [rbx]`, RBX=0=CR2
    "stack-overflow": ("stack-invalid", "stack-invalid"),   # CR2 just below RSP
    "ud": None,
}
# kernel/SCENARIOS.md "outcome": these triple-fault, the kernel's handler takes the others
TRIPLE_FAULTS = {"idt-missing", "cr3-unmapped-rip", "abi-mismatch", "stack-overflow"}
RESETS_FOR = {"idt-missing": 2}  # a reboot loop: triage the last one, count the one before


def _scenarios() -> list[tuple[str, str]]:
    out = []
    for line in LIST.read_text().splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#") or len(parts) < 3 or parts[2] == "-":
            continue
        out.append((parts[0], parts[2]))
    return out


SCENARIOS = _scenarios()


@dataclass
class Run:
    log: Path
    how: str
    serial: str


@dataclass
class Runs:
    int_logs: dict[str, Run] = field(default_factory=dict)
    reset_logs: dict[str, Path] = field(default_factory=dict)
    live: dict[str, list[str]] = field(default_factory=dict)  # name -> cause ids over QMP


def _boot_reset_only(name: str, keep: Path) -> Path:
    """Boot ``name`` with -d cpu_reset only and rebooting allowed; stop after the N-th triple
    fault's CPU Reset dump (or, for a scenario the kernel handles, once it halted)."""
    want = RESETS_FOR.get(name, 1)
    vm = L.QemuInstance.start(L.QemuConfig(scenario=name, gdb_port=None, build=False,
                                           no_reboot=False, log_items="cpu_reset"))
    try:
        deadline = time.monotonic() + 120
        last_halt = 0.0
        while time.monotonic() < deadline:
            text = vm.log_path.read_text(errors="replace") if vm.log_path.exists() else ""
            tf = text.rfind("Triple fault")
            if text.count("Triple fault") >= want and text.find("EFER=", tf) > tf:
                break
            if RESET_ONLY[name] is None and time.monotonic() - last_halt > 1:
                last_halt = time.monotonic()
                if vm.guest_halted_for_good():
                    break
            time.sleep(0.2)
        else:
            pytest.fail(f"{name}: no triple fault / halt in the cpu_reset-only run")
        time.sleep(0.2)  # let QEMU finish the dump's last lines
    finally:
        vm.stop()
    dst = keep / f"{name}.cpu_reset.log"
    shutil.copy(vm.log_path, dst)
    return dst


@pytest.fixture(scope="module")
def runs(built_kernel: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Boot each scenario once (int,cpu_reset), the subset again (cpu_reset only). Live QMP
    checks for the triple faults run while the machine is frozen."""
    r = Runs()
    keep = tmp_path_factory.mktemp("scenario-logs")
    if os.environ.get("KDIAG_KEEP_SCENARIO_LOGS"):  # keep the logs for a look afterwards
        keep = Path(os.environ["KDIAG_KEEP_SCENARIO_LOGS"])
        keep.mkdir(parents=True, exist_ok=True)
    for name, _ in SCENARIOS:
        vm = L.QemuInstance.start(L.QemuConfig(scenario=name, gdb_port=None, build=False))
        try:
            how = vm.wait_stopped(timeout=180)
            if how == "triple-fault":
                r.live[name] = _live_ids(vm)
        finally:
            vm.stop()
        dst = keep / f"{name}.log"
        shutil.copy(vm.log_path, dst)
        (keep / f"{name}.serial").write_text(vm.serial_text())
        r.int_logs[name] = Run(dst, how, vm.serial_text())
    for name in RESET_ONLY:
        r.reset_logs[name] = _boot_reset_only(name, keep)
    return r


def _live_ids(vm: L.QemuInstance) -> list[str]:
    try:
        from qmp_tools.target import QmpTarget

        with QmpTarget.connect(str(vm.qmp_path)) as tgt:
            diag = triage_state(tgt.state(), target=tgt)
            return [c.id for c in diag.causes]
    except Exception as err:  # noqa: BLE001 - recorded, asserted on in the live test
        return [f"error: {err}"]


def _image() -> KernelImage:
    return KernelImage([ElfSpec(str(ELF))])


def _kernel_exception(serial: str) -> dict[str, str] | None:
    """The kernel handler's own report: ``KDIAG EXCEPTION vector=0xe ... rip=0x...``."""
    for line in serial.splitlines():
        if line.strip().startswith("KDIAG EXCEPTION "):
            return dict(p.split("=", 1) for p in line.split()[2:] if "=" in p)
    return None


def _top(diag: Diagnosis, name: str, expected: str) -> None:
    ids = [c.id for c in diag.causes]
    if name in AMBIGUOUS:
        assert expected in ids[:2], ids
    else:
        assert ids and ids[0] == expected, (ids, diag.verdict)


@pytest.mark.parametrize("name,expected", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenario_triage(name: str, expected: str, runs: Runs) -> None:
    run = runs.int_logs[name]
    want = "triple-fault" if name in TRIPLE_FAULTS else "halted"
    assert run.how == want, f"{name}: the guest stopped as {run.how!r}"
    diag = triage_path(run.log, image=_image())
    assert diag.outcome == ("triple-fault" if run.how == "triple-fault" else "exception"), \
        diag.verdict
    _top(diag, name, expected)
    vector, symbol = FIRST_FAULT[name]
    ff = diag.first_fault
    assert ff is not None and ff.vector == vector, (ff, diag.verdict)
    assert ff.ip is not None and diag.first_fault_ip == ff.ip
    assert diag.location is not None and diag.location.address == ff.ip
    assert (diag.location.symbol or "").startswith(symbol), diag.location
    assert diag.location.instruction and diag.location.file and diag.location.line
    assert diag.exit_code == 1
    # without the ELF: the same chain and IP, no location, the same top cause
    bare = triage_path(run.log)
    assert bare.first_fault is not None and bare.first_fault.vector == vector
    assert bare.first_fault.ip == ff.ip and bare.location is None
    _top(bare, name, NEEDS_ELF.get(name, expected))


@pytest.mark.parametrize("name", [n for n, _ in SCENARIOS if n not in TRIPLE_FAULTS])
def test_handled_exception_matches_the_kernels_report(name: str, runs: Runs) -> None:
    """The exception that reached the kernel's handler is the log's last exception record."""
    run = runs.int_logs[name]
    rep = _kernel_exception(run.serial)
    assert rep is not None, "the kernel printed no KDIAG EXCEPTION line"
    diag = triage_path(run.log, image=_image())
    last = [e for e in diag.chain.events if e.kind == "exception"][-1]
    assert last.vector == int(rep["vector"], 16), (last, rep)
    assert last.ip == int(rep["rip"], 16), (last, rep)
    if last.vector == 14:
        assert last.cr2 == int(rep["cr2"], 16)


@pytest.mark.parametrize("name", sorted(RESET_ONLY))
def test_cpu_reset_only_log(name: str, runs: Runs) -> None:
    """The same scenario logged with -d cpu_reset only, QEMU rebooting after the fault."""
    log = runs.reset_logs[name]
    expect = RESET_ONLY[name]
    bare = triage_path(log)
    diag = triage_path(log, image=_image())
    if expect is None:  # the handler halted the CPU: nothing but the power-on dumps
        assert diag.outcome == "clean" and not diag.causes and diag.exit_code == 0
        assert any("start-up `CPU Reset` dumps" in n and "-d int,cpu_reset" in n
                   for n in diag.notes), diag.notes
        return
    int_diag = triage_path(runs.int_logs[name].log, image=_image())
    assert diag.outcome == "triple-fault" and diag.exit_code == 1
    assert diag.registers_source == "cpu-reset" and diag.registers is not None
    # no vector and no error code without -d int, and the report says so
    assert diag.first_fault is None
    assert any("no -d int records" in n and "vectors, error codes" in n for n in diag.notes)
    assert "-d int" in diag.verdict
    # IP and symbol: the dump's RIP is the faulting instruction (delivery failed)
    ip = diag.first_fault_ip
    assert ip is not None and diag.first_fault_ip_inferred
    assert diag.location is not None and int_diag.location is not None
    assert diag.location.symbol == int_diag.location.symbol, (diag.location, int_diag.location)
    if name != "idt-missing":  # there the first fault is the IRQ's #GP at the same RIP
        assert ip == int_diag.first_fault_ip
    assert ip == int(diag.registers.rip)
    _top(bare, name, expect[0])
    _top(diag, name, expect[1])


_RECORD_START = re.compile(r"^(\s*\d+: v=|check_exception |Servicing hardware INT|Triple fault|"
                           r"SMM: |CPU Reset )")


def _cpu_reset_records(text: str) -> str:
    """The ``CPU Reset`` records of a ``-d int,cpu_reset`` log: what ``-d cpu_reset`` alone
    writes for the same run when no reset follows the fault (QEMU's cpu_reset records do not
    depend on the other log items: target/i386/cpu.c x86_cpu_reset -> log_cpu_state)."""
    out, keep = [], False
    for line in text.splitlines(keepends=True):
        if _RECORD_START.match(line):
            keep = line.startswith("CPU Reset ")
        if keep:
            out.append(line)
    return "".join(out)


@pytest.mark.parametrize("name", [n for n, _ in SCENARIOS
                                  if n not in TRIPLE_FAULTS and n not in RESET_ONLY])
def test_cpu_reset_only_view_of_a_handled_exception(name: str, runs: Runs,
                                                     tmp_path: Path) -> None:
    """The handled-exception scenarios not booted with -d cpu_reset above (``ud`` is): their
    handler halts the CPU and nothing resets, so a cpu_reset-only log holds just the power-on
    dumps. It is taken from the scenario's own int,cpu_reset log (the same records) rather than
    from one more boot each. kdiag must say there is no fault state and name the flags."""
    text = _cpu_reset_records(runs.int_logs[name].log.read_text(errors="replace"))
    assert text.count("CPU Reset ") >= 1 and "v=" not in text
    log = tmp_path / f"{name}.cpu_reset.log"
    log.write_text(text)
    for diag in (triage_path(log), triage_path(log, image=_image())):
        assert diag.outcome == "clean" and not diag.causes and diag.exit_code == 0, diag.verdict
        assert any("start-up `CPU Reset` dumps" in n and "-d int,cpu_reset" in n
                   for n in diag.notes), diag.notes


def test_multi_reset_log_triages_the_last_and_counts_the_rest(runs: Runs) -> None:
    log = runs.reset_logs["idt-missing"]
    diag = triage_path(log)
    assert diag.resets_before == RESETS_FOR["idt-missing"] - 1 and diag.resets_before_exact
    assert any("1 earlier triple fault in the log" in n for n in diag.notes), diag.notes
    assert diag.causes[0].id == "idt-missing"


def test_live_triple_fault_via_qmp(runs: Runs) -> None:
    live = runs.live
    if not live:
        pytest.skip("no scenario triple-faulted")
    expected = dict(SCENARIOS)
    for name, ids in live.items():
        assert ids and not ids[0].startswith("error:"), (name, ids)
        assert ids[0] == expected[name], (name, ids)  # live agrees with the log


I386_ELF = ROOT / "kernel" / "build" / "kernel-i386.elf"


@pytest.mark.parametrize("scenario,symbol", [("pagefault", "fault_write"),
                                             ("user-pagefault", "ulevel3")])
def test_i386_kernel_32bit_log(scenario: str, symbol: str, tmp_path: Path) -> None:
    """The 32-bit multiboot kernel (boots in well under a second): its -d int,cpu_reset log
    has the 32-bit dump layout; the triage must match the kernel's own page-fault line
    (``[kernel] page fault va V eip E err C from CPLn``) and symbolize through STABS/DWARF."""
    L.build_kernel("i386")
    vm = L.QemuInstance.start(L.QemuConfig(kernel="i386", scenario=scenario, gdb_port=None,
                                           build=False))
    try:
        vm.wait_serial(r"\[kernel\] ready", timeout=60)
        time.sleep(0.2)
        serial = vm.serial_text()
    finally:
        vm.stop()
    log = tmp_path / "qemu.log"
    shutil.copy(vm.log_path, log)
    line = next(ln for ln in serial.splitlines() if "page fault va" in ln)
    words = line.split()
    va, eip, err = (int(words[words.index(k) + 1], 16) for k in ("va", "eip", "err"))
    cpl = int(words[-1][-1])
    diag = triage_path(log, image=KernelImage([ElfSpec(str(I386_ELF))]))
    ff = diag.first_fault
    assert diag.outcome == "exception" and ff is not None
    assert (ff.vector, ff.ip, ff.cr2, ff.error_code, ff.cpl) == (14, eip, va, err, cpl)
    assert diag.registers_width == 32 and diag.mode == "protected"
    assert diag.location is not None and diag.location.symbol == symbol
    assert diag.location.mode_bits == 32 and diag.location.line
    assert diag.causes[0].id == ("null-pointer" if va < 0x1000 else "data-unmapped")
