"""CFI unwinding of -fomit-frame-pointer code, checked against gdb's own `bt`.

A small x86-64 program (frames of different sizes, no frame pointers, .eh_frame from
-fasynchronous-unwind-tables) runs under a native gdb to a breakpoint deep in its call chain;
gdb prints its backtrace and dumps the registers and the stack. Those become a FakeTarget,
and kdiag's unwinder must name the same frames, in order, down to main.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kdiag.symbols import Symbolizer
from kdiag.symbols.elffile import PT_LOAD, ElfFile
from kdiag.target.fake import FakeTarget
from kdiag.unwind import unwind
from kdiag.x86.state import CpuState, SegmentCache

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("gdb") is None,
                                reason="gcc/gdb not installed")

SRC = r"""
#include <string.h>
volatile int sink;
__attribute__((noinline)) int deep(int x) { sink = x; return x + 1; }
__attribute__((noinline)) int e(int x) { char buf[40]; memset(buf, x, sizeof buf);
                                         return deep(buf[3] + x) + buf[7]; }
__attribute__((noinline)) int d(int x) { long v[9]; for (int i = 0; i < 9; i++) v[i] = i * x;
                                         return e((int) v[x & 7]) + (int) v[2]; }
__attribute__((noinline)) int c(int x) { return d(x * 3) * 2; }
__attribute__((noinline)) int b(int x, int y) { char big[300]; memset(big, y, sizeof big);
                                                return c(x + big[x & 255]) - 1; }
__attribute__((noinline)) int a(int x) { return b(x, x ^ 5) + 3; }
int main(int argc, char **argv) { (void) argv; return a(argc) & 1; }
"""
REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15", "rip")


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("cfi")
    (d / "p.c").write_text(SRC)
    elf = d / "p"
    subprocess.run(["gcc", "-O1", "-g", "-fomit-frame-pointer", "-fasynchronous-unwind-tables",
                    "-fno-inline", "-no-pie", "-fno-pie", "p.c", "-o", str(elf)], cwd=d,
                   check=True)
    script = d / "g.gdb"
    script.write_text("\n".join([
        "set pagination off", "set confirm off", "set width 0", "set startup-with-shell off",
        "break deep", "run", "echo ==BT==\\n", "bt", "echo ==REGS==\\n",
        *[f"printf \"{r} %lx\\n\", ${r}" for r in REGS],
        "python",
        "import gdb, re",
        "m = re.search(r'(0x[0-9a-f]+)\\s+(0x[0-9a-f]+).*\\[stack\\]',"
        " gdb.execute('info proc mappings', to_string=True))",
        "sp = int(gdb.parse_and_eval('$rsp')) & (2**64 - 1)",
        "end = min(int(m.group(2), 16), sp + 16384) if m else sp + 2048",
        f"gdb.execute('dump binary memory {d / 'stack.bin'} %d %d' % (sp, end))",
        "end",
        "kill", "quit"]) + "\n")
    r = subprocess.run(["gdb", "-nx", "-batch", "-x", str(script), str(elf)],
                       capture_output=True, text=True, timeout=60)
    out = r.stdout
    if "==REGS==" not in out:
        pytest.skip(f"gdb could not run the program here: {(r.stderr or out)[-300:]}")
    bt = re.findall(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(\w+) \(", out.split("==BT==")[1], re.M)
    regs = {m.group(1): int(m.group(2), 16)
            for m in re.finditer(r"^(\w+) ([0-9a-f]+)$", out.split("==REGS==")[1], re.M)}
    return {"elf": elf, "bt": bt, "regs": regs, "stack": (d / "stack.bin").read_bytes()}


def make_target(stopped: dict[str, object]) -> tuple[FakeTarget, Symbolizer]:
    regs = stopped["regs"]
    assert isinstance(regs, dict)
    cs = SegmentCache(0x33, 0, 0xFFFFFFFF, 0x0020FB00)  # 64-bit user code, DPL 3
    st = CpuState(gpr=dict(regs), cr0=0x11, cr2=0, cr3=0, cr4=0, efer=0x500,
                  segments={"cs": cs})  # paging off in the fake: virtual == physical
    t = FakeTarget(st, ram_size=1 << 48)
    elf = stopped["elf"]
    assert isinstance(elf, Path)
    with ElfFile(elf) as e:
        for seg in e.segments:
            if seg.type == PT_LOAD and seg.filesz:
                t.write_phys(seg.vaddr, bytes(e.data[seg.offset:seg.offset + seg.filesz]))
    stack = stopped["stack"]
    assert isinstance(stack, bytes)
    t.write_phys(regs["rsp"], stack)
    sym = Symbolizer(use_cache=False)
    sym.add_elf(elf)
    return t, sym


def test_cfi_unwind_equals_gdb_bt(stopped: dict[str, object]) -> None:
    gdb_bt = stopped["bt"]
    assert gdb_bt[:7] == ["deep", "e", "d", "c", "b", "a", "main"]
    t, sym = make_target(stopped)
    bt = unwind(t, sym)
    ours = [f.location.function if f.location else "??" for f in bt.frames]
    assert ours[:len(gdb_bt)] == gdb_bt
    assert all(f.method == "cfi" for f in bt.frames[1:len(gdb_bt)])


def test_without_cfi_the_frame_pointer_walk_cannot_follow(stopped: dict[str, object]) -> None:
    t, sym = make_target(stopped)
    bt = unwind(t, sym, use_cfi=False)
    ours = [f.location.function if f.location else "??" for f in bt.frames]
    assert ours[:7] != ["deep", "e", "d", "c", "b", "a", "main"]
    assert bt.stop_reason  # and it stops, with a reason, instead of raising


# -- signal frames: CIE augmentation "S" (.cfi_signal_frame) ---------------------------------------
# An entry stub with a name no stub list knows, marked only by its CFI as a signal frame, with
# rules for the saved RIP and RBP; everything else without frame pointers (RBP is an ordinary
# callee-saved register here, so only CFI can restore it).
STUB_ASM = r"""
{sections}
    .text
    .globl _start
    .type _start, @function
