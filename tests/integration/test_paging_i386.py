"""32-bit paging (CR4.PSE=1, no PAE) on the JOS-style i386 kernel: kdiag against QEMU's
``info mem`` / ``info tlb`` and against the kernel's own KDIAG line.

The kernel keeps JOS's ``entry_pgdir``: 0xF0000000-0xF0400000 through one page table of
4 KiB pages, the rest of the kernel half in 4 MiB pages; the boot identity map is dropped and
the user text and stack pages (inside the kernel image) get PTE_U. One VM, read over QMP.
(The PAE and non-PSE 32-bit modes run on the ptkern variants, test_paging_modes.py.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from kdiag.cli import main as kdiag_main
from kdiag.paging.checks import AnomalyKind, CheckOptions, check
from kdiag.paging.config import resolve_config
from kdiag.paging.dump import Dump, dump
from kdiag.paging.tables import TableCache
from kdiag.paging.walker import walk
from kdiag.x86.pat import MemoryType
from kdiag.x86.pte import PagingMode
from qmp_tools import launcher as L
from tests.integration._qemu_ref import (
    dump_as_info_mem,
    dump_pages,
    parse_info_mem,
    parse_info_tlb,
    tlb_flags,
)

KERNBASE = 0xF0000000


class Env:
    vm: L.QemuInstance
    kd: dict[str, str]
    dump: Dump
    info_mem: str
    info_tlb: str


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    from qmp_tools.target import QmpTarget

    L.build_kernel("i386")
    e = Env()
    e.vm = L.QemuInstance.start(L.QemuConfig(kernel="i386", scenario="healthy", gdb_port=None,
                                             build=False, log_items=""))
    try:
        e.vm.wait_serial(r"\[kernel\] ready", timeout=60, halt_check=False)
        e.kd = {}
        for line in e.vm.serial_lines():
            if line.startswith("KDIAG "):
                e.kd.update(p.split("=", 1) for p in line.split()[1:] if "=" in p)
        e.vm.qmp("stop")
        with QmpTarget.connect(str(e.vm.qmp_path)) as t:
            e.dump = dump(t, resolve_config(t), collect_segments=True)
        e.info_mem = e.vm.hmp("info mem")
        e.info_tlb = e.vm.hmp("info tlb")
        yield e
    finally:
        e.vm.stop()


def test_mode_and_cr3(env: Env) -> None:
    cfg = env.dump.config
    assert cfg.mode is PagingMode.BITS32 and cfg.params.pse
    assert cfg.cr3 == int(env.kd["cr3"], 16) == int(env.kd["entry_pgdir"], 16) - KERNBASE
    assert env.dump.truncated is None and env.dump.issues == ()


def test_dump_agrees_with_info_mem_and_info_tlb(env: Env) -> None:
    assert dump_as_info_mem(env.dump) == parse_info_mem(env.info_mem)
    qemu = parse_info_tlb(env.info_tlb)
    ours = dump_pages(env.dump)
    assert set(ours) == set(qemu) and len(qemu) > 60
    assert all(qemu[va][0] == pa for va, (pa, _) in ours.items())
    sizes = {size for _, size in ours.values()}
    assert sizes == {4096, 4 << 20}


def test_walks_agree_with_info_tlb_and_the_kernel(env: Env) -> None:
    from qmp_tools.target import QmpTarget

    qemu = parse_info_tlb(env.info_tlb)
    with QmpTarget.connect(str(env.vm.qmp_path)) as t:
        cfg = env.dump.config
        cache = TableCache(t)
        for va in sorted(qemu):
            w = walk(t, va, cfg, cache=cache)
            leaf = w.steps[-1].entry
            assert w.pa == qemu[va][0] and tlb_flags(leaf.raw, not leaf.level.last) == \
                qemu[va][1], hex(va)
        text = walk(t, KERNBASE + 0x100000, cfg, cache=cache)
        assert text.pa == 0x100000 and text.page_size == 4096
        assert text.memtype is MemoryType.WB and text.access.rwx == "rwx"  # type: ignore
        big = walk(t, KERNBASE + 0x456789, cfg, cache=cache)
        assert big.pa == 0x456789 and big.page_size == 4 << 20
        for key in ("utext", "ustack"):
            u = walk(t, int(env.kd[key], 16), cfg, cache=cache)
            assert u.access is not None and u.access.user and u.pa == int(env.kd[key], 16) - \
                KERNBASE


def test_check_finds_the_user_pages_inside_the_kernel_half(env: Env) -> None:
    found = {a.kind: a for a in check(env.dump, CheckOptions(ram=((0, 128 << 20),)))}
    user = found[AnomalyKind.USER_KERNEL]
    vas = {r.va for r in user.regions}
    assert {int(env.kd["utext"], 16), int(env.kd["ustack"], 16)} <= vas
    assert AnomalyKind.LOWER_HALF not in found  # entry_pgdir[0] was cleared
    assert found[AnomalyKind.WX].severity.value == "info"  # no XD in 32-bit paging


def test_cli_mode_and_cr3_overrides_on_the_live_machine(env: Env,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    sock = str(env.vm.qmp_path)
    va = f"{KERNBASE + 0x456789:#x}"
    assert kdiag_main(["walk", "--qmp", sock, "--json", va]) == 0
    live = json.loads(capsys.readouterr().out)
    assert live["pa"] == "0x456789" and live["page_size"] == 4 << 20
    rc = kdiag_main(["walk", "--qmp", sock, "--json", "--cr3", "0x" + env.kd["cr3"],
                     "--mode", "32-nopse", va])
    forced = json.loads(capsys.readouterr().out)
    assert forced["mode"] == "32-bit" and forced["steps"][0]["kind"] == "table"  # PS ignored
    assert forced["pa"] != live["pa"] and (rc == 0) == forced["ok"]
    assert kdiag_main(["pt", "--qmp", sock, "--json", "-u"]) == 0
    user = json.loads(capsys.readouterr().out)["mappings"]
    assert {m["va"] for m in user} >= {f"{int(env.kd['utext'], 16):#x}"}
