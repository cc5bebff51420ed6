"""STABS: the JOS debuginfo_eip port, its segment index, and lookups against addr2line.

A small JOS-like ELF is compiled here (gcc -m32 -gstabs, an assembly file, ld at 0xF0100000);
binutils' addr2line reads STABS too and is the reference for Symbolizer.lookup.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from kdiag.symbols import Symbolizer
from kdiag.symbols.elffile import ElfFile
from kdiag.symbols.stabs import N_FUN, N_SLINE, N_SO, N_SOL, StabTable, build_segments, read_lines

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("addr2line") is None,
                                reason="gcc/binutils not installed")

C_SRC = r"""
static inline int sq(int x) { return x * x; }
int g;
int three(int a, char *b, int c) { int r = sq(a) + c; if (b) r += *b; g = r; return r; }
int none(void) { return three(1, 0, 3) + 2; }
static int reg(int x) { g += x; return g; }
int entry_c(int k) { return none() + reg(k); }
"""
ASM_SRC = """
.text
.globl start
start:
    movl $0, %ebp
    call entry_c
spin: jmp spin
"""


@pytest.fixture(scope="module")
def elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("stabs")
    (d / "k.c").write_text(C_SRC)
    (d / "entry.S").write_text(ASM_SRC)
    for src in ("entry.S", "k.c"):
        r = subprocess.run(["gcc", "-m32", "-gstabs", "-O1", "-w", "-fno-pic", "-fno-pie",
                            "-ffreestanding", "-fno-omit-frame-pointer", "-c", src, "-o",
                            src + ".o"], cwd=d, capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"gcc -m32 -gstabs unavailable: {r.stderr[-200:]}")
    out = d / "k.elf"
    subprocess.run(["ld", "-m", "elf_i386", "-nostdlib", "-Ttext=0xF0100000", "-e", "start",
                    "entry.S.o", "k.c.o", "-o", str(out)], cwd=d, check=True)
    return out


@pytest.fixture(scope="module")
def table(elf: Path) -> StabTable:
    with ElfFile(elf) as e:
        return StabTable(e.section_data(".stab"), e.section_data(".stabstr"))


def text_range(elf: Path) -> range:
    with ElfFile(elf) as e:
        t = e.section(".text")
        assert t is not None
        return range(t.addr, t.addr + t.size)


def addr2line(elf: Path, addrs: list[int]) -> list[tuple[str, str]]:
    out = subprocess.run(["addr2line", "-f", "-e", str(elf)], input="\n".join(map(hex, addrs)),
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return [(out[2 * i], out[2 * i + 1].split(" (")[0]) for i in range(len(addrs))]


def test_parse_finds_files_functions_and_lines(table: StabTable) -> None:
    # gcc names a preprocessed .S by its temporary .s file (N_SO) and the source by N_SOL
    strings = {table.string(x) for x, t in zip(table.strx, table.type, strict=True)
               if t in (N_SO, N_SOL)}
    assert {"entry.S", "k.c"} <= strings
    funcs = {table.string(x).split(":")[0] for x, t in zip(table.strx, table.type, strict=True)
             if t == N_FUN}
    assert {"three", "none", "entry_c"} <= funcs
    assert N_SLINE in table.type


def test_debuginfo_eip_like_jos(elf: Path, table: StabTable) -> None:
    sym = Symbolizer(use_cache=False)
    sym.add_elf(elf)
    three = sym.address_of("three")
    info = table.debuginfo_eip(three)
    assert (info.fn_name, info.fn_addr, info.narg, info.file, info.ok) == \
        ("three", three, 3, "k.c", True)
    assert table.debuginfo_eip(sym.address_of("none")).narg == 0
    # assembly: no N_FUN, so JOS reports <unknown> at offset 0 with the line from entry.S
    start = sym.address_of("start")
    a = table.debuginfo_eip(start)
    assert (a.fn_name, a.fn_addr, a.file, a.ok) == ("<unknown>", start, "entry.S", True)
    # below every stab: JOS's "lfile == 0" failure, all fields at their defaults
    low = table.debuginfo_eip(0x1000)
    assert (low.ok, low.file, low.line, low.fn_name) == (False, "<unknown>", 0, "<unknown>")


def test_segment_index_equals_the_port_at_every_address(elf: Path, table: StabTable) -> None:
    sym = Symbolizer(use_cache=False)
    idx = sym.add_elf(elf)
    rng = text_range(elf)
    for addr in [rng.start - 7, *rng, rng.stop + 3]:
        assert idx.stabs_at(addr) == table.debuginfo_eip(addr), hex(addr)


def test_jos_exact_match_quirk_is_reproduced() -> None:
    """stab_binsearch bumps addr after an exact match, so a line stab at addr+1 wins."""
    import struct

    strs = b"\0k.c\0f:F1\0"
    stabs = [(0, 0, 0, 0, 0), (1, N_SO, 0, 0, 0x100), (5, N_FUN, 0, 0, 0x100),
             (0, N_SLINE, 0, 10, 0x0), (0, N_SLINE, 0, 11, 0x4), (0, N_SLINE, 0, 12, 0x5),
             (0, N_SO, 0, 0, 0x110)]
    t = StabTable(b"".join(struct.pack("<IBBHI", *s) for s in stabs), strs)
    assert t.debuginfo_eip(0x104).line == 12  # JOS: the next stab starts at 0x105
    assert t.debuginfo_eip(0x103).line == 10
    seg = build_segments(t)
    assert seg.starts == sorted(seg.starts)
    lines = read_lines(t)
    assert [(a, ln) for a, _f, ln in lines.rows] == [(0x100, 10), (0x104, 11), (0x105, 12)]


def test_lookup_equals_addr2line_at_function_starts_and_samples(elf: Path, table: StabTable
                                                               ) -> None:
    sym = Symbolizer(use_cache=False)
    sym.add_elf(elf)
    sl = read_lines(table)
    starts = [f[0] for f in sl.funcs]
    inside = [a for s, e, _n, _g in sl.funcs for a in range(s, e)]
    random.seed(7)
    addrs = starts + random.sample(inside, min(200, len(inside)))
    for a, (fn, fl) in zip(addrs, addr2line(elf, addrs), strict=True):
        loc = sym.lookup(a)
        assert loc is not None and loc.source == "stabs"
        assert (loc.function, f"{loc.file}:{loc.line}") == (fn, fl), hex(a)
    assert sym.lookup(sym.address_of("three")).narg == 3


def test_lookups_equal_addr2line_everywhere(elf: Path) -> None:
    """Every .text address, padding between and after functions included (addr2line gives
    padding to the function before it, up to the next function or function-less file)."""
    sym = Symbolizer(use_cache=False)
    sym.add_elf(elf)
    addrs = list(text_range(elf))
    for a, (fn, fl) in zip(addrs, addr2line(elf, addrs), strict=True):
        if fl.endswith(":?") or fl.startswith("??"):
            continue
        loc = sym.lookup(a)
        assert loc is not None
        assert (loc.function or "??", f"{loc.file}:{loc.line}") == (fn, fl), hex(a)


def test_truncated_stab_section_is_tolerated() -> None:
    t = StabTable(b"\x00" * 13, b"\0")
    assert len(t) == 1
    assert not t.debuginfo_eip(0x100).ok
    assert not StabTable(b"", b"").debuginfo_eip(0).ok