_start:
    .cfi_startproc
    .cfi_undefined rip
    call f_outer
    hlt
    .cfi_endproc
    .size _start, . - _start

    .globl f_outer
    .type f_outer, @function
f_outer:
    .cfi_startproc
    sub $24, %rsp
    .cfi_adjust_cfa_offset 24
    call f_inner
    add $24, %rsp
    .cfi_adjust_cfa_offset -24
    ret
    .cfi_endproc
    .size f_outer, . - f_outer

    .globl f_inner
    .type f_inner, @function
f_inner:
    .cfi_startproc
    push %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_offset rbp, -16
    sub $16, %rsp
    .cfi_adjust_cfa_offset 16
    movq $0, (%rax)
    add $16, %rsp
    .cfi_adjust_cfa_offset -16
    pop %rbp
    .cfi_adjust_cfa_offset -8
    ret
    .cfi_endproc
    .size f_inner, . - f_inner

    /* the CPU pushed SS, RSP, RFLAGS, CS, RIP and an error code; the stub pushes the vector */
    .globl weird_entry
    .type weird_entry, @function
weird_entry:
    .cfi_startproc simple
    .cfi_signal_frame
    .cfi_def_cfa rsp, 48
    .cfi_offset rip, -40
    pushq $14
    .cfi_adjust_cfa_offset 8
    push %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_offset rbp, -64
    sub $8, %rsp
    .cfi_adjust_cfa_offset 8
    call c_handler
    add $8, %rsp
    pop %rbp
    add $16, %rsp
    iretq
    .cfi_endproc
    .size weird_entry, . - weird_entry

    .globl c_handler
    .type c_handler, @function
c_handler:
    .cfi_startproc
    sub $40, %rsp
    .cfi_adjust_cfa_offset 40
    xor %ebp, %ebp
    add $40, %rsp
    .cfi_adjust_cfa_offset -40
    ret
    .cfi_endproc
    .size c_handler, . - c_handler
