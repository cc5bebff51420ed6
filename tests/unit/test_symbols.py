"""Symbolizer over DWARF: addr2line -f -i at every address, pyelftools' line rows, biases,
the on-disk index cache, corrupt input, and the `kdiag symbolize` command."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from kdiag.cli import main
from kdiag.errors import InputError
from kdiag.symbols import Symbolizer, cache, elfindex, symbolizer
from kdiag.symbols.elffile import ElfFile

pytestmark = [pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("addr2line") is None,
                                 reason="gcc/binutils not installed"),
              pytest.mark.usefixtures("private_cache")]  # each test: its own index cache

SRC = r"""
int g;
static inline int helper(int x, int y) { return x * y + g; }
static inline int outer(int x) { return helper(x, 3) + helper(x, g); }
__attribute__((noinline)) int foo(int a, char *b, int c) {
    int r = outer(a) + c;
    if (b) r += *b;
    return r;
}
__attribute__((noinline)) int bar(void) { return foo(1, 0, 3) + 2; }
int main(int argc, char **argv) { return bar() + helper(argc, 2); }
"""


@pytest.fixture(scope="module")
def elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("dwarf")
    (d / "t.c").write_text(SRC)
    out = d / "t.elf"
    subprocess.run(["gcc", "-g", "-O2", "-fno-pie", "-no-pie", "t.c", "-o", str(out)], cwd=d,
                   check=True)
    return out




def text_addrs(elf: Path) -> list[int]:
    with ElfFile(elf) as e:
        t = e.section(".text")
        assert t is not None
        return list(range(t.addr, t.addr + t.size))


def addr2line_frames(elf: Path, addrs: list[int]) -> dict[int, list[tuple[str, str]]]:
    out = subprocess.run(["addr2line", "-f", "-i", "-a", "-e", str(elf)],
                         input="\n".join(map(hex, addrs)), capture_output=True, text=True,
                         check=True).stdout.splitlines()
    res: dict[int, list[tuple[str, str]]] = {}
    cur: list[str] = []
    key = -1
    for line in out + ["0x0"]:
        if line.startswith("0x"):
            if key >= 0:
                res[key] = [(cur[i], cur[i + 1].split(" (discriminator")[0])
                            for i in range(0, len(cur), 2)]
            key, cur = int(line, 16), []
        else:
            cur.append(line)
    return res


def test_every_address_equals_addr2line_with_inlining(elf: Path) -> None:
    sym = Symbolizer()
    sym.add_elf(elf)
    addrs = text_addrs(elf)
    ref = addr2line_frames(elf, addrs)
    inlined_seen = 0
    for a in addrs:
        exp = ref[a]
        loc = sym.lookup(a)
        if exp[0][1].endswith(":?") or exp[0][1].startswith("??"):
            # no line: addr2line names the nearest symbol (or the file symbol's file)
            assert (loc.symbol if loc else "??") == exp[0][0], hex(a)
            continue
        assert loc is not None, hex(a)
        got = [(f.function, f"{f.file}:{f.line}") for f in loc.frames()]
        assert got == exp, hex(a)
        inlined_seen += bool(loc.inlined_into)
    assert inlined_seen > 0  # the test ELF really has inlined code


def test_line_rows_match_pyelftools(elf: Path) -> None:
    from elftools.elf.elffile import ELFFile

    sym = Symbolizer(use_cache=False)
    idx = sym.add_elf(elf)
    ours = dict(zip(idx.ln_addrs, idx.ln_lines, strict=True))
    with open(elf, "rb") as f:
        dw = ELFFile(f).get_dwarf_info()
        for cu in dw.iter_CUs():
            rows = {}
            for e in dw.line_program_for_CU(cu).get_entries():
                if e.state and not e.state.end_sequence:
                    rows[e.state.address] = e.state.line  # the last row at an address wins
            for addr, line in rows.items():
                assert ours.get(addr) == line, hex(addr)


def test_location_fields(elf: Path) -> None:
    sym = Symbolizer()
    sym.add_elf(elf)
    foo = sym.address_of("foo")
    loc = sym.lookup(foo + 1)
    assert loc.symbol == "foo" and loc.offset == 1 and loc.function_start == foo
    assert loc.file.endswith("t.c") and loc.elf == str(elf) and loc.source == "dwarf"
    assert loc.short().startswith("foo+0x1 (")
    assert sym.lookup(0x10) is None


def test_bias_and_several_elfs(elf: Path, tmp_path: Path) -> None:
    other = tmp_path / "copy.elf"
    shutil.copy(elf, other)
    sym = Symbolizer()
    sym.add_elf(elf)
    sym.add_elf(other, bias=0x10000000)
    foo = Symbolizer()
    foo.add_elf(elf)
    a = foo.address_of("foo")
    near, far = sym.lookup(a + 4), sym.lookup(a + 0x10000000 + 4)
    assert (near.symbol, near.offset, near.elf) == ("foo", 4, str(elf))
    assert (far.symbol, far.offset, far.elf, far.bias) == ("foo", 4, str(other), 0x10000000)
    assert far.function_start == a + 0x10000000 and far.line == near.line


def test_index_is_cached_on_disk(elf: Path, private_cache: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    Symbolizer().add_elf(elf)
    files = list(private_cache.glob("*.idx"))
    assert len(files) == 1
    symbolizer._memory.clear()

    def no_build(*_a: object, **_k: object) -> None:
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(symbolizer, "build", no_build)
    sym = Symbolizer()
    sym.add_elf(elf)
    assert sym.lookup(sym.address_of("bar")).symbol == "bar"


def test_stale_or_damaged_cache_entry_is_rebuilt(elf: Path, private_cache: Path) -> None:
    Symbolizer().add_elf(elf)
    (entry,) = private_cache.glob("*.idx")
    entry.write_bytes(b"garbage")
    symbolizer._memory.clear()
    sym = Symbolizer()
    sym.add_elf(elf)
    assert sym.lookup(sym.address_of("bar")) is not None
    assert entry.read_bytes() != b"garbage"


def test_cache_can_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDIAG_CACHE_DIR", "off")
    assert cache.cache_dir() is None
    monkeypatch.delenv("KDIAG_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert cache.cache_dir() == "/somewhere/kdiag"


def test_rebuilt_elf_gets_a_new_key(elf: Path, tmp_path: Path) -> None:
    from kdiag.symbols.elffile import file_key

    copy = tmp_path / "x.elf"
    shutil.copy(elf, copy)
    k1, e1 = file_key(copy)
    e1.close()
    subprocess.run(["strip", "-g", str(copy)], check=True)
    k2, e2 = file_key(copy)
    e2.close()
    assert k1 != k2


@pytest.mark.parametrize("mangle", ["empty", "not-elf", "truncated", "bad-shoff", "big-endian",
                                    "bad-debug-info"])
def test_corrupt_elf_is_one_line_input_error(elf: Path, tmp_path: Path, mangle: str) -> None:
    data = bytearray(elf.read_bytes())
    bad = tmp_path / f"{mangle}.elf"
    if mangle == "empty":
        data = bytearray()
    elif mangle == "not-elf":
        data[:4] = b"MZ\x90\x00"
    elif mangle == "truncated":
        data = data[: len(data) // 2]
    elif mangle == "bad-shoff":
        struct.pack_into("<Q", data, 0x28, len(data) + 4096)
    elif mangle == "big-endian":
        data[5] = 2
    elif mangle == "bad-debug-info":
        with ElfFile(elf) as e:
            sec = e.section(".debug_info")
            assert sec is not None
            off, size = sec.offset, sec.size
        data[off:off + 4] = struct.pack("<I", size * 4)  # unit length past the section
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError) as info:
        Symbolizer().add_elf(bad)
    msg = str(info.value)
    assert "\n" not in msg and str(bad) in msg


def test_symbolize_cli(elf: Path, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    sym = Symbolizer()
    sym.add_elf(elf)
    foo = sym.address_of("foo")
    assert main(["symbolize", "--elf", str(elf), hex(foo + 2)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{foo + 2:#x}: foo+0x2") and "t.c:" in out
    assert main(["symbolize", "--elf", str(elf), "--json", hex(foo)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc[0]["symbol"] == "foo" and doc[0]["address"] == hex(foo)
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(f"{foo:x}\n{foo + 1:#x}\n"))
    assert main(["symbolize", "--elf", str(elf), "--format", "addr2line"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ref = subprocess.run(["addr2line", "-f", "-i", "-e", str(elf), hex(foo), hex(foo + 1)],
                         capture_output=True, text=True).stdout.splitlines()
    assert [ln.split(" (disc")[0] for ln in ref] == lines
    assert main(["symbolize", "--elf", str(elf), "nonsense!"]) == 2


def test_describe(elf: Path) -> None:
    idx = Symbolizer().add_elf(elf)
    d = elfindex.describe(idx)
    assert d["line_rows"] > 0 and d["functions"] > 0 and d["symbols"] > 0
