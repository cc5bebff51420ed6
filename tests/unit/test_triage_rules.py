"""Root-cause rules: expected cause ids on every real log; memory-backed rules on FakeTarget."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from kdiag._record import replace
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
    # the bundled i386 (JOS-style, multiboot) kernel, -d int,cpu_reset, 32-bit dumps
    "i386-pagefault.log": ("exception", "data-unmapped", set()),
    "i386-user-pagefault.log": ("exception", "null-pointer", set()),
    "i386-pagefault.smp2.log": ("exception", "data-unmapped", set()),  # -smp 2: CPU 1 INITed
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


I386_ELF = ROOT / "kernel" / "build" / "kernel-i386.elf"


@pytest.mark.parametrize("name,cpl,cr2,symbol,line,insn", [
    ("i386-pagefault.log", 0, 0xE0000000, "fault_write", "kern/init.c", "mov dword ptr [eax], edx"),
    ("i386-user-pagefault.log", 3, 0, "ulevel3", "kern/user.c", "mov dword ptr [0], eax"),
])
def test_i386_kernel_logs(name: str, cpl: int, cr2: int, symbol: str, line: str,
                          insn: str) -> None:
    """32-bit logs of the bundled i386 kernel (`kdiag run --kernel i386 --scenario ...`)."""
    diag = triage_path(LOGS / name)
    ff = diag.first_fault
    assert ff is not None and ff.vector == 14 and ff.cpl == cpl and ff.cr2 == cr2
    assert diag.registers is not None and diag.registers_width == 32
    assert diag.mode == "protected"
    if not I386_ELF.is_file():
        pytest.skip("kernel/build/kernel-i386.elf not built (make kernel)")
    diag = triage_path(LOGS / name, image=KernelImage([parse_elf_spec(str(I386_ELF))]))
    loc = diag.location
    assert loc is not None and loc.symbol == symbol and loc.mode_bits == 32
    assert loc.file == line and loc.line and loc.instruction == insn, loc
    # the STABS name is relative (kern/init.c): found in kernel/i386/, beside kernel/build/
    assert any(n == loc.line for n, _ in loc.source), loc.source


def test_two_cpu_log_says_records_may_mix() -> None:
    """-smp 2 (the i386 kernel wakes CPU 1: INIT shows as a `CPU Reset (CPU 1)` to the reset
    vector, not a fatal reset): the chain is the same, the CPU is not named, a note says why."""
    one, two = triage_path(LOGS / "i386-pagefault.log"), triage_path(LOGS / "i386-pagefault.smp2.log")
    assert two.outcome == one.outcome == "exception" and two.resets_before == 0
    assert two.first_fault is not None and one.first_fault is not None
    assert (two.first_fault.ip, two.first_fault.cr2) == (one.first_fault.ip, one.first_fault.cr2)
    assert one.cpu == 0 and two.cpu is None
    assert any("2 CPUs" in n and "may be mixed" in n for n in two.notes), two.notes


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
    return replace(st, **fields)


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


def test_live_code_and_idt_unmapped_is_code_unmapped_then_paging_setup() -> None:
    """Like the kernel's cr3-unmapped-rip: the fetch at RIP is the first fault (as the offline
    log triage says), the tables that also lack the IDT are why it escalated."""
    st = _long_state(gpr={"rip": 0x4000_0000})
    t = _target(st)
    st2 = replace(st, idtr=TableRegister(0x8000_0000, 0xFFF))
    t.set_state(st2)
    diag = triage_state(st2, target=t)
    ids = [c.id for c in diag.causes]
    assert ids[0] == "code-unmapped" and "paging-setup" in ids[1:3], ids
    assert any("PDPT[0x1] at 0x2008 = 0x0 is not present while walking RIP 0x40000000" in e.text
               for e in diag.causes[0].evidence), diag.causes[0].evidence
    walks = {m.name: m for m in diag.memory if m.kind == "walk"}
    assert not walks["RIP"].ok and walks["RIP"].entry == "PDPT[0x1]"
    assert walks["RSP-8"].ok
    gate = next(m for m in diag.memory if m.kind == "idt-gate")
    assert not gate.ok and gate.entry == "PDPT[0x2]", gate


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
    t.write_phys(st.rip, b"\xf4")  # hlt: no memory operand
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


def test_live_instruction_operand_null_and_noncanonical() -> None:
    """Live registers are exact at RIP: the operand of the instruction there is decoded from
    memory and walked (abi-mismatch: `mov rdx, [rbx]` with RBX=0)."""
    st = _long_state(gpr={"rbx": 0})
    t = _target(st)
    t.write_phys(st.rip, bytes.fromhex("488b13"))  # mov rdx, qword ptr [rbx]
    pt = 0x4000  # the first 2 MiB in 4 KiB pages, page 0 left out
    for i in range(1, 512):
        t.write_u64(pt + 8 * i, (i << 12) | 3)
    t.write_u64(PD, pt | 3)
    st2 = st
    diag = triage_state(st2, target=t)
    assert diag.causes[0].id == "null-pointer", [c.id for c in diag.causes]
    assert any("mov rdx, qword ptr [rbx]" in e.text for e in diag.causes[0].evidence)
    assert any("PT[0x0] at 0x4000 = 0x0 is not present" in e.text
               for e in diag.causes[0].evidence)
    st3 = replace(st2, gpr={**st2.gpr, "rbx": 0x0000_8000_0000_0000})
    t.set_state(st3)
    diag = triage_state(st3, target=t)
    assert diag.causes[0].id == "non-canonical-address", [c.id for c in diag.causes]


def test_live_tables_outside_ram_and_looping_never_crash() -> None:
    """CR3 beyond RAM, and a PML4 whose entries point back at itself: results, not errors."""
    st = _long_state(cr3=0x7FFF_F000_0000)
    t = _target(st)
    t.set_state(st)
    diag = triage_state(st, target=t)
    rip = next(m for m in diag.memory if m.name == "RIP")
    assert not rip.ok and rip.stop == "table-unreadable", rip
    st2 = _long_state()
    t2 = _target(st2)
    for i in range(512):
        t2.write_u64(PML4 + 8 * i, PML4 | 3)  # every entry: the PML4 itself
    diag = triage_state(st2, target=t2)
    assert diag.causes and all(m.text for m in diag.memory)


@settings(max_examples=40, deadline=None)
@given(entries=hst.lists(hst.tuples(hst.sampled_from([PML4, PDPT, PD]), hst.integers(0, 511),
                                    hst.integers(0, 2**64 - 1)), min_size=1, max_size=24),
       cr2=hst.integers(0, 2**64 - 1))
def test_live_random_page_tables(entries: list[tuple[int, int, int]], cr2: int) -> None:
    """Garbage entries in the PML4/PDPT/PD (and CR2): live triage returns a diagnosis with its
    memory checks, never raises."""
    s = _long_state(cr2=cr2)
    t = _target(s)
    for table, idx, val in entries:
        t.write_u64(table + 8 * idx, val)
    diag = triage_state(s, target=t)
    assert diag.outcome == "triple-fault" and diag.memory


def test_triage_text_folds_a_recursing_backtrace() -> None:
    from kdiag.render.triage import _fold_repeats

    lines = ["#0  0x1 in a at a.c:1", "#1  0x2 in b at b.c:2", "#2  0x2 in b at b.c:2",
             "#3  0x2 in b at b.c:2", "#4  0x3 in c at c.c:3", "(end of the chain)"]
    assert _fold_repeats(lines) == [
        "#0  0x1 in a at a.c:1", "#1  0x2 in b at b.c:2",
        "    ... the same frame 2 more times (recursion)", "#4  0x3 in c at c.c:3",
        "(end of the chain)"]
    two = ["#0  0x1 in a", "#1  0x1 in a", "--- interrupt 14 (#PF) from CPL3 ---"]
    assert _fold_repeats(two) == two  # a pair is shown as it is