"""


@pytest.fixture(scope="module", params=[".debug_frame", ".eh_frame"])
def stub_elf(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sig")
    sections = ".cfi_sections .debug_frame" if request.param == ".debug_frame" else ""
    (d / "s.S").write_text(STUB_ASM.format(sections=sections))
    subprocess.run(["gcc", "-c", "s.S", "-o", "s.o"], cwd=d, check=True)
    elf = d / "s.elf"
    subprocess.run(["ld", "-static", "-nostdlib", "--build-id=none", "-Ttext=0x100000",
                    "-e", "_start", "s.o", "-o", str(elf)], cwd=d, check=True)
    return elf


def test_signal_frame_cie_parses_in_both_sections(stub_elf: Path) -> None:
    from elftools.elf.elffile import ELFFile

    from kdiag.unwind.cfi import CfiTable

    with open(stub_elf, "rb") as f:
        dw = ELFFile(f).get_dwarf_info()
        if dw.has_CFI() and not dw.has_EH_CFI():
            # .debug_frame: gas writes the bare augmentation "S", which stock pyelftools 0.33
            # rejects; kdiag's CfiTable parses it (the reason kdiag.unwind.cfi subclasses it)
            try:
                dw.CFI_entries()
            except AssertionError as err:
                assert "augmentation" in str(err)
    table = CfiTable(str(stub_elf))
    sym = Symbolizer(use_cache=False)
    sym.add_elf(stub_elf)
    entry, handler = sym.address_of("weird_entry"), sym.address_of("c_handler")
    assert entry is not None and handler is not None
    rows = table.row(entry), table.row(entry + 3), table.row(handler)
    assert rows[0] is not None and rows[1] is not None and rows[2] is not None
    assert rows[0].signal_frame and rows[1].signal_frame and not rows[2].signal_frame
    assert (rows[0].cfa_reg, rows[0].cfa_offset, rows[0].rules[16]) == (7, 48, ("OFFSET", -40))


def test_signal_frame_marks_the_entry_stub_and_its_rules_cross_it(stub_elf: Path) -> None:
    from kdiag.x86.state import TableRegister

    sym = Symbolizer(use_cache=False)
    sym.add_elf(stub_elf)

    def a(name: str) -> int:
        v = sym.address_of(name)
        assert v is not None
        return v

    t = FakeTarget(CpuState(gpr={}, cr0=0x11, cr2=0, cr3=0, cr4=0, efer=0x500), ram_size=1 << 21)
    with ElfFile(stub_elf) as e:
        for seg in e.segments:
            if seg.type == PT_LOAD and seg.filesz:
                t.write_phys(seg.vaddr, bytes(e.data[seg.offset:seg.offset + seg.filesz]))

    def put(addr: int, *words: int) -> None:
        for i, w in enumerate(words):
            t.write_phys(addr + 8 * i, w.to_bytes(8, "little"))

    # interrupted: f_inner at f_inner_fault, RSP = S; its frame: [S+16] caller's rbp, [S+24] ret
    S, H = 0x80000, 0x7F000
    ret_outer = a("f_outer") + 4 + 5          # after sub $24 (4 bytes) and call (5 bytes)
    ret_start = a("_start") + 5
    put(S + 16, 0xB0B0, ret_outer)
    put(S + 32 + 24, ret_start)
    # the hardware frame at H: error, RIP, CS, RFLAGS, RSP, SS; the stub's pushes below it
    fault = a("f_inner") + 1 + 4              # after push %rbp, sub $16
    put(H, 0x2, fault, 0x08, 0x246, S, 0x10)
    ret_stub = a("weird_entry") + 2 + 1 + 4 + 5  # pushq $14, push %rbp, sub $8, call
    put(H - 32, ret_stub, 0, 0x1111, 14)       # return into the stub, pad, saved rbp, vector
    cs = SegmentCache(0x08, 0, 0xFFFFFFFF, 0x00209A00)
    t.set_state(CpuState(gpr={"rip": a("c_handler") + 4, "rsp": H - 32 - 40, "rbp": 0x3333},
                         cr0=0x11, cr2=0, cr3=0, cr4=0, efer=0x500, segments={"cs": cs},
                         gdtr=TableRegister(0, 0x3F)))
    bt = unwind(t, sym)
    names = [f.location.symbol if f.location else "??" for f in bt.frames]
    assert names == ["c_handler", "weird_entry", "f_inner", "f_outer", "_start"], bt
    # stopped on the stub's first instruction (nothing pushed by it yet, RBP still the
    # interrupted code's): its entry rules alone (CFA = RSP + 48, RIP at CFA - 40) cross it
    t.set_state(CpuState(gpr={"rip": a("weird_entry"), "rsp": H, "rbp": 0x1111}, cr0=0x11,
                         cr2=0, cr3=0, cr4=0, efer=0x500, segments={"cs": cs},
                         gdtr=TableRegister(0, 0x3F)))
    early = unwind(t, sym)
    assert [f.location.symbol if f.location else "??" for f in early.frames] == \
        ["weird_entry", "f_inner", "f_outer", "_start"], early
    eb = early.frames[1].boundary
    assert eb is not None and (eb.found_by, eb.frame_address) == ("cfi", H + 8)
    assert (early.frames[1].pc, early.frames[1].fp, early.frames[2].fp) == (fault, 0x1111, 0xB0B0)
    stub, inner, outer = bt.frames[1], bt.frames[2], bt.frames[3]
    assert stub.is_entry_stub and stub.method == "cfi"
    b = inner.boundary
    assert b is not None and b.text() == "--- interrupt 14 (#PF) from CPL0 ---"
    assert (b.recognized_by, b.found_by, b.error_code, b.frame_address) == \
        ("cfi-signal-frame", "cfi", 2, H + 8)
    assert (inner.pc, inner.sp, inner.fp) == (fault, S, 0x1111)  # rbp from CFI
    assert inner.exact_pc and inner.location is not None
    assert (outer.pc, outer.fp, outer.method) == (ret_outer, 0xB0B0, "cfi")
    assert bt.stop_reason == "outermost frame (CFI: return address undefined)"


@pytest.mark.parametrize(("expr", "cfa", "expected"), [
    (bytes([0x77, 0x28, 0x06]), None, 0x5000),            # *(rsp + 40): isr_common's CFA
    (bytes([0x76, 0x98, 0x01]), None, 0x2098),            # rbp + 152: its saved RIP slot
    (bytes([0x76, 0x70]), None, 0x1FF0),                  # rbp - 16 (sleb -16)
    (bytes([0x31, 0x32, 0x22]), None, 3),                 # lit1 lit2 plus
    (bytes([0x23, 0x08]), 0x100, 0x108),                  # CFA pushed first, plus_uconst 8
    (bytes([0x0B, 0xF0, 0xFF, 0x22]), 0x100, 0xF0),       # const2s -16, plus
    (bytes([0x92, 0x07, 0x08]), None, 0x1008),            # bregx rsp 8
])
def test_eval_expression(expr: bytes, cfa: int | None, expected: int) -> None:
    from kdiag.unwind.cfi import eval_expression

    regs = {7: 0x1000, 6: 0x2000}
    mem = {0x1028: 0x5000}
    assert eval_expression(expr, regs.__getitem__, mem.__getitem__, 8, push_cfa=cfa) == expected


@pytest.mark.parametrize("expr", [b"", bytes([0xE0]), bytes([0x77]), bytes([0x06]),
                                  bytes([0x75, 0x00])])
def test_eval_expression_refuses_what_it_cannot_do(expr: bytes) -> None:
    from kdiag.unwind.cfi import ExpressionError, eval_expression

    with pytest.raises(ExpressionError):
        eval_expression(expr, {7: 0x1000}.__getitem__, lambda a: 0, 8)
