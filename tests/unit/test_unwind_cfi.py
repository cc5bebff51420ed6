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
