"""The `kd` commands in real gdb against the bundled kernel in QEMU, compared with what the
kernel itself reports on serial (KDIAG lines: SGDT/SIDT/STR/RDMSR/CR reads in ring 0).

One VM per module: booted healthy to "[kernel] ready"; a console-interpreter gdb runs first
(then detaches), then an MI3 gdb stops the CPU in kernel code (isr_common, CPL 0) for the rest.
At that stop ``kd core`` writes a dump-guest-memory core (through QEMU's monitor) and the MSRs
beside it: the offline CLI and the GdbTarget contract are checked against it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmp_tools import launcher as L
from tests.integration.conftest import start_vm
from tests.integration.gdb_session import (
    KERNEL_ELF,
    ROOT,
    GdbError,
    MiGdb,
    console_gdb,
    kdiag_lines,
)

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed")

TABLE_COMMANDS = ["kd gdt", "kd idt", "kd tss", "info gdt", "info idt", "info tss"]


class Env:
    vm: L.QemuInstance
    gdb: MiGdb
    kd: dict[str, dict[str, str]]
    console_out: str
    core: Path
    core_out: str
    tmp: Path


def h(text: str) -> int:
    return int(text, 16)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    L.build_kernel("x86_64")
    e = Env()
    e.tmp = tmp_path_factory.mktemp("gdbcmd")
    e.vm = start_vm(L.QemuConfig(scenario="healthy", gdb_port=0, build=False))
    gdb = None
    try:
        assert e.vm.gdb_port
        e.kd = kdiag_lines(e.vm.serial_text())
        # 1. console interpreter (plain `gdb -batch`), stopped in the kernel's interrupt path
        proc = console_gdb(e.vm.gdb_port, ["break isr_common", "continue", "delete",
                                           "echo ===TABLES===\\n",
                                           *[f"{c}\necho ===\\n" for c in TABLE_COMMANDS]],
                           e.tmp)
        e.console_out = proc.stdout
        # 2. MI3 for everything else, at the same kind of stop
        gdb = MiGdb(e.vm.gdb_port)
        gdb.cont_to("isr_common")
        e.gdb = gdb
        e.core = e.tmp / "stop.elf"
        e.core_out = gdb.console(f"kd core {e.core}")
        yield e
    finally:
        if gdb is not None:
            gdb.close()
        e.vm.stop()


# -- decoded values equal the kernel's own ---------------------------------------------------


def test_gdt_matches_kernel(env: Env) -> None:
    doc = env.gdb.json("kd gdt --json")
    assert h(doc["base"]) == h(env.kd["GDTR"]["base"]) and h(doc["limit"]) == h(env.kd["GDTR"]["limit"])
    by_sel = {e["selector"]: e for e in doc["entries"]}
    issue_fields = {"selector", "kind", "dpl", "present", "base", "limit", "long"}
    assert all(issue_fields <= e.keys() for e in doc["entries"])
    assert h(by_sel[0x08]["limit"]) == 0xFFFFFFFF and h(by_sel[0x28]["limit"]) == 0x67
    assert [(s, by_sel[s]["kind"], by_sel[s]["dpl"], by_sel[s]["long"]) for s in sorted(by_sel)] == [
        (0x00, "null", 0, False), (0x08, "code", 0, True), (0x10, "data", 0, False),
        (0x18, "data", 3, False), (0x20, "code", 3, True), (0x28, "tss", 0, False)]
    tss = by_sel[h(env.kd["TR"]["sel"])]
    assert h(tss["base"]) == h(env.kd["TSS"]["base"]) and tss["busy"] and tss["size"] == 16
    assert all(e["present"] for e in doc["entries"][1:])
    assert "cs" in by_sel[0x08]["registers"] and "tr" in by_sel[0x28]["registers"]
    assert doc["warnings"] == []


def test_gdt_star_check_reads_star_and_is_quiet_on_the_healthy_layout(env: Env) -> None:
    doc = env.gdb.json("kd gdt --star --json")
    assert doc["warnings"] == []
    assert "rdmsr" in doc["msr_method"] and "verified" in doc["msr_method"]


def test_idt_matches_kernel(env: Env) -> None:
    doc = env.gdb.json("kd idt --json")
    assert h(doc["base"]) == h(env.kd["IDTR"]["base"]) and h(doc["limit"]) == h(env.kd["IDTR"]["limit"])
    gates = {e["vector"]: e for e in doc["entries"]}
    assert len(gates) == 256
    issue_fields = {"vector", "type", "dpl", "present", "selector", "offset", "ist", "symbol"}
    assert all(issue_fields <= e.keys() for e in doc["entries"])
    for v in range(32):
        g = gates[v]
        assert g["present"] and g["type"] == "interrupt-64" and g["selector"] == 0x08
        assert g["symbol"].startswith("isr_stubs")
    assert (gates[8]["ist"], gates[2]["ist"], gates[0x12]["ist"], gates[14]["ist"]) == (1, 2, 3, 0)
    assert gates[0x80]["dpl"] == 3 and gates[0x20]["present"]
    assert doc["warnings"] == []


def test_tss_matches_kernel(env: Env) -> None:
    doc = env.gdb.json("kd tss --json")
    assert {f"rsp{i}" for i in range(3)} | {f"ist{i}" for i in range(1, 8)} | {"iopb"} <= doc.keys()
    k = env.kd["TSS"]
    assert doc["tr"]["selector"] == h(env.kd["TR"]["sel"]) and h(doc["tr"]["base"]) == h(k["base"])
    for key in ("rsp0", "ist1", "ist2", "ist3"):
        assert h(doc[key]) == h(k[key]), key
    for key in ("rsp1", "rsp2", "ist4", "ist5", "ist6", "ist7"):  # the kernel leaves them 0
        assert h(doc[key]) == 0, key
    stacks = {name.split()[1]: f for name, f in env.kd.items() if name.startswith("STACK ")}
    assert h(doc["rsp0"]) == h(stacks["rsp0"]["top"]) and h(doc["ist1"]) == h(stacks["df"]["top"])
    assert doc["iopb"] == h(k["iopb"]) and doc["ist_users"]["ist1"] == [8]
    assert doc["warnings"] == []


def test_cr_matches_kernel(env: Env) -> None:
    doc = env.gdb.json("kd cr --json")
    k = env.kd["CR"]
    assert h(doc["cr0"]["raw"]) == h(k["cr0"]) and h(doc["cr3"]["raw"]) == h(k["cr3"])
    assert h(doc["cr4"]["raw"]) == h(k["cr4"]) and h(doc["efer"]["raw"]) == h(env.kd["MSR"]["EFER"])
    assert doc["mode"] == "long" and doc["cpl"] == 0 and doc["warnings"] == []
    text = env.gdb.console("kd cr")
    assert re.search(r"^CR0=0x80010033: PG cd nw am WP NE ET ts em MP PE$", text, re.M)


@pytest.mark.parametrize("name,key", [("star", "STAR"), ("lstar", "LSTAR"), ("sfmask", "SFMASK"),
                                      ("pat", "PAT"), ("efer", "EFER"),
                                      ("apic_base", "APIC_BASE")])
def test_msr_matches_kernel(env: Env, name: str, key: str) -> None:
    doc = env.gdb.json(f"kd msr --json {name}")
    assert h(doc["value"]) == h(env.kd["MSR"][key])
    assert doc["warnings"] == []


def test_pat_command(env: Env) -> None:
    doc = env.gdb.json("kd pat --json")
    assert h(doc["raw"]) == h(env.kd["MSR"]["PAT"])
    assert doc["entries"][4]["type"] == "WC"  # the kernel's framebuffer entry
    assert "verified" in env.gdb.console("kd pat")


def test_efer_and_sreg(env: Env) -> None:
    assert h(env.gdb.json("kd efer --json")["raw"]) == h(env.kd["MSR"]["EFER"])
    doc = env.gdb.json("kd sreg --json")
    assert doc["cs"]["selector"] == 0x08 and doc["cs"]["long"] and doc["tr"]["selector"] == 0x28
    assert doc["cs"]["selector"] == h(env.kd["SEG"]["cs"])  # SS is 0 here: CPL 3 -> 0 entry
    assert h(doc["idtr"]["base"]) == h(env.kd["IDTR"]["base"])
    assert h(doc["gdtr"]["base"]) == h(env.kd["GDTR"]["base"])
    assert h(doc["kernel_gs_base"]) == 0 or h(doc["gs_base"]) == h(env.kd["PERCPU"]["base"]) or \
        h(doc["kernel_gs_base"]) == h(env.kd["PERCPU"]["base"])
    assert doc["warnings"] == []


# -- MSR injection leaves everything as it was -------------------------------------------------


def _snapshot(gdb: MiGdb) -> tuple[str, str, str]:
    # gdb's whole register file (x87/SSE included) and QEMU's view: segment caches,
    # descriptor-table registers, debug registers, CPL/HLT/SMM state.
    regs = gdb.console("info all-registers") + gdb.console("monitor info registers")
    rip = int(gdb.console("print/x $rip").split("=")[1], 16)
    code = gdb.console(f"x/32xb {rip - 8:#x}")
    mode = gdb.console("maintenance packet qqemu.PhyMemMode")
    return regs, code, mode


def _forget(gdb: MiGdb) -> None:
    """Drop kdiag's per-stop cache so the next MSR read injects rdmsr again."""
    gdb.console("python import gdbext.target as _t; _t.forget()")


