"""The checks on the diary's bugs, live: each fault scenario of the bundled kernel in QEMU + gdb.

One VM per scenario (module-scoped, parametrized). For the scenarios that fault later, gdb
attaches at reset (``-S``) and stops the kernel right after the broken setup step, where the
developer would look; idt-missing is inspected after its triple fault, frozen by -no-reboot
-no-shutdown (gdb sees SIGQUIT; QEMU reports 'paused (shutdown)').
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from qmp_tools import launcher as L
from tests.integration.gdb_session import GdbError, MiGdb

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed")


@dataclass
class Case:
    scenario: str
    stop_at: str | None  # break here (gdb attached at reset); None: wait for the crash


CASES = {
    "cs-not-reloaded": Case("cs-not-reloaded", "tss_init"),
    "sysret-gdt-order": Case("sysret-gdt-order", "user_start"),
    "tss-rsp0-null": Case("tss-rsp0-null", "user_enter"),  # RSP0 is zeroed just before
    "idt-missing": Case("idt-missing", None),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def stopped(request: pytest.FixtureRequest) -> Iterator[tuple[str, MiGdb, L.QemuInstance]]:
    L.build_kernel("x86_64")
    case = CASES[request.param]
    vm = L.QemuInstance.start(L.QemuConfig(scenario=case.scenario, gdb_port=0,
                                           wait_gdb=case.stop_at is not None, build=False))
    gdb = None
    try:
        assert vm.gdb_port
        if case.stop_at is None:
            assert vm.wait_stopped(timeout=180) == L.Outcome.TRIPLE_FAULT.value
            gdb = MiGdb(vm.gdb_port)
        else:
            gdb = MiGdb(vm.gdb_port)
            gdb.cont_to(case.stop_at, timeout=180)
        yield case.scenario, gdb, vm
    finally:
        if gdb is not None:
            gdb.close()
        vm.stop()


def ids(doc: dict[str, object]) -> list[str]:
    return [w["id"] for w in doc["warnings"]]  # type: ignore[index, union-attr]


def test_the_right_warning_for_each_scenario(stopped: tuple[str, MiGdb, L.QemuInstance]) -> None:
    scenario, gdb, _ = stopped
    if scenario == "cs-not-reloaded":
        doc = gdb.json("kd sreg --json")
        w = [x for x in doc["warnings"] if x["id"] == "segment-beyond-gdt"]
        assert w and "CS=0x0038" in w[0]["message"] and "iretq" in w[0]["message"]
        text = gdb.console("kd gdt")
        assert "gdt[0x0038]=(beyond the limit 0x37)  <- cs" in text
        assert "error [segment-beyond-gdt]" in text
    elif scenario == "sysret-gdt-order":
        doc = gdb.json("kd gdt --star --json")
        w = [x for x in doc["warnings"] if x["id"] == "star-sysret"]
        assert w, doc["warnings"]
        assert "SS=0x001b lands on 64-bit code" in w[0]["message"]
        assert "CS=0x0023 lands on writable data" in w[0]["message"]
        assert "user data descriptor first" in w[0]["message"]
        star = gdb.json("kd msr --json star")
        assert "star-sysret" in ids(star)
    elif scenario == "tss-rsp0-null":
        doc = gdb.json("kd tss --json")
        assert doc["rsp0"] == "0x0" and "tss-stack" in ids(doc)
        assert "RSP0 is 0" in gdb.console("kd tss")
    elif scenario == "idt-missing":
        doc = gdb.json("kd idt --json")
        assert doc["limit"] == "0x0" and doc["entries"] == []
        assert "idt-limit" in ids(doc)
    else:  # pragma: no cover
        pytest.fail(scenario)


def test_msr_reads_refuse_or_restore(stopped: tuple[str, MiGdb, L.QemuInstance]) -> None:
    """After a triple fault the step would hang: refused, saying why. Elsewhere: read."""
    scenario, gdb, vm = stopped
    if scenario == "idt-missing":
        with pytest.raises(GdbError, match=r"paused \(shutdown\).*triple-faulted"):
            gdb.console("kd msr star")
        with pytest.raises(GdbError, match="shutdown"):
            gdb.console("kd pat")
        assert "EFER=0x" in gdb.console("kd efer")  # no injection needed: still works
        assert vm.status() == "shutdown"
    else:
        before = gdb.console("info registers")
        assert "verified" in gdb.console("kd msr lstar")
        assert gdb.console("info registers") == before


def test_tables_still_decode(stopped: tuple[str, MiGdb, L.QemuInstance]) -> None:
    _, gdb, _ = stopped
    for cmd in ("kd gdt", "kd cr", "kd sreg", "kd tss", "kd efer"):
        assert gdb.console(cmd).strip()
