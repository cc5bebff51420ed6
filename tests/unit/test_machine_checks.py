"""Every check fires on a constructed table in the FakeTarget, and stays quiet on a healthy one."""

from __future__ import annotations

import struct

import pytest

from kdiag.machine.checks import CheckContext, Finding, run_checks
from kdiag.machine.tables import read_gdt, read_idt, read_tss
from kdiag.x86.descriptors import Gate64, LongSystemType, SegmentDescriptor
from kdiag.x86.state import SegmentCache
from kdiag.x86.tss import Tss64
from tests.unit.machine_builder import (
    HANDLER_BASE,
    IST1,
    KCODE,
    KDATA,
    RSP0,
    UCODE32,
    UCODE64,
    UDATA,
    Machine,
    default_idt,
    seg_cache,
    tss_descriptor,
)

ALL = ("gdt", "sreg", "idt", "tss", "star", "nx")


def findings(m: Machine) -> list[Finding]:
    t = m.build()
    st = t.state()
    ctx = CheckContext(st, t, read_gdt(t, st), read_idt(t, st), read_tss(t, st), dict(t.msrs))
    return run_checks(ctx, ALL)


def ids(m: Machine) -> list[str]:
    return [f.id for f in findings(m)]


def test_healthy_machine_has_no_findings() -> None:
    assert findings(Machine()) == []


def test_diary_code_before_data_breaks_sysret() -> None:
    t = tss_descriptor()
    gdt = [0, KCODE.raw, KDATA.raw, UCODE64.raw, UDATA.raw, 0, t.low, t.high]
    m = Machine(gdt=gdt, msrs={**Machine().msrs, 0xC0000081: (0x10 << 48) | (0x08 << 32)})
    fs = [f for f in findings(m) if f.id == "star-sysret"]
    assert len(fs) == 1
    f = fs[0]
    assert "SS=0x001b lands on 64-bit code, DPL 3" in f.message
    assert "CS=0x0023 lands on writable data, DPL 3" in f.message
    assert "user data descriptor first" in f.message
    assert any("gdt[0x0018]" in e for e in f.evidence) and ("gdt", 0x18) in f.refs


def test_syscall_selector_not_kernel_code() -> None:
    m = Machine(msrs={**Machine().msrs, 0xC0000081: (0x18 << 48) | (0x10 << 32)})
    assert "star-syscall" in ids(m)


def test_no_sysret32_note_without_32_bit_user_code() -> None:
    t = tss_descriptor()
    gdt = [0, KCODE.raw, KDATA.raw, UDATA.raw, UCODE64.raw, 0, t.low, t.high]
    m = Machine(gdt=gdt, msrs={**Machine().msrs, 0xC0000081: (0x10 << 48) | (0x08 << 32)})
    assert findings(m) == []  # the bundled kernel's layout: no compat user code, no noise


def test_sysret32_note_when_32_bit_user_code_is_elsewhere() -> None:
    t = tss_descriptor()
    gdt = [0, KCODE.raw, KDATA.raw, UDATA.raw, UCODE64.raw, UCODE32.raw, t.low, t.high]
    m = Machine(gdt=gdt, msrs={**Machine().msrs, 0xC0000081: (0x10 << 48) | (0x08 << 32)})
    found = findings(m)
    assert [f.id for f in found] == ["star-sysret32"] and found[0].severity == "note"


def test_lstar_zero_with_sce() -> None:
    assert "lstar-invalid" in ids(Machine(msrs={**Machine().msrs, 0xC0000082: 0}))
    assert "lstar-invalid" in ids(Machine(msrs={**Machine().msrs, 0xC0000082: 0x40000000}))


def test_stale_cs_0x38_beyond_the_gdt() -> None:
    segs = {**Machine().segments, "cs": seg_cache(0x38, KCODE)}
    m = Machine(segments=segs, gdt_limit=0x2F)
    f = [f for f in findings(m) if f.id == "segment-beyond-gdt"][0]
    assert "CS=0x0038 points beyond the GDT limit 0x2f" in f.message
    assert "iretq" in f.message and "#GP(0x38)" in f.message


def test_cs_on_a_data_descriptor() -> None:
    segs = {**Machine().segments, "cs": seg_cache(0x10, KCODE)}
    f = [f for f in findings(Machine(segments=segs)) if f.id == "segment-wrong-type"][0]
    assert "CS=0x0010" in f.message and "data segment" in f.message


def test_ss_dpl_mismatch_and_null_cs() -> None:
    segs = {**Machine().segments, "ss": seg_cache(0x20 | 0, UDATA)}
    assert "segment-wrong-type" in ids(Machine(segments=segs))
    segs = {**Machine().segments, "cs": SegmentCache(0, 0, 0, 0)}
    assert "segment-wrong-type" in ids(Machine(segments=segs))


def test_stale_cache_note() -> None:
    segs = {**Machine().segments, "cs": seg_cache(0x08, SegmentDescriptor.from_raw(0x00CF9B000000FFFF))}
    assert "segment-stale" in ids(Machine(segments=segs, cr0=0x80010033))


def test_idt_vector_not_present() -> None:
    idt = default_idt()
    idt[14] = Gate64.make(HANDLER_BASE, 0x08, present=False)
    f = [f for f in findings(Machine(idt=idt)) if f.id == "idt-gate-not-present"][0]
    assert "0x0e #PF" in f.message and f.severity == "error" and ("idt", 14) in f.refs


