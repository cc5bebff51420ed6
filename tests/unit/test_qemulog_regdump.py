"""parse_register_dump on real QEMU 7.2 dumps: -d int (64/32-bit), cpu_reset, HMP info registers."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdiag.errors import InputError
from kdiag.qemulog.regdump import DumpBuilder, is_dump_line, parse_dump, parse_register_dump
from kdiag.x86.state import CpuMode, SegmentCache, TableRegister

DUMPS = Path(__file__).resolve().parent.parent / "golden" / "dumps"


def _read(name: str) -> str:
    return (DUMPS / name).read_text()


def test_64bit_int_dump() -> None:
    st = parse_register_dump(_read("int64_tf64.txt"))
    assert st.rip == 0x1000EC
    assert st.rsp == 0x109000
    assert st.gpr["rax"] == 0x1122334455667788
    assert st.gpr["r8"] == 0 and st.gpr["r15"] == 0
    assert st.rflags == 0x46
    assert st.cpl == 0 and st.halted is False
    assert st.segments["cs"] == SegmentCache(0x0008, 0, 0, 0x00209A00)
    assert st.segments["cs"].long
    assert st.segments["fs"].limit == 0xFFFFFFFF
    assert st.tr == SegmentCache(0, 0, 0xFFFF, 0x00008B00)
    assert st.ldtr is not None and st.ldtr.flags == 0x8200
    assert st.gdtr == TableRegister(0x100130, 0x17)
    assert st.idtr == TableRegister(0, 0)
    assert (st.cr0, st.cr2, st.cr3, st.cr4) == (0x80000011, 0x40000000, 0x101000, 0x20)
    assert st.efer == 0x500
    assert st.mode is CpuMode.LONG
    assert set(st.segments) == {"es", "cs", "ss", "ds", "fs", "gs"}


def test_32bit_int_dump() -> None:
    st = parse_register_dump(_read("int32_tf32.txt"))
    assert st.rip == 0x10006A
    assert st.gpr["rax"] == 0xDEADBEEF
    assert st.rsp == 0x109000
    assert st.rflags == 0x86
    assert st.segments["cs"].flags == 0x00CF9A00 and st.segments["cs"].default_big
    assert st.gdtr == TableRegister(0xCB2B8, 0x27)
    assert st.cr2 == 0x800000 and st.cr4 == 0x10
    assert st.efer == 0
    assert st.mode is CpuMode.PROTECTED
    assert "r8" not in st.gpr


def test_hmp_info_registers_real_mode() -> None:
    text = _read("hmp_real_mode.txt")
    st = parse_register_dump(text)
    assert st.cpu_index == 0
    assert st.rip == 0xFFF0
    assert st.gpr["rdx"] == 0x60FB1
    assert st.segments["cs"] == SegmentCache(0xF000, 0xFFFF0000, 0xFFFF, 0x9B00)
    assert st.idtr == TableRegister(0, 0xFFFF)
    assert st.cr0 == 0x60000010
    assert st.mode is CpuMode.REAL
    d = parse_dump(text)
    assert "fpu" in d.seen and "cpu" in d.seen
    assert d.complete


def test_hmp_cpu_index_and_crlf() -> None:
    text = "\r\nCPU#1\r\n" + _read("int64_tf64.txt").replace("\n", "\r\n")
    st = parse_register_dump(text)
    assert st.cpu_index == 1
    assert st.rip == 0x1000EC


def test_extras_kept() -> None:
    d = parse_dump(_read("int64_tf64.txt"))
    assert d.width == 64
    assert d.extras["A20"] == 1 and d.extras["SMM"] == 0 and d.extras["CCO"] == "LOGICB"
    assert d.seg_types["cs"] == "CS64 [-R-]"
    assert d.seg_types["tr"] == "TSS64-busy"


def test_compat_mode_mixed_layout() -> None:
    # EFER.LMA=1 but CS.L=0: 32-bit GPR lines with 16-digit segment bases (cpu-dump.c).
    text = _read("int64_tf64.txt")
    lines = text.splitlines()
    gpr32 = ["EAX=55667788 EBX=40000000 ECX=c0000080 EDX=000000e9",
             "ESI=0010012e EDI=00001000 EBP=00000000 ESP=00109000",
             "EIP=001000ec EFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1"]
    rest = [ln.replace("00209a00 DPL=0 CS64", "00cf9a00 DPL=0 CS32") for ln in lines[5:]]
    st = parse_register_dump("\n".join(gpr32 + rest))
    assert st.rip == 0x1000EC and st.halted is True
    assert st.mode is CpuMode.COMPAT
    assert parse_dump("\n".join(gpr32 + rest)).width == 32


@pytest.mark.parametrize("text", ["", "hello world\n", "RAX=0000000000000000\n",
                                  "CR0=80000011 CR2=0 CR3=0 CR4=0\n"])
def test_not_a_dump_raises_input_error(text: str) -> None:
    with pytest.raises(InputError):
        parse_register_dump(text)


def test_truncated_dump_is_partial() -> None:
    lines = _read("int64_tf64.txt").splitlines()[:9]
    d = parse_dump(lines)
    assert not d.complete
    assert d.gpr["rip"] == 0x1000EC
    assert "cs" in d.segments and "gs" not in d.segments


def test_builder_rejects_foreign_lines() -> None:
    b = DumpBuilder()
    assert not b.feed("check_exception old: 0xffffffff new 0xe")
    assert not b.feed("Triple fault")
    assert b.feed("EFER=0000000000000500")
    assert is_dump_line("XMM00=0000000000000000 0000000000000000")
    assert not is_dump_line("Servicing hardware INT=0x20")


def test_halted_for_good_needs_every_cpu_in_hlt_with_if_clear() -> None:
    from kdiag.qemulog.regdump import halted_for_good

    cpu = "RIP=ffffffff80001000 RFL={rfl} [-------] CPL=0 II=0 A20=1 SMM=0 HLT={hlt}\n"
    assert halted_for_good(cpu.format(rfl="00000002", hlt=1) * 2)
    assert not halted_for_good(cpu.format(rfl="00000202", hlt=1))  # IF set: a timer wakes it
    assert not halted_for_good(cpu.format(rfl="00000002", hlt=1) + cpu.format(rfl="00000002", hlt=0))
    assert halted_for_good("EIP=f0100000 EFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\n")
    assert not halted_for_good("no register dump here")


def _variants() -> list[tuple[str, str]]:
    """Every golden dump as QEMU prints it, with CRLF line ends (the monitor's), and with the
    CPU#n line of ``info registers -a``."""
    out = []
    for path in sorted(DUMPS.glob("*.txt")):
        text = path.read_bytes().decode()
        lf = text.replace("\r\n", "\n")
        out += [(path.name, lf), (path.name + " crlf", lf.replace("\n", "\r\n")),
                (path.name + " cpu#1", "CPU#1\n" + lf.split("CPU#0\n", 1)[-1])]
    return out


@pytest.mark.parametrize(("name", "text"), _variants(), ids=[n for n, _ in _variants()])
def test_one_match_parse_equals_the_line_parser(name: str, text: str) -> None:
    """The one-regex parse of QEMU's exact layout (the gdb ``kd`` commands' path) takes every
    real dump, and gives the state the line-by-line parser gives."""
    from kdiag.qemulog.regdump import _parse_exact

    cut = text.find("\nFCW=")
    head = text[:cut] if cut >= 0 else text
    fast = _parse_exact(head)
    assert fast is not None, name
    assert fast == parse_dump(head).to_state()
    assert parse_register_dump(text) == fast


def test_hmp_long_mode_dump_from_gdb_monitor() -> None:
    """A 64-bit ``monitor info registers`` as gdb returns it (CRLF, FPU/XMM block)."""
    st = parse_register_dump((DUMPS / "hmp_long_mode_crlf.txt").read_bytes().decode())
    assert st.mode is CpuMode.LONG and st.cpu_index == 0 and st.cpl == 0
    assert st.idtr == TableRegister(0xFFFFFFFF80023000, 0xFFF)
    assert st.tr is not None and st.tr.selector == 0x28 and st.tr.base == 0xFFFFFFFF800090A0
    assert st.efer == 0xD01 and st.gpr["r11"] == 0x246


@pytest.mark.parametrize("edit", [
    lambda t: t.replace("LDT=", "LDX="),                     # a line QEMU never prints
    lambda t: t.replace("EFER=", "XMM99=0\nEFER="),          # an extra line
    lambda t: t.replace(" HLT=0", " HLT=0 EXTRA=1"),          # a field QEMU 7.2 lacks
    lambda t: t.replace(" CR4=", " CR4 ="),                   # a different spelling
])
def test_other_layouts_take_the_line_parser(edit: object) -> None:
    from kdiag.qemulog.regdump import _parse_exact

    text = edit(_read("int64_tf64.txt"))  # type: ignore[operator]
    assert _parse_exact(text) is None
    st = parse_register_dump(text)  # still parsed, leniently
    assert st == parse_dump(text).to_state()
