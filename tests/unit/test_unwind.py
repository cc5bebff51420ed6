"""kdiag.unwind on synthetic stacks: a tiny ELF compiled here, a FakeTarget holding its code and
a hand-built stack. Frame-pointer chains, interrupt frames (32-bit with and without a stack
switch, 64-bit), the JOS walk, and every way a bad stack must stop (loop, unreadable,
limit) without raising."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kdiag.render import backtrace as render
from kdiag.symbols import Symbolizer
from kdiag.symbols.elffile import PT_LOAD, ElfFile
from kdiag.target.fake import FakeTarget
from kdiag.unwind import jos_walk, unwind
from kdiag.x86.state import CpuState, SegmentCache, TableRegister

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")

SRC = r"""
int sink;
__attribute__((noinline)) void touch(void) { __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) int leaf(int a) { sink += a; touch(); return sink; }
__attribute__((noinline)) int mid(int a, int b) { return leaf(a + b) + 1; }
__attribute__((noinline)) int top(int a) { return mid(a, 7) + 1; }
__attribute__((noinline)) void handler(void *tf) { sink = (int)(long)tf; touch(); }
void _start(void) { top(1); for (;;) ; }
__asm__(".globl _alltraps\n_alltraps:\n call handler\n nop\n nop\n iret\n"
        ".globl isr_common\nisr_common:\n call handler\n nop\n nop\n iret\n");
"""


def build(tmp: Path, bits: int) -> Path:
    src = tmp / "t.c"
    src.write_text(SRC)
    elf = tmp / f"t{bits}.elf"
    cmd = ["gcc", f"-m{bits}", "-O1", "-g", "-fno-pic", "-fno-pie", "-nostdlib", "-static",
           "-ffreestanding", "-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer",
           "-fno-optimize-sibling-calls",
           "-fcf-protection=none", "-fno-asynchronous-unwind-tables", "-Wl,--build-id=none",
           "-Wl,-Ttext=0x100000", "-Wl,-e,_start", str(src), "-o", str(elf)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot build a {bits}-bit test ELF: {r.stderr[-300:]}")
    return elf


@pytest.fixture(scope="module")
def elf32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("u32"), 32)


@pytest.fixture(scope="module")
def elf64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("u64"), 64)


def state(bits: int, rip: int, rsp: int, rbp: int, cs: int = 0x08) -> CpuState:
    if bits == 64:
        seg = SegmentCache(cs, 0, 0xFFFFFFFF, 0x00209A00 | ((cs & 3) << 13))
        return CpuState(gpr={"rip": rip, "rsp": rsp, "rbp": rbp}, cr0=0x11, cr2=0, cr3=0,
                        cr4=0, efer=0x500, segments={"cs": seg}, gdtr=TableRegister(0, 0x3F))
    seg = SegmentCache(cs, 0, 0xFFFFFFFF, 0x00CF9A00 | ((cs & 3) << 13))
    return CpuState(gpr={"rip": rip, "rsp": rsp, "rbp": rbp}, cr0=0x11, cr2=0, cr3=0, cr4=0,
                    efer=0, segments={"cs": seg}, gdtr=TableRegister(0, 0x37))


class Machine:
    """A FakeTarget (paging off: virtual == physical) with the ELF's code loaded."""

    def __init__(self, elf: Path, bits: int) -> None:
        self.bits = bits
        self.ws = bits // 8
        self.sym = Symbolizer(use_cache=False)
        self.sym.add_elf(elf)
        self.t = FakeTarget(state(bits, 0, 0, 0))
        with ElfFile(elf) as e:
            for seg in e.segments:
                if seg.type == PT_LOAD and seg.filesz:
                    self.t.write_phys(seg.vaddr, bytes(e.data[seg.offset:seg.offset + seg.filesz]))

    def addr(self, name: str, off: int = 0) -> int:
        a = self.sym.address_of(name)
        assert a is not None, name
        return a + off

    def put(self, addr: int, *words: int) -> None:
        for i, w in enumerate(words):
            self.t.write_phys(addr + i * self.ws, w.to_bytes(self.ws, "little"))

    def run(self, rip: int, rsp: int, rbp: int, cs: int = 0x08, limit: int = 64,
            use_cfi: bool = True):
        self.t.set_state(state(self.bits, rip, rsp, rbp, cs))
        return unwind(self.t, self.sym, limit=limit, use_cfi=use_cfi)