@pytest.mark.parametrize("msr", ["star", "lstar", "pat", "sfmask", "apic_base", "0x10"])
def test_msr_injection_restores_every_register_and_byte(env: Env, msr: str) -> None:
    before = _snapshot(env.gdb)
    _forget(env.gdb)
    out = env.gdb.console(f"kd msr {msr}")
    assert "read by injecting rdmsr" in out and "restored, all registers verified" in out
    assert "no code was run" not in out
    assert _snapshot(env.gdb) == before


def test_a_second_read_at_the_same_stop_runs_no_code(env: Env) -> None:
    _forget(env.gdb)
    first = env.gdb.json("kd msr --json star")
    again = env.gdb.json("kd msr --json star")
    assert h(first["value"]) == h(again["value"]) == h(env.kd["MSR"]["STAR"])
    assert "no code was run" in again["method"] and "no code was run" not in first["method"]
    # Another register state (as after the guest ran) misses the cache: the read injects again.
    env.gdb.console("set $r15 = $r15 ^ 1")
    try:
        assert "no code was run" not in env.gdb.json("kd msr --json star")["method"]
    finally:
        env.gdb.console("set $r15 = $r15 ^ 1")


def test_injection_refuses_when_gdbs_registers_are_stale(env: Env) -> None:
    """The injection restores the registers gdb cached at the stop; if QEMU's differ (the
    guest ran behind gdb's back, e.g. QMP `cont`/`stop`), restoring them would corrupt the
    guest, so it refuses. Simulated without running the guest: a raw `P` packet changes
    QEMU's RAX while gdb keeps its cached value."""
    rax = int(env.gdb.console("print/x $rax").split("=")[1], 16)
    before = _snapshot(env.gdb)
    _forget(env.gdb)
    env.gdb.console(f"maintenance packet P0={(rax ^ 0x10).to_bytes(8, 'little').hex()}")
    try:
        with pytest.raises(GdbError, match="behind gdb's back"):
            env.gdb.console("kd pat")
    finally:
        env.gdb.console(f"maintenance packet P0={rax.to_bytes(8, 'little').hex()}")
    assert _snapshot(env.gdb) == before


