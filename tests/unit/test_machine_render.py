"""Reading tables through a Target and rendering them (text and JSON) the way kd/kdiag print."""

from __future__ import annotations

import json
from typing import Any

from kdiag.machine.checks import CheckContext, run_checks
from kdiag.machine.tables import (
    cache_descriptor,
    is_mapped,
    read_gdt,
    read_idt,
    read_ldt,
    read_tss,
    segment_users,
)
from kdiag.render import regs, tables
from kdiag.x86.state import SegmentCache
from tests.unit.machine_builder import GDT_BASE, HANDLER_BASE, IST1, KCODE, RSP0, Machine, seg_cache


def symbolize(addr: int) -> str | None:
    if HANDLER_BASE <= addr < HANDLER_BASE + 0x1000:
        return f"isr_{(addr - HANDLER_BASE) // 16}"
    if RSP0 - 0x4000 <= addr < RSP0:
        return f"kstack+{addr - (RSP0 - 0x4000):#x}"
    if IST1 - 0x4000 <= addr < IST1:
        return f"df_stack+{addr - (IST1 - 0x4000):#x}"
    return None


def test_read_gdt_through_the_target() -> None:
    t = Machine().build()
    gdt = read_gdt(t)
    assert (gdt.base, gdt.limit, gdt.long_mode) == (GDT_BASE, 0x3F, True)
    assert [e.selector for e in gdt.entries] == [0, 8, 0x10, 0x18, 0x20, 0x28, 0x30]
    assert gdt.lookup(0x40) is None and gdt.lookup(0x38) is not None and gdt.contains(0x30) and not gdt.contains(0x40)


def test_segment_users_annotations() -> None:
    users = segment_users(Machine().build().state())
    assert users == {0x08: ["cs"], 0x10: ["ss", "ds", "es"], 0x30: ["tr"]}


def test_gdt_text_is_bochs_like_with_register_annotations() -> None:
    t = Machine().build()
    text = tables.gdt_to_text(read_gdt(t), segment_users(t.state()))
    lines = text.splitlines()
    assert lines[0] == f"GDT base={GDT_BASE:#x} limit=0x3f (8 slots, IA-32e)"
    assert lines[1] == "gdt[0x0000]=Null descriptor"
    assert lines[2] == ("gdt[0x0008]=Code segment, base=0x00000000, limit=0xffffffff, "
                        "Execute/Read, Non-Conforming, Accessed, 64-bit, DPL=0  <- cs")
    assert lines[3].endswith("Read/Write, Accessed, 32-bit, DPL=0  <- ss,ds,es")
    assert lines[7] == ("gdt[0x0030]=64-bit TSS (Busy), base=0x0000000000003000, "
                        "limit=0x00000067, DPL=0  <- tr")


def test_gdt_text_verbose_bit_view_and_beyond_limit_line() -> None:
    m = Machine(segments={**Machine().segments, "cs": seg_cache(0x38, KCODE)}, gdt_limit=0x2F)
    t = m.build()
    st = t.state()
    gdt = read_gdt(t, st)
    fs = run_checks(CheckContext(st, t, gdt), ["sreg"])
    text = tables.gdt_to_text(gdt, segment_users(st), fs, verbose=True)
    assert "    raw=0x00af9b000000ffff  BASE_HI=0x0 G=1 DB=0 L=1 AVL=0 LIMIT_HI=1111 P=1" in text
    assert "gdt[0x0038]=(beyond the limit 0x2f)  <- cs" in text
    assert "error [segment-beyond-gdt]: CS=0x0038" in text


def test_gdt_json_entries_have_the_documented_keys() -> None:
    t = Machine().build()
    doc: dict[str, Any] = tables.gdt_to_json(read_gdt(t), segment_users(t.state()))
    json.dumps(doc)
    e = doc["entries"][1]
    assert {"selector", "kind", "dpl", "present", "base", "limit", "long"} <= set(e)
    assert (e["selector"], e["kind"], e["dpl"], e["present"], e["base"], e["limit"], e["long"]) == (
        8, "code", 0, True, "0x0", "0xffffffff", True)
    assert e["registers"] == ["cs"] and e["raw"] == "0x00af9b000000ffff"
    tss = doc["entries"][-1]
    assert tss["kind"] == "tss" and tss["busy"] and tss["size"] == 16 and tss["base"] == "0x3000"