def names(bt) -> list[str]:
    return [f.location.symbol if f.location else "??" for f in bt.frames]


def fp_chain(m: Machine) -> tuple[int, int]:
    """leaf <- mid <- top <- _start, frame records at 0x9000.. ; returns (rsp, rbp)."""
    w = m.ws
    f0, f1, f2 = 0x9000, 0x9040, 0x9080
    m.put(f0, f1, m.addr("mid", 5), 0x11)
    m.put(f1, f2, m.addr("top", 5), 0x22, 0x33)
    m.put(f2, 0, m.addr("_start", 5), 0x44)
    return f0 - 4 * w, f0


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("use_cfi", [False, True])
def test_frame_pointer_chain(elf32: Path, elf64: Path, bits: int, use_cfi: bool) -> None:
    m = Machine(elf32 if bits == 32 else elf64, bits)
    sp, fp = fp_chain(m)
    bt = m.run(m.addr("leaf", 6), sp, fp, use_cfi=use_cfi)
    assert names(bt) == ["leaf", "mid", "top", "_start"]
    method = "cfi" if use_cfi else "fp"  # -g puts CFI in .debug_frame
    assert [f.method for f in bt.frames] == ["regs", method, method, method]
    assert bt.stop_reason in ("end of the frame-pointer chain (frame pointer 0)",
                              "outermost frame (CFI: return address undefined)")
    assert bt.frames[1].location.file.endswith("t.c")


@pytest.mark.parametrize("use_cfi", [False, True])
def test_at_function_entry_the_return_address_is_on_top(elf32: Path, use_cfi: bool) -> None:
    m = Machine(elf32, 32)
    sp, fp = fp_chain(m)
    # stopped on leaf's first instruction: [esp] = return into mid, ebp still mid's frame
    m.put(0x8F00, m.addr("mid", 5))
    bt = m.run(m.addr("leaf"), 0x8F00, 0x9040, use_cfi=use_cfi)
    assert names(bt) == ["leaf", "mid", "top", "_start"]
    assert bt.frames[1].method == ("cfi" if use_cfi else "fp-prologue")


def test_loop_in_the_chain_stops(elf32: Path) -> None:
    m = Machine(elf32, 32)
    m.put(0x9000, 0x9010, m.addr("mid", 5))
    m.put(0x9010, 0x9000, m.addr("top", 5))  # points back down: never "up the stack"
    bt = m.run(m.addr("leaf", 6), 0x8FF0, 0x9000)
    assert len(bt.frames) <= 4
    assert "frame pointer" in bt.stop_reason or "loop" in bt.stop_reason


def test_unreadable_memory_stops_with_a_note(elf32: Path) -> None:
    m = Machine(elf32, 32)
    m.t.ram_size = 0x10000000
    m.put(0x9000, 0x0FFFFFFC, m.addr("mid", 5))  # next frame runs past the end of RAM
    bt = m.run(m.addr("leaf", 6), 0x8FF0, 0x9000)
    assert names(bt)[:2] == ["leaf", "mid"]
    assert "unreadable memory" in bt.stop_reason


def test_limit(elf32: Path) -> None:
    m = Machine(elf32, 32)
    sp, fp = fp_chain(m)
    bt = m.run(m.addr("leaf", 6), sp, fp, limit=2)
    assert len(bt.frames) == 2 and bt.stop_reason == "limit of 2 frames reached"


