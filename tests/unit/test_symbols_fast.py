"""The fast paths of `kdiag symbolize` (issue #6, performance) against the slow, plain ones.

- the on-disk index (marshal since format 6): damaged, outdated (the pickle of format 5),
  foreign-version, foreign-byte-order and incomplete entries are rebuilt, never an error;
- `kdiag symbolize` prints the same bytes cold (index built) and warm (index loaded);
- the batch paths (Symbolizer.map_segments and lookup_many, which `kdiag symbolize` uses)
  answer what Symbolizer.lookup answers address by address, on both bundled kernels, and the
  CLI's text and addr2line formats equal a plain rendering of those Locations;
- the CLI's argparse-free parse (symbolize.parse_fast) equals argparse or declines;
- a warm `kdiag symbolize` process imports none of the modules it was slimmed of.
"""

from __future__ import annotations

import argparse
import io
import marshal
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest

from kdiag import cli
from kdiag.commands import symbolize
from kdiag.symbols import Symbolizer, elfindex, symbolizer
from kdiag.symbols.elffile import SHF_EXECINSTR, ElfFile
from kdiag.symbols.location import Location

pytestmark = pytest.mark.usefixtures("private_cache")  # each test: its own index cache

ROOT = Path(__file__).resolve().parents[2]
KERNELS = {"i386": ROOT / "kernel/build/kernel-i386.elf",
           "x86_64": ROOT / "kernel/build/kernel-x86_64.elf"}


@pytest.fixture(scope="module", params=sorted(KERNELS))
def kernel(request: pytest.FixtureRequest) -> Path:
    path = KERNELS[request.param]
    if not path.is_file():
        r = subprocess.run(["make", "-s", "-C", str(ROOT / "kernel")], capture_output=True,
                           text=True)
        if r.returncode or not path.is_file():
            pytest.skip(f"{path.name} not built and `make -C kernel` failed: {r.stderr[-200:]}")
    return path




def sample(path: Path, n: int = 3000, seed: int = 6) -> list[int]:
    """Random code addresses, every address of the first 2 KiB of code, repeats, and a few
    addresses outside the code (unknown ones)."""
    with ElfFile(path) as e:
        ranges = [(s.addr, s.addr + s.size) for s in e.sections
                  if s.flags & SHF_EXECINSTR and s.size]
    rnd = random.Random(seed)
    out = [rnd.randrange(lo, hi) for lo, hi in (rnd.choice(ranges) for _ in range(n))]
    lo, hi = ranges[0]
    out += list(range(lo, min(hi, lo + 2048)))
    out += out[:50] + [0, 1, lo - 1, 0x10, max(h for _l, h in ranges) + 0x1000]
    rnd.shuffle(out)
    return out


def fields(loc: Location | None) -> tuple[object, ...] | None:
    if loc is None:
        return None
    return tuple(getattr(loc, f) for f in Location._FIELDS)


# -- the index cache ---------------------------------------------------------------------------
def _entry(cache_dir: Path) -> Path:
    (entry,) = cache_dir.glob("*.idx")
    return entry


def _foreign(data: bytes, **change: object) -> bytes:
    version, order, plain, arrays = marshal.loads(data[len(elfindex.MAGIC):])
    version = change.get("version", version)
    order = change.get("order", order)
    if change.get("drop"):
        plain.pop("files")
    return elfindex.MAGIC + marshal.dumps((version, order, plain, arrays))


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated", "pickle-v5",
                                    "other-version", "other-byte-order", "missing-field",
                                    "not-marshal"])
