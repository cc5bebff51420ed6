"""The QMP backend on the bundled kernel: Target contract, the kernel's own KDIAG report, the same
output as gdb and as a core of the same stop, and the shell driven through pipe input.

One VM per module: healthy, booted to "[kernel] ready"; an MI3 gdb stops the CPU in kernel code
(``isr_common``, CPL 0); a ``dump-guest-memory`` core of that stop is the contract reference.
Each test opens its own QMP connection (QEMU serves one client per socket; the CLI needs it).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from kdiag.errors import MsrUnavailable
from kdiag.paging.translate import translate
from kdiag.target.core import CoreTarget
from qmp_tools import launcher as L
from qmp_tools.session import QmpSession
from qmp_tools.shell import MonitorShell
from qmp_tools.target import QmpTarget
from qmp_tools.watch import save_core
from tests.integration.conftest import start_vm
from tests.integration.gdb_session import KERNEL_ELF, ROOT, MiGdb, kdiag_lines
from tests.unit import test_target_contract as C


@dataclass
class Env:
    vm: L.QemuInstance
    gdb: MiGdb
    kd: dict[str, dict[str, str]]
    core: Path


def h(text: str) -> int:
    return int(text, 16)


@pytest.fixture(scope="module")
def env(built_kernel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    vm = start_vm(L.QemuConfig(scenario="healthy", gdb_port=0, build=False))
    gdb = None
    try:
        assert vm.gdb_port
        gdb = MiGdb(vm.gdb_port)
        gdb.cont_to("isr_common")
        core = tmp_path_factory.mktemp("qmplive") / "stop.elf"
        with QmpSession.connect(str(vm.qmp_path)) as s:
            assert s.status() == "debug"  # stopped by gdb
            save_core(s, core)
        yield Env(vm=vm, gdb=gdb, kd=kdiag_lines(vm.serial_text()), core=core)
    finally:
        if gdb is not None:
            gdb.close()
        vm.stop()


@pytest.fixture
def qmp(env: Env) -> Iterator[QmpTarget]:
    with QmpTarget.connect(str(env.vm.qmp_path)) as t:
        yield t


def kdiag(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI; whatever it did, stderr holds no traceback and no asyncio noise."""
    proc = subprocess.run([sys.executable, "-m", "kdiag", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert "Traceback" not in proc.stderr and "Task was destroyed" not in proc.stderr, \
        proc.stderr
    assert "never awaited" not in proc.stderr, proc.stderr
    return proc


# -- the Target contract against a core of the same stop ----------------------------------------

def probes(core: CoreTarget) -> C.Probes:
    st = core.state()
    assert st.gdtr is not None and st.idtr is not None
    gdt_pa = translate(core, st.gdtr.base, st)
    return C.Probes(
        phys=[(st.cr3 & ~0xFFF, 4096), (gdt_pa, 0x38), (0x100000 - 8, 16),
              (0x200000, 200 * 1024), (0x1000, 3 * 4096 + 5), (0x300000, 1 << 20)],
        virt=[(st.gdtr.base, 0x38), (st.idtr.base, 4096), (st.rip, 64), (st.rsp - 64, 64)],
        unmapped_va=0x0000000000001000,  # the lower half is unmapped once the kernel is up
        beyond_ram_pa=0x7F000000,
    )


def test_contract_against_the_core(env: Env, qmp: QmpTarget) -> None:
    core = CoreTarget.from_path(env.core)
    C.contract_is_a_target(qmp)
    C.contract_state(qmp, core, efer_mask=~1)  # the core infers EFER; SCE is not in it
    C.contract_read_phys(qmp, core, probes(core))
    C.contract_read_virt(qmp, core, probes(core))
    C.contract_msr_unavailable(qmp)
    C.contract_tables(qmp, core)


def test_contract_through_hmp_xp(env: Env, qmp: QmpTarget) -> None:
    core = CoreTarget.from_path(env.core)
    xp = QmpTarget(qmp.session, use_pmemsave=False)
    p = probes(core)
    C.contract_read_phys(xp, core, C.Probes(phys=p.phys[:3], virt=p.virt,
                                            unmapped_va=p.unmapped_va,
                                            beyond_ram_pa=p.beyond_ram_pa))
    assert xp.stats["pmemsave"] == 0 and xp.stats["xp"] > 0


# -- the kernel's own report --------------------------------------------------------------------

def test_state_matches_the_kernels_report(env: Env, qmp: QmpTarget) -> None:
    st = qmp.state()
    kd = env.kd
    assert st.gdtr is not None and st.idtr is not None and st.tr is not None
    assert (st.gdtr.base, st.gdtr.limit) == (h(kd["GDTR"]["base"]), h(kd["GDTR"]["limit"]))
    assert (st.idtr.base, st.idtr.limit) == (h(kd["IDTR"]["base"]), h(kd["IDTR"]["limit"]))
    assert st.tr.selector == h(kd["TR"]["sel"]) and st.tr.base == h(kd["TSS"]["base"])
    assert st.cr3 == h(kd["CR"]["cr3"]) and st.cr4 == h(kd["CR"]["cr4"])
    assert st.cr0 == h(kd["CR"]["cr0"])
    assert st.efer == h(kd["MSR"]["EFER"])  # QMP has the real EFER, SCE included
    assert qmp.read_msr(0xC0000080) == h(kd["MSR"]["EFER"])
    with pytest.raises(MsrUnavailable, match="QMP"):
        qmp.read_msr(0x277)  # IA32_PAT: no QMP read


def test_run_state_cache(env: Env, qmp: QmpTarget) -> None:
    qmp.state()
    qmp.read_phys(h(env.kd["CR"]["cr3"]), 64)
    before = qmp.stats["pmemsave"]
    qmp.read_phys(h(env.kd["CR"]["cr3"]) + 8, 8)
    assert qmp.stats["pmemsave"] == before  # cached while gdb holds the CPU


# -- same output as gdb and as the core ---------------------------------------------------------

def comparable(text: str) -> str:
    """Drop what legitimately differs between backends: elapsed times, the reason an MSR is
    unreadable (each backend names its own), KERNEL_GS_BASE (gdb has it, QMP cannot read it)."""
    text = re.sub(r"\d+\.\d+ s\b", "T s", text)
    text = re.sub(r"readable \(.*?\); assuming", "readable (...); assuming", text)
    return "\n".join(ln for ln in text.splitlines() if "kernel_gs_base=" not in ln)


@pytest.mark.parametrize("cmd", ["gdt", "idt", "tss", "sreg", "cr"])
def test_cli_over_qmp_prints_what_gdb_prints(env: Env, cmd: str) -> None:
    extra = ["--elf", str(KERNEL_ELF)] if cmd in ("idt", "tss") else []
    proc = kdiag(cmd, "--qmp", str(env.vm.qmp_path), *extra)
    assert proc.returncode == 0, proc.stderr
    assert comparable(proc.stdout) == comparable(env.gdb.console(f"kd {cmd}"))


@pytest.mark.parametrize("cmd", ["gdt --json", "idt --json", "tss --json", "cr --json", "pt",
                                 "pt --json", "walk 0xffffffff80000000", "walk --json 0x1000"])
def test_cli_over_qmp_prints_what_the_core_gives(env: Env, cmd: str) -> None:
    live = kdiag(*cmd.split(), "--qmp", str(env.vm.qmp_path))
    offline = kdiag(*cmd.split(), "--core", str(env.core))
    assert live.returncode == offline.returncode, live.stderr + offline.stderr
    assert live.returncode in (0, 1) and live.stdout, live.stderr  # 1: walk found no page
    if "--json" not in cmd:
        assert comparable(live.stdout) == comparable(offline.stdout)
        return
    doc, ref = json.loads(live.stdout), json.loads(offline.stdout)
    for d in (doc, ref):
        if isinstance(d, dict):
            d.pop("stats", None)  # bytes read and elapsed time: how, not what
            if isinstance(d.get("pat"), dict):
                d["pat"].pop("note", None)  # each backend says why it cannot read IA32_PAT
    if cmd == "cr --json":
        # a core has no CR8 (QEMU's ELF note lacks it) and infers EFER without SCE; QMP reads
        # the TPR and the real EFER (the kernel's own report says which is right)
        assert ref.pop("cr8") is None and doc.pop("cr8") == "0x0"
        assert int(doc.pop("efer")["raw"], 16) == h(env.kd["MSR"]["EFER"])
        ref.pop("efer")
        assert not doc.pop("efer_inferred", False)
        ref.pop("efer_inferred", None)
    assert doc == ref


def test_pat_over_qmp_is_one_clear_line(env: Env) -> None:
    """QMP/HMP have no MSR read and IA32_PAT is not in `info registers`: a defined refusal
    that names the alternatives, and the same decoder with the kernel's own value."""
    proc = kdiag("pat", "--qmp", str(env.vm.qmp_path))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "QMP" in lines[0], proc.stderr
    assert "kd msr" in lines[0] or "--value" in lines[0]
    pat = env.kd["MSR"]["PAT"]
    by_gdb = env.gdb.console("kd pat").splitlines()
    assert by_gdb[-1].startswith("(read by injecting rdmsr")  # how gdb got it
    assert kdiag("pat", "--value", pat).stdout.splitlines() == by_gdb[:-1]


def test_gdt_decode_matches_gdb_json(env: Env) -> None:
    proc = kdiag("gdt", "--qmp", str(env.vm.qmp_path), "--json")
    assert json.loads(proc.stdout)["entries"] == env.gdb.json("kd gdt --json")["entries"]


# -- the shell on the live machine --------------------------------------------------------------

def test_shell_completes_and_runs_commands(env: Env, tmp_path: Path) -> None:
    """The shell on the live QEMU through prompt_toolkit's pipe input: Tab completes QMP command
    names, their argument names and enum values (from this QEMU's query-qmp-schema), HMP
    topics and kdiag commands; lines run as QMP, HMP or kdiag; errors are one readable line;
    Up recalls history, which persists in the history file."""
    out = io.StringIO()
    buffers: list[str] = []
    history = tmp_path / "history"
    cr3 = env.kd["CR"]["cr3"]
    # (typed, buffer expected after it or None, what ends the line: Enter or Ctrl-C)
    steps: list[tuple[str, str | None, str]] = [
        ("query-statu\t", "query-status", "\r"),                        # QMP name
        ("info regis\t", "info registers", "\r"),                       # HMP info topic
        ("qom-list pa\t", "qom-list path=", ""),                         # QMP argument name
        ("/machine", None, "\r"),
        ("dump-guest-memory format=kdump-z\t",                          # QMP enum value
         "dump-guest-memory format=kdump-zlib", "\x03"),                 # (not run)
        ("sre\t", "sreg", "\r"),                                        # kdiag command
        ("gdt", None, "\r"),
        (f"xp /2gx {cr3}", None, "\r"),                                  # HMP passthrough
        ("walk 0xffffffff80000000", None, "\r"),
        ("idt --elf " + str(KERNEL_ELF), None, "\r"),
        ("triage", None, "\r"),                                          # live triage
        ("pmemsave val=0", None, "\r"),                                  # QMP error
        ("walk", None, "\r"),                                            # kdiag usage error
        ("\x1b[A", "walk", "\x03"),                                      # history: Up
    ]
    with QmpSession.connect(str(env.vm.qmp_path)) as s, create_pipe_input() as inp:
        shell = MonitorShell(s, out=out, pt_input=inp, pt_output=DummyOutput(),
                             history_file=history)

        def wait_prompt() -> None:
            while shell.prompt_session is None or not shell.prompt_session.app.is_running:
                time.sleep(0.005)

        def wait_history() -> None:
            # prompt_toolkit reloads the history for every prompt in a background task that
            # the first repaint starts: an Up arrow typed before it is done finds no history.
            deadline = time.monotonic() + 30
            assert shell.prompt_session is not None
            buf = shell.prompt_session.default_buffer
            while time.monotonic() < deadline:
                task = getattr(buf, "_load_history_task", None)
                if task is not None and task.done():
                    return
                time.sleep(0.005)

        def feed() -> None:
            for typed, expect, end in steps:
                wait_prompt()
                if typed.startswith("\x1b[A"):
                    wait_history()
                inp.send_text(typed)
                if expect is not None:
                    deadline = time.monotonic() + 30
                    assert shell.prompt_session is not None
                    while (shell.prompt_session.default_buffer.text != expect
                           and time.monotonic() < deadline):
                        time.sleep(0.005)
                    buffers.append(shell.prompt_session.default_buffer.text)
                if end:
                    inp.send_text(end)
                    # The next prompt has started once the buffer is empty again (prompt_toolkit
                    # keeps an accepted line's text until the next prompt() resets it); typing
                    # earlier races the old application and loses keys on a loaded machine.
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline and (
                            shell.prompt_session.default_buffer.text
                            or not shell.prompt_session.app.is_running):
                        time.sleep(0.005)
            wait_prompt()
            inp.close()

        t = threading.Thread(target=feed, daemon=True)
        t.start()
        code = shell.loop()
        t.join(10)
    text = out.getvalue()
    assert code == 0, text
    assert buffers == [e for _, e, _ in steps if e is not None]
    assert '"status": "debug"' in text
    assert "GDT=" in text and "CR3=" in text
    assert '"name": "unattached"' in text  # qom-list /machine ran with the completed argument
    assert env.gdb.console("kd gdt").strip() in text  # the same report as gdb's
    assert f"{h(cr3):016x}:" in text  # xp through HMP
    assert "isr_stubs" in text  # idt, gates symbolized with the kernel ELF
    assert "Registers (live" in text  # triage on the live machine
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert any("size" in e and "missing" in e.lower() for e in errors), errors  # pmemsave
    assert any("walk" in ln and ("required" in ln or "usage" in ln)
               for ln in text.splitlines()), text
    assert "Traceback" not in text and "dump-guest-memory format" not in text
    saved = history.read_text()
    assert "qom-list path=/machine" in saved and "walk 0xffffffff80000000" in saved