def jos_trap_frame(m: Machine, at: int, eip: int, cs: int, err: int, vector: int,
                   saved_ebp: int, user_esp: int | None = None) -> int:
    """JOS _alltraps layout at ``at``: tf ptr, pushal, es, ds, trapno, err, eip, cs, eflags
    [, esp, ss]. Returns the address of the saved eip."""
    tf = at + 4
    regs = [0x1D1, 0x151, saved_ebp, 0, 0xB0B, 0xD0D, 0xC0C, 0xA0A]  # edi esi ebp oesp ...
    words = [tf, *regs, 0x10, 0x10, vector, err, eip, cs, 0x202]
    if user_esp is not None:
        words += [user_esp, 0x23]
    m.put(at, *words)
    return at + 4 * 13


def test_interrupt_frame_32bit_same_cpl(elf32: Path) -> None:
    m = Machine(elf32, 32)
    # interrupted: mid (fault inside it), whose frame record is at 0x9400 -> top -> _start
    m.put(0x9400, 0x9480, m.addr("top", 5))
    m.put(0x9480, 0, m.addr("_start", 5))
    at = 0x9100
    ip_addr = jos_trap_frame(m, at, m.addr("mid", 4), 0x08, 0x2, 14, saved_ebp=0x9400)
    # handler(tf) was called from _alltraps: its frame record at 0x90f0
    m.put(0x90F0, 0x9400, m.addr("_alltraps", 5))
    bt = m.run(m.addr("handler", 4), 0x90E0, 0x90F0)
    assert names(bt) == ["handler", "_alltraps", "mid", "top", "_start"]
    stub, interrupted = bt.frames[1], bt.frames[2]
    assert stub.is_entry_stub
    b = interrupted.boundary
    assert b is not None and b.text() == "--- interrupt 14 (#PF) from CPL0 ---"
    assert (b.error_code, b.frame_address, b.stack_switch) == (2, ip_addr, False)
    assert interrupted.pc == m.addr("mid", 4) and interrupted.exact_pc
    assert interrupted.sp == ip_addr + 12  # the ESP before the CPU pushed EIP, CS, EFLAGS
    assert interrupted.fp == 0x9400


def test_interrupt_frame_32bit_from_user(elf32: Path) -> None:
    m = Machine(elf32, 32)
    m.put(0x7000, 0, m.addr("_start", 5))  # the user stack
    jos_trap_frame(m, 0x9100, m.addr("top", 4), 0x1B, 0, 48, saved_ebp=0x7000,
                   user_esp=0x6FF0)
    m.put(0x90F0, 0x7000, m.addr("_alltraps", 5))
    bt = m.run(m.addr("handler", 4), 0x90E0, 0x90F0)
    assert names(bt) == ["handler", "_alltraps", "top", "_start"]
    b = bt.frames[2].boundary
    assert b.text() == "--- interrupt 48 (INT 0x30) from CPL3 ---"
    assert (b.from_cpl, b.to_cpl, b.stack_switch, b.error_code) == (3, 0, True, None)
    assert bt.frames[2].sp == 0x6FF0 and bt.frames[2].cpl == 3
    assert "[user]" in render.to_text(bt)


def test_interrupt_frame_64bit(elf64: Path) -> None:
    m = Machine(elf64, 64)
    m.put(0x9400, 0, m.addr("_start", 5))
    # bundled x86-64 kernel layout: [rbp][rip] frame record, r15..rax, vector, error, hw frame
    rec = 0x9100
    regs = [0] * 15
    regs[8] = 0x9400  # TF_RBP = 64: r15..r8 below it, 9 words under the saved rip
    m.put(rec, 0x9400, m.addr("mid", 4), *regs, 13, 0x18, m.addr("mid", 4), 0x08, 0x246,
          0x9300, 0x10)
    m.put(0x90F0, rec, m.addr("isr_common", 5))
    bt = m.run(m.addr("handler", 4), 0x90E0, 0x90F0)
    assert names(bt) == ["handler", "isr_common", "mid", "_start"]
    b = bt.frames[2].boundary
    assert b.text() == "--- interrupt 13 (#GP) from CPL0 ---" and b.error_code == 0x18
    assert bt.frames[2].sp == 0x9300 and bt.frames[2].fp == 0x9400


