"""Root-cause rules: expected cause ids on every real log; memory-backed rules on FakeTarget."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kdiag.qemulog.parser import from_path
from kdiag.qemulog.regdump import parse_register_dump
from kdiag.target.fake import FakeTarget
from kdiag.triage.causes import CAUSE_IDS
from kdiag.triage.chain import analyze_records
from kdiag.triage.engine import triage_path, triage_records, triage_state
from kdiag.triage.location import KernelImage, parse_elf_spec
from kdiag.triage.model import Cause
from kdiag.triage.rank import rank
from kdiag.x86.descriptors import Gate64
from kdiag.x86.state import SegmentCache, TableRegister
from kdiag.x86.tss import Tss64

ROOT = Path(__file__).resolve().parent.parent.parent
LOGS = ROOT / "tests" / "golden" / "logs"
ELFS = ROOT / "tests" / "golden" / "src" / "build"


def _ids(diag) -> list[str]:  # type: ignore[no-untyped-def]
    return [c.id for c in diag.causes]


# name -> (outcome, expected first cause, other causes that must be listed)
EXPECTED = {
    "lm64-idt0-pf.log": ("triple-fault", "data-unmapped", {"idt-missing"}),
    "lm64-idt0-pf.int-only.log": ("triple-fault", "data-unmapped", {"idt-missing"}),
    "lm64-idt0-ud.log": ("triple-fault", "invalid-opcode", {"idt-missing"}),
    "lm64-gdt-sel.log": ("triple-fault", "gdt-selector-invalid", {"idt-missing"}),
    "lm64-noncanon.log": ("triple-fault", "non-canonical-address", {"idt-missing"}),
    "lm64-null.log": ("triple-fault", "null-pointer", {"idt-missing"}),
    "lm64-nx.log": ("triple-fault", "nx-violation", {"idt-missing"}),
    "lm64-rsvd.log": ("triple-fault", "reserved-bit", {"idt-missing"}),
    "lm64-stack-ovf.log": ("triple-fault", "stack-invalid", set()),
    "lm64-cr3-bad.log": ("triple-fault", "code-unmapped", {"paging-setup"}),
    "lm64-user-rsp0.log": ("triple-fault", "kernel-stack-invalid", set()),
    "lm64-int80-limit.log": ("triple-fault", "idt-gate-invalid", {"kernel-stack-invalid"}),
    "lm64-timer-np.log": ("exception", "idt-gate-invalid", set()),
    "lm64-ud-handled.log": ("exception", "invalid-opcode", set()),
    "lm64-user-kread.log": ("exception", "user-supervisor-violation", set()),
    "pm32-div.log": ("exception", "divide-error", set()),
    "pm32-gdt-sel.log": ("triple-fault", "gdt-selector-invalid", {"idt-missing"}),
    "pm32-idt0-pf.log": ("triple-fault", "data-unmapped", {"idt-missing"}),
    "pm32-ud-idt0.log": ("triple-fault", "invalid-opcode", {"idt-missing"}),
    "lm64-idt0-pf.reset-only-reboot.log": ("triple-fault", "idt-missing", set()),
    "pm32-idt0-pf.reset-only-reboot.log": ("triple-fault", "idt-missing", set()),
    "lm64-idt0-pf.reboot-loop.log": ("triple-fault", "data-unmapped", {"idt-missing"}),
}


def test_every_log_has_an_expectation() -> None:
    assert {p.name for p in LOGS.glob("*.log")} - set(EXPECTED) == {
        "lm64-idt0-pf.reset-only-noreboot.log"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_expected_causes(name: str) -> None:
    outcome, top, others = EXPECTED[name]
    diag = triage_path(LOGS / name)
    assert diag.outcome == outcome
    ids = _ids(diag)
    assert ids and ids[0] == top, ids
    assert others <= set(ids), ids
    for c in diag.causes:
        assert c.id in CAUSE_IDS and 0 < c.confidence <= 1 and c.summary and c.advice
        assert c.evidence, c


@pytest.mark.parametrize("name,elf,top,text", [
    ("lm64-cr3-bad.log", "lm64-cr3-bad.elf", "code-unmapped", None),
    ("lm64-noncanon.log", "lm64-noncanon.elf", "non-canonical-address", "0x8000000000000000"),
    ("lm64-idt0-ud.log", "lm64-idt0-ud.elf", "invalid-opcode", "ud2"),
])
def test_causes_with_elf(name: str, elf: str, top: str, text: str | None) -> None:
    image = KernelImage([parse_elf_spec(str(ELFS / elf))])
    diag = triage_path(LOGS / name, image=image)
    assert diag.causes[0].id == top
    if text:
        assert any(text in e.text for e in diag.causes[0].evidence) or text in diag.causes[0].summary
    ud = next((c for c in diag.causes if c.id == "invalid-opcode"), None)
    if name == "lm64-cr3-bad.log":
        ps = next(c for c in diag.causes if c.id == "paging-setup")
        assert any("mov cr3, rax" in e.text for e in ps.evidence)
    if name == "lm64-idt0-ud.log":
        assert ud is not None and ud.confidence == 0.95 and "ud2" in ud.summary


def test_no_fault_state_note() -> None:
    diag = triage_path(LOGS / "lm64-idt0-pf.reset-only-noreboot.log")
    assert diag.outcome == "triple-fault" and diag.registers is None and not diag.causes
    assert any("-d int" in n and "no fault state" in n for n in diag.notes)
    assert diag.exit_code == 1


def test_startup_only_log_is_clean_with_hint() -> None:
    text = (LOGS / "lm64-idt0-pf.reset-only-noreboot.log").read_text()
    recs = from_path(LOGS / "lm64-idt0-pf.reset-only-noreboot.log")
    recs = recs[:-1]  # drop the Triple fault line: only the start-up resets remain
    assert "Triple fault" in text
    diag = triage_records(recs)
    assert diag.outcome == "clean" and diag.exit_code == 0
    assert any("start-up" in n for n in diag.notes)


def test_rank_is_pure_and_orders() -> None:
    a = Cause("null-pointer", 0.9, "a", (), "x", "root")
    b = Cause("idt-missing", 0.95, "b", (), "x", "escalation")
    c = Cause("idt-missing", 0.95, "b", (), "x", "escalation")
    d = Cause("stack-invalid", 0.9, "d", (), "x", "escalation")
    e = Cause("data-unmapped", 0.35, "e", (), "x", "root")  # weak root guesses rank by confidence
    f = Cause("invalid-opcode", 0.85, "f", (), "x", "root")
    assert [x.summary for x in rank([d, a, b, c, e, f])] == ["a", "f", "b", "d", "e"]


# ---- memory-backed rules on FakeTarget -------------------------------------------------------

PML4, PDPT, PD = 0x1000, 0x2000, 0x3000
IDT, GDT, TSS = 0x10000, 0x11000, 0x12000


def _long_state(**kw):  # type: ignore[no-untyped-def]
    text = (ROOT / "tests" / "golden" / "dumps" / "int64_tf64.txt").read_text()
    st = parse_register_dump(text)
    gpr = dict(st.gpr)
    gpr.update(kw.pop("gpr", {}))
    fields = dict(cr3=PML4, idtr=TableRegister(IDT, 256 * 16 - 1),
                  gdtr=TableRegister(GDT, 0x3F), cr2=0,
                  tr=SegmentCache(0x30, TSS, 0x67, 0x8B00), gpr=gpr)
    fields.update(kw)
    return dataclasses.replace(st, **fields)


def _target(state, mapped_mib: int = 16):  # type: ignore[no-untyped-def]
    t = FakeTarget(state, ram_size=1 << 30)
    t.write_u64(PML4, PDPT | 3)
    t.write_u64(PDPT, PD | 3)
    for i in range(mapped_mib // 2):
        t.write_u64(PD + 8 * i, (i << 21) | 0x83)
    for vec in range(32):
        g = Gate64.make(offset=0x100000 + vec * 16, selector=0x08)
        t.write_phys(IDT + 16 * vec, g.raw.to_bytes(16, "little"))
    t.write_u64(GDT + 8, 0x00AF9A000000FFFF)
    t.write_phys(TSS, Tss64.make(rsp=(0x200000, 0, 0)).raw)
    return t


def test_live_missing_df_gate() -> None:
    st = _long_state()
    t = _target(st)
    t.write_phys(IDT + 16 * 8, bytes(16))
    diag = triage_state(st, target=t)
    gate = [c for c in diag.causes if c.id == "idt-gate-invalid"]
    assert gate and "#DF" in gate[0].summary
    assert any(e.source == "memory" and "all zero" in e.text for e in gate[0].evidence)


def test_live_code_and_idt_unmapped_is_paging_setup() -> None:
    st = _long_state(gpr={"rip": 0x4000_0000})
    t = _target(st)
    st2 = dataclasses.replace(st, idtr=TableRegister(0x8000_0000, 0xFFF))
    t.set_state(st2)
    diag = triage_state(st2, target=t)
    assert diag.causes[0].id == "paging-setup"
    assert any("RIP 0x40000000" in e.text for e in diag.causes[0].evidence)


def test_live_ring3_rsp0_zero() -> None:
    cs3 = SegmentCache(0x23, 0, 0, 0x0020FA00)
    st = _long_state(cpl=3, segments={**_long_state().segments, "cs": cs3})
    t = _target(st)
    t.write_phys(TSS, Tss64.make(rsp=(0, 0, 0)).raw)
    diag = triage_state(st, target=t)
    ks = [c for c in diag.causes if c.id == "kernel-stack-invalid"]
    assert ks and ks[0].confidence >= 0.9 and "RSP0 = 0x0" in ks[0].summary


def test_live_healthy_state_has_no_memory_causes() -> None:
    st = _long_state()
    t = _target(st)
    diag = triage_state(st, target=t)
    assert not [c for c in diag.causes if any(e.source == "memory" for e in c.evidence)]


def test_log_chain_plus_target_reads_the_gate() -> None:
    recs = from_path(LOGS / "lm64-timer-np.log")
    chain = analyze_records(recs)
    assert chain.decisive is not None
    st = chain.decisive.to_state()
    t = FakeTarget(st, ram_size=1 << 30)
    # identity-map the first 1 GiB with 2 MiB pages at the dump's CR3, IDT gate 0x20 not present
    t.write_u64(st.cr3, 0x1000 | 3)
    t.write_u64(0x1000, 0x2000 | 3)
    for i in range(512):
        t.write_u64(0x2000 + 8 * i, (i << 21) | 0x83)
    assert st.idtr is not None
    g = Gate64.make(offset=0x100200, selector=0x18, present=False)
    t.write_phys(st.idtr.base + 0x20 * 16, g.raw.to_bytes(16, "little"))
    from kdiag.triage.engine import diagnose

    diag = diagnose(chain, target=t)
    gate = diag.causes[0]
    assert gate.id == "idt-gate-invalid"
    assert any(e.source == "memory" and "not present" in e.text for e in gate.evidence)