def test_idt_text_symbols_ist_and_folding() -> None:
    t = Machine().build()
    text = tables.idt_to_text(read_idt(t), symbolize=symbolize)
    lines = text.splitlines()
    assert lines[0] == "IDT base=0x2000 limit=0xfff (256 gates, IA-32e)"
    assert lines[1] == ("idt[0x00]=64-bit Interrupt Gate target=0x0008:0x0000000000100000 "
                        "<isr_0>, DPL=0")
    assert lines[9].endswith("<isr_8>, DPL=0, IST=1")
    assert "idt[0x80]=64-bit Interrupt Gate target=0x0008:0x0000000000100800 <isr_128>, DPL=3" in text


def test_idt_folds_null_runs_and_selects_ranges() -> None:
    m = Machine(idt=Machine().idt[:48] + [Machine().idt[0].from_raw(0)] * 208)
    t = m.build()
    text = tables.idt_to_text(read_idt(t))
    assert text.splitlines()[-1] == "idt[0x30..0xff]=Null descriptor (208 gates)"
    sel = tables.idt_to_text(read_idt(t), select=(0x0E, 0x0E))
    assert len(sel.splitlines()) == 2 and "idt[0x0e]" in sel


def test_idt_json() -> None:
    t = Machine().build()
    doc: dict[str, Any] = tables.idt_to_json(read_idt(t), symbolize=symbolize)
    e = doc["entries"][8]
    assert {k: e[k] for k in ("vector", "type", "dpl", "present", "selector", "offset", "ist",
                              "symbol")} == {
        "vector": 8, "type": "interrupt-64", "dpl": 0, "present": True, "selector": 8,
        "offset": "0x100080", "ist": 1, "symbol": "isr_8"}


def test_tss_text_and_json() -> None:
    t = Machine().build()
    view = read_tss(t)
    text = tables.tss_to_text(view, symbolize=symbolize, ist_users={1: [8]})
    assert text.splitlines()[0] == "TR=0x0030 base=0x3000 limit=0x67 (64-bit TSS, Busy)"
    assert "RSP0=0x0000000000080000 <kstack+0x4000>" in text
    assert "IST1=0x0000000000090000 <df_stack+0x4000>  used by vector(s) 0x08" in text
    assert "IOPB=0x0068 (no I/O bitmap" in text
    doc = tables.tss_to_json(view, symbolize=symbolize)
    assert doc["rsp0"] == "0x80000" and doc["ist1"] == "0x90000" and doc["ist7"] == "0x0"
    assert doc["iopb"] == 0x68 and doc["bits"] == 64


def test_tss_not_loaded() -> None:
    t = Machine(tr=SegmentCache(0, 0, 0xFFFF, 0x8B00)).build()
    view = read_tss(t)
    assert view.tss is None and not view.loaded
    assert "no TSS was loaded" in tables.tss_to_text(view)


def test_ldt_absent() -> None:
    assert read_ldt(Machine().build()) is None


def test_cr_text_bochs_flags() -> None:
    st = Machine().build().state()
    text = regs.cr_to_text(st)
    assert text.splitlines()[0] == "CR0=0x80010033: PG CD NW AM WP NE ET TS EM MP PE".replace(
        "CD NW AM", "cd nw am").replace("TS EM", "ts em")
    assert "CR3=0x0000000000010000: base=0x10000 pcd pwt" in text
    assert "EFER=0x00000d01: tce ffxsr lmsle svme NXE LMA LME SCE" in text
    assert "RFLAGS=0x00000246: id vip vif ac vm rf nt IOPL=0 of df IF tf sf ZF af PF cf" in text
    assert text.splitlines()[-1] == "mode: long, CPL=0, paging on"


def test_cr_json() -> None:
    doc: dict[str, Any] = regs.cr_to_json(Machine().build().state())
    assert doc["cr0"]["raw"] == "0x80010033"
    assert doc["cr0"]["flags"] == ["PE", "MP", "ET", "NE", "WP", "PG"]
    assert doc["efer"]["flags"] == ["SCE", "LME", "LMA", "NXE"]


def test_sreg_text() -> None:
    st = Machine().build().state()
    text = regs.sreg_to_text(st, read_gdt(Machine().build()))
    assert ("cs=0x0008 base=0x0000000000000000 limit=0xffffffff flags=0x00af9b00: Code segment, "
            "base=0x00000000, limit=0xffffffff, Execute/Read, Non-Conforming, Accessed, 64-bit, "
            "DPL=0") in text
    assert "fs=0x0000 base=0x0000000000000000 limit=0x00000000 flags=0x00000000: (null/unusable)" in text
    assert "gdtr base=0x0000000000001000 limit=0x003f" in text