def test_idt_selector_not_64_bit_code() -> None:
    idt = default_idt()
    idt[13] = Gate64.make(HANDLER_BASE, 0x10)
    idt[32] = Gate64.make(HANDLER_BASE, 0x18)  # 32-bit user code
    fs = [f for f in findings(Machine(idt=idt)) if f.id == "idt-gate-selector"]
    assert len(fs) == 2 and "writable data" in fs[0].message


def test_idt_handler_noncanonical_and_unmapped() -> None:
    idt = default_idt()
    idt[3] = Gate64.make(0x0000800000000000, 0x08)
    idt[6] = Gate64.make(0x40000000, 0x08)  # beyond the 64 MiB identity map
    fs = [f for f in findings(Machine(idt=idt)) if f.id == "idt-handler-address"]
    assert len(fs) == 2
    assert "non-canonical" in fs[0].message and "not mapped" in fs[1].message


def test_ist_slot_zero() -> None:
    idt = default_idt()
    idt[2] = Gate64.make(HANDLER_BASE, 0x08, ist=3)
    f = [f for f in findings(Machine(idt=idt)) if f.id == "idt-ist-empty"][0]
    assert "IST3" in f.message and "0x02 NMI" in f.message


def test_idt_gate_type_invalid_in_long_mode() -> None:
    idt = default_idt()
    idt[0] = Gate64.make(HANDLER_BASE, 0x08, type=LongSystemType.CALL_GATE_64)
    assert "idt-gate-type" in ids(Machine(idt=idt))


def test_idt_limit_too_short() -> None:
    f = [f for f in findings(Machine(idt_limit=0xFF)) if f.id == "idt-limit"][0]
    assert "0x10 #MF" in f.message and "0x1ff" in f.message


def test_tss_rsp0_zero_and_ist_unmapped() -> None:
    tss = Tss64.make(rsp=(0, 0, 0), ist=(0x40001000, 0, 0, 0, 0, 0, 0), iopb=0x68)
    fs = [f for f in findings(Machine(tss=tss)) if f.id == "tss-stack"]
    assert len(fs) == 2
    assert "RSP0 is 0" in fs[0].message and "IST1=0x40001000" in fs[1].message


def test_tss_noncanonical_stack() -> None:
    tss = Tss64.make(rsp=(0x0000900000000000, 0, 0), ist=(IST1,) + (0,) * 6)
    assert "tss-stack" in ids(Machine(tss=tss))


def test_tr_not_loaded() -> None:
    assert "tr-not-loaded" in ids(Machine(tr=SegmentCache(0, 0, 0xFFFF, 0x8B00)))


def test_tss_limit_short() -> None:
    assert "tss-limit" in ids(Machine(tr=SegmentCache(0x30, 0x3000, 0x20, 0x8B00)))


def test_nx_bits_without_nxe() -> None:
    f = [f for f in findings(Machine(efer=0x501)) if f.id == "nx-without-nxe"][0]
    assert "PML4[0] > PDPT[0] > PD[16]" in " ".join(f.evidence)


def test_nx_without_nxe_quiet_when_no_nx_bits() -> None:
    assert "nx-without-nxe" not in ids(Machine(efer=0x501, nx_pages=False))


def test_real_mode_skips_segment_checks() -> None:
    segs = {**Machine().segments, "cs": seg_cache(0x38, KCODE)}
    m = Machine(segments=segs, gdt_limit=0x2F, cr0=0x10, efer=0, cr4=0)
    t = m.build()
    st = t.state()
    assert run_checks(CheckContext(st, t, read_gdt(t, st)), ["sreg"]) == []


def test_checks_only_run_for_requested_topics() -> None:
    m = Machine(idt_limit=0xFF)
    t = m.build()
    st = t.state()
    ctx = CheckContext(st, t, read_gdt(t, st), read_idt(t, st), read_tss(t, st), {})
    assert run_checks(ctx, ["gdt", "sreg"]) == []


@pytest.mark.parametrize("rsp0", [RSP0, RSP0 + 8])
def test_mapped_rsp0_is_fine(rsp0: int) -> None:
    tss = Tss64.make(rsp=(rsp0, 0, 0), ist=(IST1,) + (0,) * 6)
    assert "tss-stack" not in ids(Machine(tss=tss))


def test_finding_json_shape() -> None:
    f = findings(Machine(idt_limit=0xFF))[0]
    d = f.to_dict()
    assert set(d) == {"id", "severity", "message", "evidence"} and d["severity"] == "error"
    assert struct.calcsize("<Q") == 8


def test_idt_checks_are_memoized_per_table_content_and_page_answers() -> None:
    """check_idt remembers its findings per IDT/GDT/TSS bytes *and* the mapped-page answers:
    the same tables with a handler page unmapped give the new finding, not the remembered one."""
    from kdiag.machine import checks

    handler = 0x2000000  # 32 MiB: PD entry 16 of the identity map
    idt = default_idt()
    idt[6] = Gate64.make(handler, 0x08)

    def check(unmap: bool) -> list[str]:
        t = Machine(idt=idt, nx_pages=False).build()
        if unmap:
            t.write_u64(0x12000 + 8 * (handler >> 21), 0)
        st = t.state()
        return [f.id for f in run_checks(CheckContext(st, t, read_gdt(t, st), read_idt(t, st),
                                                      read_tss(t, st)), ["idt"])]

    assert "idt-handler-address" not in check(False)
    assert check(True).count("idt-handler-address") == 1  # same bytes, other page answer
    assert "idt-handler-address" not in check(False)  # memo hit
    checks._IDT_MEMO.clear()
    assert check(True).count("idt-handler-address") == 1  # recomputed: the same
