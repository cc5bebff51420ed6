"""`kdiag gdt|idt|tss|cr|sreg|pat|msr --core dump.elf`: same text as the shared reports, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdiag.cli import main
from kdiag.render import reports
from kdiag.target.core import CoreTarget
from tests.unit.corewriter import write_qemu_core
from tests.unit.machine_builder import RAM, Machine


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    fake = Machine().build()
    p = tmp_path_factory.mktemp("core") / "dump.elf"
    return write_qemu_core(p, [fake.state()], [(0, fake.read_phys(0, RAM))])


@pytest.fixture(scope="module")
def broken_core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    fake = Machine(idt_limit=0xFF).build()
    p = tmp_path_factory.mktemp("core") / "broken.elf"
    return write_qemu_core(p, [fake.state()], [(0, fake.read_phys(0, RAM))])


@pytest.mark.parametrize("cmd,report", [
    ("gdt", lambda t: reports.gdt_report(t, msrs={})),
    ("idt", lambda t: reports.idt_report(t)),
    ("tss", lambda t: reports.tss_report(t)),
    ("cr", lambda t: reports.cr_report(t)),
    ("sreg", lambda t: reports.sreg_report(t)),
])
def test_cli_prints_the_shared_report(core: Path, cmd: str, report: object,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main([cmd, "--core", str(core)]) == 0
    out = capsys.readouterr().out
    assert out == report(CoreTarget.from_path(core)).text + "\n"  # type: ignore[operator]


@pytest.mark.parametrize("cmd", ["gdt", "idt", "tss", "cr", "sreg"])
def test_cli_json_is_one_document(core: Path, cmd: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([cmd, "--core", str(core), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert isinstance(doc, dict) and "warnings" in doc


def test_cli_exit_1_on_a_diagnosed_problem(broken_core: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["idt", "--core", str(broken_core)]) == 1
    assert "error [idt-limit]" in capsys.readouterr().out


def test_cli_idt_range(core: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["idt", "--core", str(core), "0x0e"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("idt[0x0e]=64-bit Interrupt Gate")


def test_cli_msr_from_core(core: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["msr", "kernel_gs_base", "--core", str(core)]) == 0
    assert "IA32_KERNEL_GS_BASE (0xc0000102)" in capsys.readouterr().out
    assert main(["pat", "--core", str(core)]) == 2
    assert "kdiag: error: a QEMU core holds no MSR 0x277" in capsys.readouterr().err


def test_cli_bad_core_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x").write_text("nope")
    assert main(["gdt", "--core", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdiag: error:") and err.count("\n") == 1


def test_cli_unknown_msr_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["msr", "bogus", "--value", "1"]) == 2
    assert "unknown MSR 'bogus'" in capsys.readouterr().err