def test_physical_reads_through_packets_restore_the_mode(env: Env) -> None:
    """GdbTarget.physical_reads() keeps PhyMemMode on across packet reads (no pmemsave) and
    puts the user's mode back at the end; a virtual read inside switches back and forth. The
    bytes equal the core's at the same stop."""
    before = _snapshot(env.gdb)
    out = env.tmp / "physreads.json"
    script = env.tmp / "physreads.py"
    script.write_text(f"""\
import json
from gdbext.target import GdbTarget
from kdiag.target.core import CoreTarget
core = CoreTarget.from_path({str(env.core)!r})
t = GdbTarget(use_pmemsave=False)
st = t.state()
pas = [st.cr3 & ~0xFFF, 0x100000, 0x1000]
with t.physical_reads():
    got = [t.read_phys(pa, 4096) for pa in pas]
    mid = t._cur_phys
    virt = t.read_virt(st.gdtr.base, 8)
    after_virt = t._cur_phys
    got.append(t.read_phys(pas[0], 64))
res = {{"same": got[:3] == [core.read_phys(pa, 4096) for pa in pas] and got[3] == got[0][:64],
        "mid": mid, "after_virt": after_virt, "end": t._cur_phys,
        "virt": virt == core.read_virt(st.gdtr.base, 8)}}
open({str(out)!r}, "w").write(json.dumps(res))
""")
    env.gdb.console(f"source {script}")
    res = json.loads(out.read_text())
    assert res == {"same": True, "mid": True, "after_virt": True, "virt": True, "end": False}
    assert _snapshot(env.gdb) == before  # PhyMemMode 0 again, every register and byte as before


def test_msr_unknown_is_refused_without_touching_anything(env: Env) -> None:
    before = _snapshot(env.gdb)
    with pytest.raises(GdbError, match="not one kdiag knows.*--force"):
        env.gdb.console("kd msr 0x12345")
    assert _snapshot(env.gdb) == before


# -- MI and console print the same; errors are one line -----------------------------------------


