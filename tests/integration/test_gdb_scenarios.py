"""The checks on the diary's bugs, live, in one VM: real gdb (MI3) against the bundled kernel.

One boot of the ``cs-not-reloaded`` scenario with gdb attached at reset (``-S``). At
``gdt_init`` the test also sets the kernel's own knobs of the ``sysret-gdt-order`` and
``tss-rsp0-null`` scenarios (``knobs.gdt_user_code_first``, ``knobs.tss_rsp0_null``: the
variables those scenarios set, read by the same code paths), so one boot walks through all three
bugs, each at the stop where a developer would look:

A. ``tss_init`` (CPL 0): CS still holds OVMF's 0x38, beyond the new GDT's limit 0x37
   (``segment-beyond-gdt``). Then ``set $cs = 0x8`` (QEMU's gdbstub loads the cache from the
   GDT) repairs it, and the warning goes away.
B. ``user_enter`` (CPL 0): the GDT has user code before user data, so STAR's SYSRET selectors
   land on the wrong types (``star-sysret``), and TSS.RSP0 is 0 (``tss-stack``). The MSR
   injection is refused when a step could be diverted (QEMU's step flags let interrupts in; a
   breakpoint inserted at RIP) and restores every register and byte when it runs.
C. ``user_entry`` (CPL 3, ring 3's first instruction): MSR reads are refused, nothing touched.
D. The IDT is then zeroed through gdb and the guest continued: its next interrupt triple-faults
   (frozen by -no-reboot -no-shutdown, QEMU 'paused (shutdown)'); ``kd idt`` reports the gates
   not present, MSR injection is refused (a step would hang), EFER still reads (no injection).

The fixture runs every command once, in this order, and keeps the outputs; the tests only judge
them, so they do not depend on each other or on their order.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qmp_tools import launcher as L
from tests.integration.gdb_session import GdbError, MiGdb

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed")


def _snapshot(gdb: MiGdb) -> tuple[str, str]:
    # gdb's whole register file (x87/SSE included) and QEMU's view: segment caches,
    # descriptor-table registers, debug registers, CPL/HLT/SMM state.
    regs = gdb.console("info all-registers") + gdb.console("monitor info registers")
    rip = int(gdb.console("print/x $rip").split("=")[1], 16)
    return regs, gdb.console(f"x/16xb {rip:#x}")


def _fresh(gdb: MiGdb, cmd: str) -> str:
    """Run ``cmd`` with kdiag's per-stop MSR cache dropped, so it injects (or refuses) anew."""
    gdb.console("python import gdbext.target as _t; _t.forget()")
    return gdb.console(cmd)


def _error(gdb: MiGdb, cmd: str) -> str:
    try:
        out = _fresh(gdb, cmd)
    except GdbError as err:
        return err.message + ("\nTRACEBACK" if "Traceback" in err.log else "")
    return f"NO ERROR: {out}"


class Outputs(dict[str, Any]):
    pass


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outputs]:
    L.build_kernel("x86_64")
    vm = L.QemuInstance.start(L.QemuConfig(scenario="cs-not-reloaded", gdb_port=0,
                                           wait_gdb=True, build=False))
    gdb = None
    o = Outputs()
    try:
        assert vm.gdb_port
        gdb = MiGdb(vm.gdb_port)
        gdb.cont_to("gdt_init", timeout=180)
        gdb.console("set var knobs.gdt_user_code_first = 1")
        gdb.console("set var knobs.tss_rsp0_null = 1")

        # A. stale CS
        gdb.cont_to("tss_init")
        o["A.sreg"] = gdb.json("kd sreg --json")
        o["A.sreg_text"] = gdb.console("kd sreg")
        o["A.gdt"] = gdb.console("kd gdt")
        o["A.gdt_json"] = gdb.json("kd gdt --json")
        before = _snapshot(gdb)
        o["A.lstar"] = _fresh(gdb, "kd msr lstar")
        o["A.same"] = _snapshot(gdb) == before
        gdb.console("set $cs = 0x8")
        o["A.sreg_repaired"] = gdb.json("kd sreg --json")

        # B. SYSRET selectors, RSP0 = 0, injection refusals and restores
        gdb.cont_to("user_enter")
        o["B.gdt_star"] = gdb.json("kd gdt --star --json")
        o["B.gdt_star_text"] = _fresh(gdb, "kd gdt --star")
        o["B.star"] = json.loads(_fresh(gdb, "kd msr --json star"))
        o["B.tss"] = gdb.json("kd tss --json")
        o["B.tss_text"] = gdb.console("kd tss")
        before = _snapshot(gdb)
        gdb.console("maintenance packet Qqemu.sstep=0x1")  # interrupts allowed during a step
        o["B.refused_sstep"] = _error(gdb, "kd msr star")
        gdb.console("maintenance packet Qqemu.sstep=0x7")
        gdb.console("set breakpoint always-inserted on")
        gdb.console("break *$rip")
        o["B.refused_bp"] = _error(gdb, "kd pat")
        gdb.console("delete")
        gdb.console("set breakpoint always-inserted off")
        o["B.same_after_refusals"] = _snapshot(gdb) == before
        o["B.pat"] = _fresh(gdb, "kd pat")
        o["B.same_after_pat"] = _snapshot(gdb) == before

        # C. ring 3
        gdb.cont_to("user_entry")
        before = _snapshot(gdb)
        o["C.cpl"] = gdb.json("kd cr --json")["cpl"]
        o["C.refused_star"] = _error(gdb, "kd msr star")
        o["C.refused_gdt_star"] = _error(gdb, "kd gdt --star")
        o["C.same"] = _snapshot(gdb) == before
        o["C.gdt"] = gdb.json("kd gdt --json")  # reading tables needs no CPL 0
        core = tmp_path_factory.mktemp("cpl3") / "cpl3.elf"
        o["C.core"] = _fresh(gdb, f"kd core {core}")  # written; the injected MSRs are not
        o["C.core_msrs"] = json.loads(Path(f"{core}.msrs.json").read_text())
        o["C.same_after_core"] = _snapshot(gdb) == before
        core.unlink()

        # D. zeroed IDT -> triple fault, frozen
        idt = gdb.json("kd idt --json")
        base, limit = int(idt["base"], 16), int(idt["limit"], 16)
        gdb.console(f"python gdb.selected_inferior().write_memory({base:#x}, bytes({limit + 1}))")
        gdb.gdb.write("-exec-continue", read_response=False)
        o["D.stop"] = gdb.wait_stopped(timeout=60)
        o["D.status"] = vm.status()
        o["D.idt"] = gdb.json("kd idt --json")
        o["D.refused_star"] = _error(gdb, "kd msr star")
        o["D.refused_pat"] = _error(gdb, "kd pat")
        o["D.efer"] = gdb.console("kd efer")
        o["D.tables"] = {c: gdb.console(c) for c in ("kd gdt", "kd cr", "kd sreg", "kd tss")}
        yield o
    finally:
        if gdb is not None:
            gdb.close()
        vm.stop()


