"""Streaming QEMU log parser on real QEMU 7.2 logs (tests/golden/logs, made by gen_logs.sh)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from kdiag.qemulog.parser import from_path, iter_lines, parse_lines, parse_stream
from kdiag.qemulog.records import (
    CheckException,
    CpuReset,
    HardwareInt,
    Interrupt,
    LogPos,
    RegisterDump,
    SmmEvent,
    TripleFault,
    Unknown,
)
from kdiag.qemulog.tail import count_occurrences, read_window, rfind_any

LOGS = Path(__file__).resolve().parent.parent / "golden" / "logs"


def _records(name: str) -> list:
    return from_path(LOGS / name)


def _tail(name: str, n: int) -> list:
    return [r for r in _records(name) if not isinstance(r, SmmEvent)][-n:]


def test_64bit_idt0_pf_tail() -> None:
    recs = _tail("lm64-idt0-pf.log", 6)
    kinds = [type(r).__name__ for r in recs]
    assert kinds == ["CpuReset", "CheckException", "Interrupt", "CheckException", "Interrupt",
                     "CheckException"] or kinds[-6:] == [
        "CheckException", "Interrupt", "CheckException", "Interrupt", "CheckException",
        "TripleFault"]
    pf = [r for r in recs if isinstance(r, Interrupt)][0]
    assert (pf.vector, pf.error_code, pf.is_int, pf.cpl) == (0x0E, 0, False, 0)
    assert (pf.cs, pf.ip, pf.ss, pf.sp, pf.cr2) == (0x18, 0x100187, 0x10, 0x10E000, 0x40000000)
    assert pf.eax is None
    assert pf.dump is not None and pf.dump.complete and pf.dump.width == 64
    assert pf.dump.gpr["rax"] == 0x1122334455667788
    assert pf.dump.idtr is not None and pf.dump.idtr.limit == 0
    df = [r for r in recs if isinstance(r, Interrupt)][1]
    assert df.vector == 8 and df.eax == 0x1122334455667788 and df.cr2 is None
    assert isinstance(recs[-1], TripleFault)
    chk = [r for r in recs if isinstance(r, CheckException)]
    assert [(c.old, c.new) for c in chk] == [(None, 0xE), (0xE, 0xD), (8, 0xD)]
    assert chk[-1].implies_triple_fault


def test_line_numbers_and_offsets_match_file() -> None:
    path = LOGS / "lm64-idt0-pf.log"
    lines = path.read_bytes().split(b"\n")
    data = path.read_bytes()
    for r in _records("lm64-idt0-pf.log"):
        assert r.pos.line is not None
        assert data[r.pos.offset:].startswith(lines[r.pos.line - 1])


def test_32bit_dump_and_header() -> None:
    recs = [r for r in _records("pm32-idt0-pf.log") if isinstance(r, Interrupt)]
    pf = recs[-2]
    assert pf.vector == 0x0E and pf.cr2 == 0x800000 and pf.ip == 0x100069
    assert pf.dump is not None and pf.dump.width == 32 and pf.dump.complete
    assert pf.dump.gpr["rax"] == 0xDEADBEEF


def test_software_int_and_hardware_irq() -> None:
    recs = [r for r in _records("lm64-user-rsp0.log") if isinstance(r, Interrupt)]
    assert recs[0].vector == 0x80 and recs[0].is_int and recs[0].cpl == 3
    assert not recs[0].is_exception
    timer = [r for r in _records("lm64-timer-np.log") if isinstance(r, Interrupt)]
    irqs = [r for r in timer if r.vector == 0x20]
    assert len(irqs) == 21 and all(r.hardware and r.is_irq for r in irqs)
    assert timer[-1].vector == 0x0B and timer[-1].error_code == 0x202
    hw = [r for r in _records("lm64-timer-np.log") if isinstance(r, HardwareInt)]
    assert all(h.vector == 0x20 for h in hw[-20:])


def test_cpu_reset_power_on_detection() -> None:
    resets = [r for r in _records("lm64-idt0-pf.reset-only-reboot.log") if isinstance(r, CpuReset)]
    assert resets[0].power_on and resets[1].power_on  # all-zero, then F000:FFF0
    fault = [r for r in resets if not r.power_on]
    assert fault and all(r.cpu == 0 for r in resets)
    assert any(r.dump is not None and r.dump.gpr.get("rip") == 0x100187 for r in fault)
    assert fault[0].dump is not None and "fpu" in fault[0].dump.seen


def test_smm_records_carry_dumps() -> None:
    smm = [r for r in _records("lm64-idt0-pf.log") if isinstance(r, SmmEvent)]
    assert smm and {s.kind for s in smm} == {"enter", "rsm"}
    assert all(s.dump is not None for s in smm)


def test_reset_only_log_has_no_int_records() -> None:
    recs = _records("lm64-idt0-pf.reset-only-noreboot.log")
    assert not any(isinstance(r, (Interrupt, CheckException)) for r in recs)
    assert isinstance(recs[-1], TripleFault)


def test_unknown_lines_are_kept() -> None:
    text = b"hello\ncheck_exception old: 0xffffffff new 0x6\nsome guest_errors line\n"
    recs = list(parse_stream(io.BytesIO(text)))
    assert isinstance(recs[0], Unknown) and recs[0].text == "hello"
    assert isinstance(recs[1], CheckException)
    assert isinstance(recs[2], Unknown) and recs[2].pos == LogPos(46, 3)


def test_truncated_mid_record() -> None:
    data = (LOGS / "lm64-idt0-pf.log").read_bytes()
    cut = data.index(b"RIP=0000000000100187")  # inside the #PF record's dump
    recs = list(parse_stream(io.BytesIO(data[:cut + 7])))
    last = recs[-1]
    assert isinstance(last, Interrupt) and last.vector == 0x0E
    assert last.dump is not None and not last.dump.complete
    # cut inside the header line itself
    hdr = data.index(b"     0: v=0e")
    recs = list(parse_stream(io.BytesIO(data[:hdr + 30])))
    assert isinstance(recs[-1], Interrupt) and recs[-1].ip is None and recs[-1].vector == 0x0E


def test_orphan_dump_at_window_start() -> None:
    data = (LOGS / "lm64-idt0-pf.log").read_bytes()
    start = data.index(b"ES =0010", data.index(b"v=0e"))
    recs = read_window(io.BytesIO(data), start - 3)
    assert isinstance(recs[0], RegisterDump)
    assert recs[0].pos.line is None and recs[0].pos.offset >= start - 3


def test_crlf_and_no_final_newline() -> None:
    text = b"check_exception old: 0x8 new 0xd\r\nTriple fault"
    recs = list(parse_stream(io.BytesIO(text)))
    assert isinstance(recs[0], CheckException) and isinstance(recs[1], TripleFault)


def test_iter_lines_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import kdiag.qemulog.parser as p

    monkeypatch.setattr(p, "BLOCK", 7)
    data = b"a\nbb\n\nccc\nlast"
    out = [(pos.offset, pos.line, t) for pos, t in iter_lines(io.BytesIO(data))]
    assert out == [(0, 1, "a"), (2, 2, "bb"), (5, 3, ""), (6, 4, "ccc"), (10, 5, "last")]


def test_records_are_lazy() -> None:
    def lines():
        yield LogPos(0, 1), "Triple fault"
        raise AssertionError("read too far")

    gen = parse_lines(lines())
    assert isinstance(next(gen), TripleFault)


def test_tail_helpers() -> None:
    data = (LOGS / "lm64-idt0-pf.reboot-loop.log").read_bytes()
    f = io.BytesIO(data)
    assert count_occurrences(f, b"\nTriple fault", 0, len(data)) == data.count(b"\nTriple fault")
    last = rfind_any(f, (b"\nTriple fault",), len(data))
    assert last == data.rfind(b"\nTriple fault")
    assert rfind_any(f, (b"no such thing",), len(data)) is None


def test_count_occurrences_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import kdiag.qemulog.tail as t

    monkeypatch.setattr(t, "SEARCH_BLOCK", 5)
    data = b"xxTriple faultxxTriple fault"
    assert count_occurrences(io.BytesIO(data), b"Triple fault", 0, len(data)) == 2
    assert rfind_any(io.BytesIO(data), (b"Triple fault",), len(data)) == 16


def test_i386_kernel_log_32bit_dumps_and_two_cpus() -> None:
    """A real log of the bundled i386 kernel with -smp 2: 32-bit dumps, CPU Reset per CPU."""
    recs = _records("i386-pagefault.smp2.log")
    resets = [r for r in recs if isinstance(r, CpuReset)]
    assert [r.cpu for r in resets] == [0, 1, 0, 1, 1]
    assert resets[-1].power_on  # CPU 1's INIT: at the reset vector, not a fault state
    ints = [r for r in recs if isinstance(r, Interrupt)]
    pf = ints[0]
    assert (pf.vector, pf.error_code, pf.cpl, pf.cs, pf.ip, pf.cr2) == (
        0x0E, 2, 0, 0x08, 0xF0100230, 0xE0000000)
    assert pf.dump is not None and pf.dump.width == 32 and pf.dump.complete
    assert pf.dump.seg_types["cs"].startswith("CS32")
    st = pf.dump.to_state()
    assert st.rip == 0xF0100230 and st.cr2 == 0xE0000000 and not st.efer & (1 << 10)