def test_cache_descriptor_rebuilds_the_gdt_entry() -> None:
    assert cache_descriptor(seg_cache(0x08, KCODE)).raw == KCODE.raw


def test_msr_star_text_and_json() -> None:
    text = regs.msr_to_text(0xC0000081, 0x0018000800000000, method="fake")
    assert text.splitlines()[0] == "IA32_STAR (0xc0000081) = 0x0018000800000000"
    assert "SYSCALL: CS=0x0008 SS=0x0010   SYSRET: CS=0x002b SS=0x0023" in text
    doc: dict[str, Any] = regs.msr_to_json(0xC0000081, 0x0018000800000000)
    assert doc["decoded"]["sysret_cs"] == 0x2B and doc["index"] == "0xc0000081"


def test_msr_fmask_and_lstar_and_apic() -> None:
    assert "IF cleared" in regs.msr_to_text(0xC0000084, 0x47700)
    assert "<isr_0>" in regs.msr_to_text(0xC0000082, HANDLER_BASE, symbolize=symbolize)
    assert "base=0xfee00000 EN extd BSP (xAPIC)" in regs.msr_to_text(0x1B, 0xFEE00900)


def test_pat_text_and_json() -> None:
    text = regs.pat_to_text(0x0007010600070406)
    assert text.splitlines()[0] == ("PAT=0x0007010600070406: PA0=WB PA1=WT PA2=UC- PA3=UC "
                                    "PA4=WB PA5=WC PA6=UC- PA7=UC")
    assert "PA5 (PAT=1 PCD=0 PWT=1): WC" in text
    doc: dict[str, Any] = regs.pat_to_json(0x0007010600070406)
    assert doc["entries"][5] == {"index": 5, "pat": 1, "pcd": 0, "pwt": 1, "type": "WC"}


def test_pat_with_reserved_encoding_does_not_crash() -> None:
    assert "reserved(0x2)" in regs.pat_to_text(0x02)


def test_is_mapped() -> None:
    t = Machine().build()
    assert is_mapped(t, HANDLER_BASE) is True and is_mapped(t, 0x40000000) is False


# --------------------------------------------------------------------------------------------
# speed paths: pre-rendered IDT JSON, memoized text; both must print exactly what the plain
# renderers print


def _idt_doc_and_findings(m: Machine | None = None,
                          sym: Any = symbolize) -> tuple[Any, list[Any], Any]:
    t = (m or Machine()).build()
    st = t.state()
    idt = read_idt(t, st)
    fs = run_checks(CheckContext(st, t, read_gdt(t, st), idt, read_tss(t, st)), ["idt"])
    return idt, fs, sym


def test_idt_json_text_is_exactly_json_dumps() -> None:
    from kdiag.x86.descriptors import Gate64
    from tests.unit.machine_builder import default_idt

    idt_gates = default_idt()
    idt_gates[5] = Gate64.make(HANDLER_BASE, 0x08, present=False)  # a finding, a "!" mark
    odd = {HANDLER_BASE + 16: 'we"ird\\name\u00e9'}  # quotes, backslash, non-ASCII

    def sym(addr: int) -> str | None:
        return odd.get(addr) or symbolize(addr)

    idt, fs, _ = _idt_doc_and_findings(Machine(idt=idt_gates), sym)
    assert fs  # vector 5 is an exception vector without a present gate
    for select in (None, (0, 31), (0x20, 0x20), (300, 400)):
        doc = tables.idt_to_json(idt, fs, sym, select)
        assert isinstance(doc["entries"], tables.JsonList)
        assert doc["entries"].json_text() is not None
        assert tables.dumps(doc) == json.dumps(doc)
        assert json.loads(tables.dumps(doc)) == doc