def _console_sections(out: str) -> list[str]:
    body = out.split("===TABLES===\n", 1)[1]
    return [s.strip("\n") for s in body.split("===\n")][: len(TABLE_COMMANDS)]


def test_console_and_mi_print_the_same_tables(env: Env) -> None:
    console = _console_sections(env.console_out)
    for cmd, text in zip(TABLE_COMMANDS, console, strict=True):
        assert env.gdb.console(cmd).strip("\n") == text, cmd


def test_errors_are_gdb_errors_not_tracebacks(env: Env) -> None:
    for cmd, pattern in [("kd msr bogus", "unknown MSR 'bogus'"),
                         ("kd gdt --nonsense", "unrecognized arguments"),
                         ("kd idt 0x20 zzz_no_such_symbol", "not a number or expression")]:
        with pytest.raises(GdbError) as info:
            env.gdb.console(cmd)
        assert re.search(pattern, info.value.message), info.value.message
        assert "Traceback" not in info.value.log and "Traceback" not in info.value.message


def test_help_texts_are_manuals(env: Env) -> None:
    listing = env.gdb.console("help kd")
    for sub in ("gdt", "idt", "tss", "cr", "efer", "pat", "msr", "sreg", "core"):
        assert f"kd {sub} -- " in listing
        manual = env.gdb.console(f"help kd {sub}")
        assert "Usage: kd " + sub in manual and "Examples:" in manual
    assert "Usage: kd gdt" in env.gdb.console("help info gdt")


def test_ranges_and_gdb_expressions(env: Env) -> None:
    text = env.gdb.console("kd idt 0x20 0x21")
    assert len(text.strip().splitlines()) == 3
    text = env.gdb.console("kd gdt $cs")
    assert text.splitlines()[1].startswith("gdt[0x0008]=Code segment")


# -- offline: the same tables from a dump-guest-memory core, and the Target contract -------------


