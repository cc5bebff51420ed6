"""``kdiag walk|pt|p2v`` on QEMU-format cores built from hand-made tables; the renderers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _paging_build import PS, RW, US, XD, Builder, G, P
from corewriter import EM_386, EM_X86_64, write_qemu_core

from kdiag.cli import main
from kdiag.paging.config import config_from_state
from kdiag.paging.dump import dump
from kdiag.paging.walker import walk
from kdiag.render import paging as R
from kdiag.x86.pte import PagingMode

K = 0xFFFFFFFF80000000


def core_of(b: Builder, path: Path, ram: int = 64 << 20) -> Path:
    """A core whose RAM is [0, ram): every page the builder wrote, zeros elsewhere."""
    blob = bytearray(ram)
    for page, data in b.target._pages.items():
        if page * 4096 < ram:
            blob[page * 4096:page * 4096 + 4096] = data
    machine = EM_386 if b.mode in (PagingMode.BITS32, PagingMode.PAE) else EM_X86_64
    return write_qemu_core(path, [b.state()], [(0, bytes(blob))], machine=machine)


@pytest.fixture
def core64(tmp_path: Path) -> Path:
    b = Builder(PagingMode.LEVEL4)
    sup = P | RW
    b.map_range(K, 0x200000, 0x3000, flags=P | G, upper=sup)
    b.map_range(K + 0x3000, 0x203000, 0x2000, flags=P | RW | XD, upper=sup)
    b.map(K + 0x5000, 0x205000, flags=P | RW, upper=sup)  # W+X
    b.map(K + 0x8000, 0x80000000, flags=P | RW | XD, upper=sup)  # WB, past the core's RAM
    b.map(0xFFFF800000000000, 0, 1 << 30, flags=P | RW | XD, upper=sup)
    b.map(0x400000000000, 0x300000, flags=P | US)
    b.set_entry(b.top, 510, b.top | P | RW)
    return core_of(b, tmp_path / "core64.elf")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_walk_text(core64: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["walk", "--core", str(core64), hex(K + 0x1234)], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("linear 0xffffffff80001234 (4-level paging, EFER.NXE=1")
    assert lines[1].startswith("  PML4 @0x100000 [511] = 0x0000000000101003  xd ps")
    assert "-> PDPT 0x101000" in lines[1]
    assert lines[4].endswith("xd    g pat d a pcd pwt S R P  -> 4K page 0x201000") or \
        "G pat d a pcd pwt S R P  -> 4K page 0x201000" in lines[4]
    assert "effective: r-x supervisor" in out
    assert "memory type: WB (PAT entry 0" in out and "POWER-ON DEFAULT" in out
    assert "physical: 0x201234 (4K page at 0x201000)" in out


def test_walk_stops_exit_1_and_json(core64: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["walk", "--core", str(core64), "0x1000"], capsys)
    assert rc == 1 and "STOP (not-present): PML4[0]" in out
    rc, out, _ = run(["walk", "--core", str(core64), "--json", hex(K), "0x1000"], capsys)
    docs = json.loads(out)
    assert [d["ok"] for d in docs] == [True, False]
    assert docs[0]["pa"] == "0x200000" and docs[0]["memtype"] == "WB"
    assert docs[0]["steps"][3]["flags"]["G"] is True and docs[0]["access"]["executable"]
    assert docs[1]["stop"] == "not-present" and docs[0]["pat"]["source"] == "power-on default"


def test_pt_text_and_json(core64: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["pt", "--core", str(core64)], capsys)
    assert rc == 0
    assert "0xffffffff80000000-0xffffffff80003000    12 KiB  0x0000000000200000  Sr-x  WB   " \
           "3 x 4K" in out
    assert "0xffff800000000000-0xffff800040000000     1 GiB  0x0000000000000000  Srw-  WB   " \
           "1 x 1G" in out
    assert "recursive-self-map: PML4[510]" in out
    rc, out, _ = run(["pt", "--core", str(core64), "--json"], capsys)
    doc = json.loads(out)
    assert doc["mode"] == "4-level" and doc["truncated"] is None
    assert doc["mappings"][0] == {"va": "0x400000000000", "end": "0x400000001000",
                                  "size": "0x1000", "pa": "0x300000", "writable": False,
                                  "user": True, "executable": True, "memtype": "WB",
                                  "page_sizes": ["0x1000"], "pages": 1}
    assert doc["issues"][0]["kind"] == "recursive-self-map"


@pytest.mark.parametrize("opts, first", [(["--wx"], "0xffffffff80005000"),
                                         (["--user"], "0x0000400000000000"),
                                         (["-x", "-s"], "0xffffffff80000000"),
                                         (["--range", "0xffffffff80003000+0x1000"],
                                          "0xffffffff80003000"),
                                         (["--contains", "0xffffffff80004abc"],
                                          "0xffffffff80003000"),
                                         (["--type", "wb", "--nx", "-w"], "0xffff800000000000")])
def test_pt_filters(core64: Path, capsys: pytest.CaptureFixture[str], opts: list[str],
                    first: str) -> None:
    rc, out, _ = run(["pt", "--core", str(core64), *opts], capsys)
    assert rc == 0
    rows = [ln for ln in out.splitlines() if ln.startswith("0x")]
    assert rows and rows[0].startswith(first)
    assert "filters:" in out


def test_pt_check(core64: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["pt", "--core", str(core64), "--check"], capsys)
    assert rc == 1
    assert "warning [w+x]: 1 writable and executable range(s)" in out
    assert "0xffffffff80005000-0xffffffff80006000 -> 0x205000 (rwx)" in out
    assert "info [recursive-self-map]" in out
    assert "page-beyond-ram" in out  # RAM = the core's PT_LOADs: 64 MiB
    assert "0xffffffff80008000-0xffffffff80009000 -> 0x80000000 (WB)" in out
    rc, out, _ = run(["pt", "--core", str(core64), "--check", "--json",
                      "--ram-size", "4G"], capsys)
    kinds = {a["kind"] for a in json.loads(out)["anomalies"]}
    assert "w+x" in kinds and "page-beyond-ram" not in kinds


def test_p2v(core64: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["p2v", "--core", str(core64), "0x203010"], capsys)
    assert rc == 0
    assert "0xffff800000203010  (1G page at 0xffff800000000000)  Srw-  WB" in out
    assert "0xffffffff80003010  (4K page at 0xffffffff80003000)  Srw-  WB" in out
    rc, out, _ = run(["p2v", "--core", str(core64), "--json", "0x50000000"], capsys)
    assert rc == 1 and json.loads(out)["hits"] == []


@pytest.mark.parametrize("argv, msg", [
    (["pt", "--mode", "bogus"], "unknown paging mode"),
    (["pt", "--type", "XYZ"], "unknown memory type"),
])
def test_usage_errors(core64: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                      msg: str) -> None:
    rc, _, err = run([argv[0], "--core", str(core64), *argv[1:]], capsys)
    assert rc == 2 and err.startswith("kdiag: error:") and msg in err


def test_bad_range_is_an_argparse_error(core64: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["pt", "--core", str(core64), "--range", "5-1"], capsys)
    assert rc == 2 and "empty VA range" in err


def test_32bit_core_with_cr3_and_mode_override(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    b = Builder(PagingMode.BITS32, pse=True)
    b.map(0xF0000000, 0, 4 << 20, flags=P | RW)
    b.map(0xF0400000, 0x400000, flags=P | RW | US)
    core = core_of(b, tmp_path / "core32.elf")
    rc, out, _ = run(["pt", "--core", str(core)], capsys)
    assert rc == 0 and "32-bit paging, CR4.PSE=1" in out
    assert "0xf0000000-0xf0400000     4 MiB  0x0000000000  Srwx  WB   1 x 4M" in out
    rc, out, _ = run(["walk", "--core", str(core), "--mode", "32-nopse", "0xf0001000"], capsys)
    # without PSE the 4 MiB PDE is read as a PT pointer (to physical 0, all zeros)
    assert rc == 1 and "-> PT 0x0" in out and "overridden" in out and "PT[1]" in out


def test_render_sizes_and_flags() -> None:
    assert [R.size_text(n) for n in (4096, 3 << 20, 1 << 30, 0x1800, 100)] == [
        "4 KiB", "3 MiB", "1 GiB", "6 KiB", "100 B"]
    assert R.size_text(4294967296 + 4096) == "4.00 GiB"
    b = Builder(PagingMode.LEVEL4)
    b.map(0x200000, 0x400000, 2 << 20, flags=P | RW | XD | (PS << 5) | G)
    w = walk(b.target, 0x200000, config_from_state(b.state()))
    assert R.entry_flags(w.steps[2].entry) == "XD PS G PAT d a pcd pwt S W P"
    assert R.entry_flags(w.steps[0].entry) == "xd ps           a pcd pwt U W P"
    d = dump(b.target, config_from_state(b.state()))
    assert R.dump_to_json(d)["stats"]["tables"] == 3  # type: ignore[index]
