"""``kdiag triage`` CLI: golden text/JSON on committed logs, exit codes, one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from kdiag.cli import main
from kdiag.triage.causes import CAUSE_IDS
from tests.golden.cases import CASES

ROOT = Path(__file__).resolve().parent.parent.parent
EXPECTED = ROOT / "tests" / "golden" / "expected"


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    rc, out, _ = _run(CASES[name])
    got = f"exit {rc}\n{out}"
    want = (EXPECTED / name).read_text()
    assert got == want, f"golden {name} differs; rerun tests/golden/regen.py and review the diff"


def test_json_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    rc, out, _ = _run(["triage", "tests/golden/logs/lm64-user-rsp0.log", "--json"])
    assert rc == 1
    doc = json.loads(out)
    for key in ("outcome", "cpu", "mode", "trigger", "chain", "first_fault", "registers",
                "location", "causes", "resets_before", "notes"):
        assert key in doc
    assert doc["outcome"] == "triple-fault" and doc["mode"] == "long" and doc["cpu"] == 0
    assert doc["trigger"]["vector"] == "0x80" and doc["trigger"]["software_int"] is True
    ff = doc["first_fault"]
    assert ff["mnemonic"] == "#PF" and ff["cr2"] == "0xfffffffffffffff8" and ff["cpl"] == 3
    assert ff["error_code_decoded"]["write"] is True and ff["log_line"] == 498
    for ev in doc["chain"]:
        for k in ("vector", "mnemonic", "error_code", "cpl", "cs", "ip", "sp", "cr2", "log_line"):
            assert k in ev
    assert doc["registers"]["rip"] == "0x101000"
    assert doc["registers"]["idtr"] == {"base": "0x10a000", "limit": "0xfff"}
    assert doc["causes"][0]["id"] == "kernel-stack-invalid"
    assert all(c["id"] in CAUSE_IDS for c in doc["causes"])
    assert doc["causes"][0]["evidence"][0]["log_line"] == 476


def test_json_32bit_registers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    _, out, _ = _run(["triage", "tests/golden/logs/pm32-idt0-pf.log", "--json"])
    regs = json.loads(out)["registers"]
    assert regs["eip"] == "0x100069" and regs["rip"] == "0x100069" and regs["width"] == 32


def test_reset_only_json_infers_ip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    _, out, _ = _run(["triage", "tests/golden/logs/lm64-idt0-pf.reset-only-reboot.log", "--json"])
    doc = json.loads(out)
    assert doc["first_fault"]["inferred"] is True and doc["first_fault"]["ip"] == "0x100187"
    assert doc["registers"]["rip"] == "0x100187" and doc["registers"]["source"] == "cpu-reset"


def test_clean_exit_0(tmp_path: Path) -> None:
    log = tmp_path / "clean.log"
    src = (ROOT / "tests" / "golden" / "logs" / "lm64-idt0-pf.reset-only-noreboot.log").read_text()
    log.write_text(src.replace("Triple fault\n", ""))
    rc, out, _ = _run(["triage", str(log)])
    assert rc == 0 and out.startswith("CLEAN")


@pytest.mark.parametrize("content,msg", [
    (b"\x00\x01\x02\x03" * 2000, "binary data"),
    (b"[    0.000000] Linux version 6.1\n" * 100, "no QEMU -d records"),
])
def test_unusable_input_exit_2(tmp_path: Path, content: bytes, msg: str) -> None:
    log = tmp_path / "x.log"
    log.write_bytes(content)
    rc, out, err = _run(["triage", str(log)])
    assert rc == 2 and out == ""
    assert err.startswith("kdiag: error: ") and msg in err and err.count("\n") == 1


def test_bad_elf_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "k.elf"
    bad.write_bytes(b"not an elf")
    rc, _, err = _run(["triage", "tests/golden/logs/lm64-null.log", "--elf", str(bad)])
    assert rc == 2 and "not an ELF" in err and "Traceback" not in err


def test_elf_bias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    # link address + bias = run address: a bias of 0 finds it, a large bias does not
    rc, out, _ = _run(["triage", "tests/golden/logs/lm64-null.log", "--json",
                       "--elf", "tests/golden/src/build/lm64-null.elf@0"])
    assert json.loads(out)["location"]["symbol"] == "long_entry"
    rc, out, _ = _run(["triage", "tests/golden/logs/lm64-null.log", "--json",
                       "--elf", "tests/golden/src/build/lm64-null.elf@0x1000000"])
    assert json.loads(out)["location"] is None
    rc, _, err = _run(["triage", "tests/golden/logs/lm64-null.log",
                       "--elf", "tests/golden/src/build/lm64-null.elf@zz"])
    assert rc == 2 and "bias" in err