def test_idt_json_text_is_not_used_once_the_list_changed() -> None:
    idt, fs, sym = _idt_doc_and_findings()
    doc = tables.idt_to_json(idt, fs, sym)
    entries = doc["entries"]
    assert isinstance(entries, list)
    entries.append({"vector": 999})
    assert tables.dumps(doc) == json.dumps(doc)  # falls back to encoding the real list
    entries.pop()
    entries[0]["extra"] = 1
    assert tables.dumps(doc) == json.dumps(doc)
    del entries[0]["extra"]
    def gsym(addr: int) -> str | None:
        return symbolize(addr)

    gsym.generation = 0  # type: ignore[attr-defined]  # memoized, like gdb's symbolizer
    tables.idt_to_json(idt, fs, gsym)
    doc2 = tables.idt_to_json(idt, fs, gsym)  # a memo hit must not share the top-level dict
    doc2["added"] = True
    doc2["entries"].clear()  # type: ignore[attr-defined]  # ... nor the list
    doc3 = tables.idt_to_json(idt, fs, gsym)
    assert "added" not in doc3 and len(doc3["entries"]) == 256  # type: ignore[arg-type]
    assert tables.dumps(doc3) == json.dumps(doc3)


def test_dumps_of_plain_documents_is_json_dumps() -> None:
    for doc in ({"a": 1, "b": [1, 2]}, [1, 2], {"x": tables.JsonList([{"a": 1}])}, {1: "x"}):
        assert tables.dumps(doc) == json.dumps(doc)


def test_idt_text_memo_follows_the_symbolizer_generation() -> None:
    idt, fs, _ = _idt_doc_and_findings()
    names = {"prefix": "isr"}

    def sym(addr: int) -> str | None:
        s = symbolize(addr)
        return s.replace("isr", names["prefix"]) if s else None

    sym.generation = 0  # type: ignore[attr-defined]
    first = tables.idt_to_text(idt, fs, symbolize=sym)
    assert "<isr_0>" in first and tables.idt_to_text(idt, fs, symbolize=sym) is first  # memo
    names["prefix"] = "handler"  # new objfiles: gdb's symbolizer bumps its generation
    assert tables.idt_to_text(idt, fs, symbolize=sym) is first  # same generation: memoized
    sym.generation = 1  # type: ignore[attr-defined]
    again = tables.idt_to_text(idt, fs, symbolize=sym)
    assert "<handler_0>" in again and "<isr_0>" not in again
    assert again == tables._idt_to_text(idt, fs, False, sym, None, False)
    # a symbolizer without a generation is never memoized
    plain = tables.idt_to_text(idt, fs, symbolize=symbolize)
    assert plain == tables._idt_to_text(idt, fs, False, symbolize, None, False)
    assert tables.idt_to_json(idt, fs, sym) == tables._idt_to_json(idt, fs, sym, None)


def test_table_ranges_and_stack_probes_name_what_the_readers_read() -> None:
    from kdiag.machine.tables import stack_probe_ranges, table_ranges
    from tests.unit.machine_builder import IDT_BASE, TSS_BASE

    m = Machine()
    st = m.state()
    assert table_ranges(st) == [(GDT_BASE, 0x40), (IDT_BASE, 4096), (TSS_BASE, 0x68)]
    assert table_ranges(st, ("idt",)) == [(IDT_BASE, 4096)]
    t = m.build()
    assert stack_probe_ranges(read_tss(t)) == [(RSP0 - 8, 8), (IST1 - 8, 8)]
    st0 = m.with_(tr=SegmentCache(0, 0, 0xFFFF, 0x8B00)).state()
    assert table_ranges(st0, ("tss",)) == []


def test_mapped_pages_without_a_batch_probe_asks_page_by_page() -> None:
    from kdiag.machine.tables import mapped_pages

    t = Machine().build()
    got = mapped_pages(t, [HANDLER_BASE, HANDLER_BASE + 8, 0x40000000, 0x40000010])
    assert got == {HANDLER_BASE >> 12: True, 0x40000000 >> 12: False}


def test_tss_report_lists_the_present_gates_using_each_ist_slot() -> None:
    from kdiag.render import reports
    from kdiag.x86.descriptors import Gate64
    from tests.unit.machine_builder import default_idt

    idt = default_idt()  # vector 8 uses IST1
    idt[2] = Gate64.make(HANDLER_BASE + 32, 0x08, ist=2)
    idt[18] = Gate64.make(HANDLER_BASE + 18 * 16, 0x08, ist=2)
    idt[0xFF] = Gate64.make(HANDLER_BASE + 0xFF0, 0x08, ist=7)
    idt[0x40] = Gate64.make(HANDLER_BASE + 0x400, 0x08, ist=3, present=False)  # not present
    doc = reports.tss_report(Machine(idt=idt).build()).doc
    assert doc["ist_users"] == {"ist1": [8], "ist2": [2, 18], "ist7": [0xFF]}