def test_bad_cache_entries_are_rebuilt(kernel: Path, private_cache: Path, damage: str) -> None:
    ref = Symbolizer(use_cache=False)
    ref.add_elf(kernel)
    addrs = sample(kernel, 300)
    Symbolizer().add_elf(kernel)
    entry = _entry(private_cache)
    good = entry.read_bytes()
    assert good.startswith(elfindex.MAGIC)
    bad = {
        "garbage": b"\x00garbage" * 10,
        "empty": b"",
        "truncated": good[: len(good) // 2],
        # what format 5 wrote: a pickle of (version, state)
        "pickle-v5": pickle.dumps((5, {"path": str(kernel)}), protocol=pickle.HIGHEST_PROTOCOL),
        "other-version": _foreign(good, version=elfindex.FORMAT_VERSION + 1),
        "other-byte-order": _foreign(good, order="big" if sys.byteorder == "little"
                                     else "little"),
        "missing-field": _foreign(good, drop=True),
        "not-marshal": elfindex.MAGIC + b"\xff\x00\x01",
    }[damage]
    entry.write_bytes(bad)
    symbolizer._memory.clear()
    sym = Symbolizer()
    sym.add_elf(kernel)  # no exception: rebuilt
    assert [fields(x) for x in sym.lookup_many(addrs)] == [fields(ref.lookup(a)) for a in addrs]
    assert entry.read_bytes() == good  # and rewritten in the current format


def test_index_round_trip(kernel: Path) -> None:
    idx = Symbolizer(use_cache=False).add_elf(kernel)
    back = elfindex.ElfIndex.from_bytes(idx.to_bytes())
    for name in elfindex._FIELDS:
        assert getattr(back, name) == getattr(idx, name), name


# -- the CLI: cold == warm, fast == library ---------------------------------------------------
def _cli(argv: list[str], stdin: str, monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert cli.main(argv) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("extra", [[], ["--format", "addr2line"], ["--no-inline"],
                                   ["--format", "addr2line", "--no-inline"], ["--json"]])
def test_cold_and_warm_output_are_identical(kernel: Path, private_cache: Path, extra: list[str],
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    text = "".join(f"{a:x}\n" for a in sample(kernel, 2000))
    argv = ["symbolize", "--elf", str(kernel), *extra]
    cold = _cli(argv, text, monkeypatch, capsys)
    assert list(private_cache.glob("*.idx"))  # the cold run wrote the index
    symbolizer._memory.clear()
    warm = _cli(argv, text, monkeypatch, capsys)
    symbolizer._memory.clear()
    monkeypatch.setenv("KDIAG_CACHE_DIR", "off")
    uncached = _cli(argv, text, monkeypatch, capsys)
    assert cold == warm == uncached
    assert cold.count("\n") >= 2000


def test_batch_lookups_equal_single_lookups(kernel: Path) -> None:
    sym = Symbolizer()
    sym.add_elf(kernel)
    addrs = sample(kernel)
    single = [sym.lookup(a) for a in addrs]
    assert [fields(x) for x in sym.lookup_many(addrs)] == [fields(x) for x in single]
    got = sym.map_segments(addrs, lambda loc: lambda addr, off: (fields(loc), addr, off))
    for a, loc, item in zip(addrs, single, got, strict=True):
        if loc is None:
            assert item is None, hex(a)
            continue
        assert item is not None, hex(a)
        shared, addr, off = item
        assert (addr, off) == (a, loc.offset), hex(a)
        # the shared Location holds the address's every field but address and offset
        assert shared is not None
        assert shared[1:2] + shared[3:] == fields(loc)[1:2] + fields(loc)[3:], hex(a)  # type: ignore[index]
    assert sum(x is None for x in single) > 0 and sum(x is not None for x in single) > 1000


def _plain_text(a: int, loc: Location | None, inline: bool) -> list[str]:
    """The text format, written out from one Location (the pre-batch renderer)."""
    if loc is None:
        return [f"{a:#x}: ??"]
    name = loc.symbol or "??"
    text = f"{a:#x}: {name}+{loc.offset:#x}" if loc.offset else f"{a:#x}: {name}"
    if loc.function and loc.function != loc.symbol:
        text += f" [{loc.function}]"
    if loc.file:
        text += f" at {loc.file}:{loc.line}"
    out = [text]
    if inline:
        out += [f"    inlined into {c.function} at {c.file}:{c.line}" for c in loc.inlined_into]
    return out


def _plain_addr2line(loc: Location | None, inline: bool) -> list[str]:
    if loc is None:
        return ["??", "??:0"]
    out = []
    for fr in loc.frames() if inline else loc.frames()[:1]:
        out.append(fr.function or "??")
        out.append(f"{fr.file or '??'}:{fr.line if fr.line is not None else 0}"
                   if fr.file else "??:?")
    return out


@pytest.mark.parametrize("inline", [True, False])
def test_cli_formats_equal_the_library(kernel: Path, inline: bool,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    addrs = sample(kernel)
    sym = Symbolizer()
    sym.add_elf(kernel)
    locs = [sym.lookup(a) for a in addrs]
    text = "".join(f"{a:#x} " + ("\n" if i % 3 == 2 else "") for i, a in enumerate(addrs))
    flags = [] if inline else ["--no-inline"]
    out = _cli(["symbolize", "--elf", str(kernel), *flags], text, monkeypatch, capsys)
    assert out.splitlines() == [ln for a, loc in zip(addrs, locs, strict=True)
                                for ln in _plain_text(a, loc, inline)]
    out = _cli(["symbolize", "--elf", str(kernel), "--format", "addr2line", *flags], text,
               monkeypatch, capsys)
    assert out.splitlines() == [ln for loc in locs for ln in _plain_addr2line(loc, inline)]


def test_several_elfs_take_the_plain_path(kernel: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    addrs = sample(kernel, 500)
    sym = Symbolizer()
    sym.add_elf(kernel)
    sym.add_elf(kernel, bias=0x1000_0000)  # two ELFs: lookup per address
    text = "".join(f"{a:x}\n" for a in addrs)
    out = _cli(["symbolize", "--elf", str(kernel), "--elf", f"{kernel}@0x10000000"], text,
               monkeypatch, capsys)
    assert out.splitlines() == [ln for a in addrs for ln in _plain_text(a, sym.lookup(a), True)]


# -- the argparse-free command line -------------------------------------------------------------
ARGVS = [
    ["--elf", "k.elf"], ["--elf=k.elf", "0x10"], ["--elf", "k.elf", "0x1", "0x2"],
    ["0x1", "--elf", "k.elf"], ["0x1", "--elf", "k.elf", "0x2"],
    ["--elf", "k.elf", "0x1", "--json", "0x2"], ["--elf", "a", "--elf", "b@0x1000", "-"],
    ["--elf", "k.elf", "--format", "addr2line", "--no-inline"], ["--format=text", "--elf", "k"],
    ["--elf", "k.elf", "--format", "bogus"], ["--elf", "k.elf", "--form", "addr2line"],
    ["--elf"], ["--elf", "--json"], ["0x1"], [], ["--elf", "k", "--", "0x1"],
    ["--elf", "k", "-h"], ["--elf", "k", "--traceback", "0x1"], ["--elf=", "0x1"],
    ["--elf", "k", "-5"], ["--elf", "k", "--json", "--json"], ["--elf", "k", "--unknown"],
]


@pytest.mark.parametrize("argv", ARGVS, ids=[" ".join(a) or "(none)" for a in ARGVS])
def test_parse_fast_equals_argparse_or_declines(argv: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    fast = symbolize.parse_fast(argv)
    parser = cli.build_parser(["symbolize", *argv])
    try:
        ns: argparse.Namespace | None = parser.parse_args(["symbolize", *argv])
    except SystemExit:
        ns = None
    capsys.readouterr()
    if fast is None:
        return  # argparse decides (help, errors and the rare forms)
    assert ns is not None, argv
    want = {k: v for k, v in vars(ns).items() if k not in ("_run", "command")}
    want.setdefault("traceback", False)
    got = {"traceback": False, **fast}
    assert got == want, argv


def test_parse_fast_covers_the_plain_forms() -> None:
    assert symbolize.parse_fast(["--elf", "k", "--format", "addr2line"]) is not None
    assert symbolize.parse_fast(["--elf", "k", "0x1", "0x2"]) is not None
    assert symbolize.parse_fast(["--elf=k", "--no-inline", "--json"]) is not None


# -- start-up ---------------------------------------------------------------------------------
SLIM = ["argparse", "dataclasses", "typing", "pickle", "logging", "pathlib", "hashlib",
        "tempfile", "inspect", "kdiag.symbols.dwarf", "kdiag.symbols.stabs", "json", "shutil"]


def test_warm_symbolize_process_stays_slim(kernel: Path, private_cache: Path) -> None:
    Symbolizer().add_elf(kernel)  # warm the cache
    env = dict(os.environ, KDIAG_CACHE_DIR=str(private_cache))
    code = ("import sys; base = set(sys.modules); from kdiag.cli import main; "
            "rc = main(sys.argv[1:]); sys.stdout.flush(); "
            "print('LOADED', sorted(set(sys.modules) - base), file=sys.stderr); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, "symbolize", "--elf", str(kernel)],
                       input="0\n", capture_output=True, text=True, env=env, cwd=ROOT,
                       check=True)
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("LOADED ")]
    loaded = eval(line[len("LOADED "):])  # noqa: S307 - our own repr of a list of names
    assert "kdiag.symbols.symbolizer" in loaded
    assert [m for m in SLIM if m in loaded] == []