def test_stub_without_a_hardware_frame_falls_back(elf32: Path) -> None:
    m = Machine(elf32, 32)
    m.put(0x90F0, 0, m.addr("_alltraps", 5))
    bt = m.run(m.addr("handler", 4), 0x90E0, 0x90F0)
    assert names(bt)[:2] == ["handler", "_alltraps"]
    assert any("no hardware frame" in n for n in bt.notes)


def test_jos_walk_rows(elf32: Path) -> None:
    m = Machine(elf32, 32)
    sp, fp = fp_chain(m)
    m.t.set_state(state(32, m.addr("leaf", 6), sp, fp))
    trace = jos_walk(m.t, m.sym)
    assert [r.ebp for r in trace.rows] == [0x9000, 0x9040, 0x9080]
    assert trace.rows[0].args == (0x11, 0, 0, 0, 0) or trace.rows[0].args[0] == 0x11
    text = render.jos_text(trace).splitlines()
    assert text[0] == "Stack backtrace:"
    assert text[1].startswith("  ebp 00009000  eip ")
    assert trace.stop_reason == ""


def test_jos_walk_at_function_entry_builds_the_frame_to_be(elf32: Path) -> None:
    m = Machine(elf32, 32)
    sp, fp = fp_chain(m)
    m.put(0x8F00, m.addr("mid", 5), 0xAA, 0xBB)
    m.t.set_state(state(32, m.addr("leaf"), 0x8F00, 0x9040))
    trace = jos_walk(m.t, m.sym)
    assert trace.rows[0].ebp == 0x8EFC and trace.rows[0].eip == m.addr("mid", 5)
    assert trace.rows[0].args[:2] == (0xAA, 0xBB)
    assert [r.ebp for r in trace.rows[1:]] == [0x9040, 0x9080]


def test_jos_walk_loop_is_bounded(elf32: Path) -> None:
    m = Machine(elf32, 32)
    m.put(0x9000, 0x9000, m.addr("mid", 5))
    m.t.set_state(state(32, m.addr("leaf", 6), 0x8FF0, 0x9000))
    trace = jos_walk(m.t, m.sym)
    assert len(trace.rows) == 1 and "loop" in trace.stop_reason


def test_json_is_hex_strings(elf32: Path) -> None:
    m = Machine(elf32, 32)
    sp, fp = fp_chain(m)
    doc = render.to_json(m.run(m.addr("leaf", 6), sp, fp))
    assert doc["frames"][0]["pc"].startswith("0x") and doc["word_size"] == 4
    assert doc["frames"][1]["symbol"] == "mid"


def test_declared_stub(elf32: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stub no built-in list knows (here `top`) is crossed once declared (KDIAG_ENTRY_STUBS
    or `--stub`), and says how it was recognized."""
    m = Machine(elf32, 32)
    m.put(0x9400, 0x9480, m.addr("mid", 5))
    m.put(0x9480, 0, m.addr("_start", 5))
    jos_trap_frame(m, 0x9100, m.addr("leaf", 4), 0x08, 0x2, 14, saved_ebp=0x9400)
    m.put(0x90F0, 0x9400, m.addr("top", 5))
    plain = m.run(m.addr("handler", 4), 0x90E0, 0x90F0)
    assert not any(f.boundary for f in plain.frames)
    monkeypatch.setenv("KDIAG_ENTRY_STUBS", "isr9, top")
    bt = m.run(m.addr("handler", 4), 0x90E0, 0x90F0)
    assert names(bt) == ["handler", "top", "leaf", "mid", "_start"]
    b = bt.frames[2].boundary
    assert b is not None and (b.recognized_by, b.found_by, b.vector) == ("declared", "scan", 14)
    assert render.to_json(bt)["frames"][2]["boundary"]["recognized_by"] == "declared"