def _kdiag(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kdiag", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_kd_core_saved_the_core_and_the_msrs(env: Env) -> None:
    sidecar = json.loads(Path(f"{env.core}.msrs.json").read_text())
    for key, index in [("PAT", 0x277), ("STAR", 0xC0000081), ("LSTAR", 0xC0000082),
                       ("SFMASK", 0xC0000084), ("EFER", 0xC0000080), ("APIC_BASE", 0x1B)]:
        assert h(sidecar["msrs"][f"{index:#x}"]) == h(env.kd["MSR"][key]), key
    assert sidecar["unavailable"] == {} and "verified" in sidecar["method"]
    assert f"core: {env.core}" in env.core_out


# The CLI on the core prints the gdb command's text. The MSR commands differ only in the
# provenance line: gdb read the value at this stop, the CLI from the core's MSR file.
CLI_SAME = ["gdt", "idt", "tss", "sreg", "cr"]
CLI_SAME_BUT_PROVENANCE = ["pat", "msr star", "msr lstar", "msr sfmask", "msr efer"]


@pytest.mark.parametrize("cmd", CLI_SAME + CLI_SAME_BUT_PROVENANCE)
def test_cli_on_the_core_prints_what_gdb_prints(env: Env, cmd: str) -> None:
    extra = ["--elf", str(KERNEL_ELF)] if cmd.split()[0] in ("idt", "tss", "msr") else []
    proc = _kdiag(*cmd.split(), "--core", str(env.core), *extra)
    assert proc.returncode == 0, proc.stderr
    live = env.gdb.console(f"kd {cmd}")
    if cmd in CLI_SAME:
        assert proc.stdout == live
        return
    offline, online = proc.stdout.rstrip("\n").splitlines(), live.rstrip("\n").splitlines()
    assert offline[:-1] == online[:-1] and len(offline) > 1
    if "rdmsr" in online[-1]:
        assert offline[-1].strip().startswith("(saved beside the core by `kd core`: read by "
                                              "injecting rdmsr")


def test_cli_json_on_the_core_matches_the_kernel(env: Env) -> None:
    doc = json.loads(_kdiag("cr", "--core", str(env.core), "--json").stdout)
    assert h(doc["cr3"]["raw"]) == h(env.kd["CR"]["cr3"]) and h(doc["cr4"]["raw"]) == h(env.kd["CR"]["cr4"])
    assert h(doc["efer"]["raw"]) == h(env.kd["MSR"]["EFER"]) and "efer_inferred" not in doc
    doc = json.loads(_kdiag("pat", "--core", str(env.core), "--json").stdout)
    assert h(doc["raw"]) == h(env.kd["MSR"]["PAT"])


def test_gdb_target_passes_the_contract_against_the_core(env: Env) -> None:
    out = env.tmp / "contract.json"
    env.gdb.console(f"python import tests.integration.gdb_contract as c; c.run({str(env.core)!r}, "
                    f"{str(out)!r})", timeout=180)
    results = json.loads(out.read_text())
    failed = {k: v for k, v in results.items() if v != "ok"}
    assert not failed, failed
    assert len(results) >= 10


def test_state_equals_gdbs_own_registers(env: Env) -> None:
    """GdbTarget.state() comes from QEMU's dump (plus CR8/KERNEL_GS_BASE from gdb): every
    integer register must equal what gdb's `g` packet gave gdb at the same stop."""
    script = (
        "python import json, gdb, gdbext.target as t; s = t.GdbTarget().state(); "
        "f = gdb.newest_frame(); reg = lambda n: int(f.read_register(n)) & (2**64 - 1); "
        "mine = dict(s.gpr, cr0=s.cr0, cr2=s.cr2, cr3=s.cr3, cr4=s.cr4, cr8=s.cr8, "
        "efer=s.efer, fs_base=s.fs_base, gs_base=s.gs_base, k_gs_base=s.kernel_gs_base); "
        "names = [*t.GPRS, 'rip', 'cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'fs_base', "
        "'gs_base', 'k_gs_base']; "
        "diff = {n: [hex(mine.get(n) or 0), hex(reg(n))] for n in names if mine.get(n) != reg(n)}; "
        "diff.update({'eflags': [hex(s.rflags), hex(reg('eflags'))]} if s.rflags != reg('eflags') "
        "else {}); print('STATE' + json.dumps(diff))")
    out = env.gdb.console(script)
    line = next(x for x in out.splitlines() if x.startswith("STATE"))
    assert json.loads(line[5:]) == {}


def test_memsave_file_is_private_and_emptied_after_each_read(env: Env) -> None:
    """QEMU's memsave file is kept between reads (cheaper than creating one each time), in the
    0700 directory, and emptied after every read: no guest bytes linger on disk."""
    out = env.gdb.console(
        "python import os, gdb, gdbext.target as t; t.forget(); "
        "gdb.execute('kd idt', to_string=True); p = t._FILES.get('file'); "
        "print('MEMFILE', os.path.getsize(p), oct(os.stat(os.path.dirname(p)).st_mode & 0o777))")
    assert "MEMFILE 0 0o700" in out


def test_memsave_survives_its_file_or_directory_being_removed(env: Env) -> None:
    """The memsave file is held open between reads. When a temp cleaner deletes the file (QEMU
    then creates a new one) or the whole private directory (QEMU cannot write: that read falls
    back to packets), `kd idt` still prints the same table, and the next read uses a fresh
    private file again."""
    want = env.gdb.console("kd idt")
    snippet = (
        "python import os, shutil, gdb, gdbext.target as t; t.forget(); "
        "gdb.execute('kd idt', to_string=True); p = t._FILES['file']; {remove}; t.forget(); "
        "print('OUT1', gdb.execute('kd idt', to_string=True) == {want!r}); t.forget(); "
        "print('OUT2', gdb.execute('kd idt', to_string=True) == {want!r}); "
        "q = t._FILES['file']; print('FILE', os.path.getsize(q), "
        "oct(os.stat(os.path.dirname(q)).st_mode & 0o777), os.stat(q).st_nlink)")
    for remove in ("os.unlink(p)", "shutil.rmtree(os.path.dirname(p))"):
        out = env.gdb.console(snippet.format(remove=remove, want=want))
        assert "OUT1 True" in out and "OUT2 True" in out, (remove, out)
        assert "FILE 0 0o700 1" in out, (remove, out)


def test_flag_only_command_lines_keep_their_own_meaning(env: Env) -> None:
    """Command lines of flags only are parsed once per command and copied after that: each
    spelling must still mean what it says, in any order, and a value argument still parses."""
    outs = {line: env.gdb.console(line) for line in
            ["kd idt --json", "kd idt", "kd idt -v", "kd idt --json", "kd idt --json -v",
             "kd idt -v --json", "kd idt 14", "kd idt"]}
    assert json.loads(outs["kd idt --json"])["entries"]
    assert outs["kd idt"].startswith("IDT base=") and "idt[0x0e]" in outs["kd idt"]
    assert len(outs["kd idt -v"]) > len(outs["kd idt"])  # the bit-field lines
    assert json.loads(outs["kd idt --json -v"]) == json.loads(outs["kd idt -v --json"])
    assert "idt[0x0e]" in outs["kd idt 14"] and "idt[0x0d]" not in outs["kd idt 14"]