def ids(doc: dict[str, Any]) -> list[str]:
    return [w["id"] for w in doc["warnings"]]


def test_stale_cs_beyond_the_gdt_limit(out: Outputs) -> None:
    w = [x for x in out["A.sreg"]["warnings"] if x["id"] == "segment-beyond-gdt"]
    assert w and "CS=0x0038" in w[0]["message"] and "iretq" in w[0]["message"]
    assert any("limit 0x37" in e or "0x37" in e for e in w[0]["evidence"]), w[0]
    assert "segment-beyond-gdt" in out["A.sreg_text"]
    assert "gdt[0x0038]=(beyond the limit 0x37)  <- cs" in out["A.gdt"]
    assert "error [segment-beyond-gdt]" in out["A.gdt"]
    assert "segment-beyond-gdt" in ids(out["A.gdt_json"])


def test_reloading_cs_clears_the_warning(out: Outputs) -> None:
    assert out["A.sreg_repaired"]["cs"]["selector"] == 0x08
    assert "segment-beyond-gdt" not in ids(out["A.sreg_repaired"])


def test_msr_injection_in_the_stale_cs_state_restores_everything(out: Outputs) -> None:
    assert "restored, all registers verified" in out["A.lstar"] and out["A.same"]


def test_sysret_selectors_on_the_wrong_descriptors(out: Outputs) -> None:
    w = [x for x in out["B.gdt_star"]["warnings"] if x["id"] == "star-sysret"]
    assert w, out["B.gdt_star"]["warnings"]
    msg = w[0]["message"]
    assert "SS=0x001b lands on 64-bit code" in msg and "CS=0x0023 lands on writable data" in msg
    assert "user data descriptor first" in msg
    assert "star-sysret" in out["B.gdt_star_text"] and "verified" in out["B.gdt_star_text"]
    assert "star-sysret" in ids(out["B.star"])
    by_sel = {e["selector"]: e for e in out["B.gdt_star"]["entries"]}
    assert (by_sel[0x18]["kind"], by_sel[0x20]["kind"]) == ("code", "data")


def test_tss_rsp0_null(out: Outputs) -> None:
    assert out["B.tss"]["rsp0"] == "0x0" and "tss-stack" in ids(out["B.tss"])
    assert "RSP0 is 0" in out["B.tss_text"]


def test_injection_refused_where_the_step_could_be_diverted(out: Outputs) -> None:
    assert "single-step flags" in out["B.refused_sstep"]
    assert "breakpoint" in out["B.refused_bp"] and "RIP" in out["B.refused_bp"]
    for key in ("B.refused_sstep", "B.refused_bp"):
        assert not out[key].startswith("NO ERROR") and "TRACEBACK" not in out[key]
    assert out["B.same_after_refusals"]


def test_injection_restores_every_register_and_byte(out: Outputs) -> None:
    assert "restored, all registers verified" in out["B.pat"] and out["B.same_after_pat"]


def test_refused_at_cpl3_without_touching_anything(out: Outputs) -> None:
    assert out["C.cpl"] == 3
    for key in ("C.refused_star", "C.refused_gdt_star"):
        assert "CPL 3" in out[key] and "TRACEBACK" not in out[key], out[key]
    assert out["C.same"]
    assert out["C.gdt"]["entries"]


def test_kd_core_at_cpl3_saves_the_core_and_says_which_msrs_it_could_not(out: Outputs) -> None:
    assert "core: " in out["C.core"] and "not saved: IA32_PAT" in out["C.core"]
    assert "CPL 3" in out["C.core"] and out["C.same_after_core"]
    msrs = out["C.core_msrs"]
    assert list(msrs["msrs"]) == ["0xc0000080"]  # EFER: gdb's register, no injection
    assert "0x277" in msrs["unavailable"]


def test_after_a_triple_fault(out: Outputs) -> None:
    assert out["D.stop"].get("signal-name") == "SIGQUIT"  # how gdb sees QEMU's frozen shutdown
    assert out["D.status"] == "shutdown"
    assert "idt-gate-not-present" in ids(out["D.idt"])
    for key in ("D.refused_star", "D.refused_pat"):
        assert "paused (shutdown)" in out[key] and "triple-faulted" in out[key], out[key]
    assert "EFER=0x" in out["D.efer"]
    assert all(text.strip() for text in out["D.tables"].values())
