"""Every paging mode on a real CPU model: kdiag against QEMU's ``info mem`` and ``info tlb``.

Five small multiboot kernels (tests/integration/data/ptkern.asm: 32-bit with and without PSE,
PAE, 4-level, 5-level) build known tables and idle; one VM per variant, read over QMP.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdiag.paging.checks import AnomalyKind, CheckOptions, check
from kdiag.paging.config import resolve_config
from kdiag.paging.dump import IssueKind, dump, reverse_lookup
from kdiag.paging.tables import TableCache
from kdiag.paging.translate import translate
from kdiag.paging.walker import walk
from kdiag.x86.pat import MemoryType
from kdiag.x86.pte import PagingMode
from qmp_tools import launcher as L
from tests.integration._qemu_ref import (
    VARIANTS,
    build_ptkern,
    dump_as_info_mem,
    dump_pages,
    parse_info_mem,
    parse_info_tlb,
    skipped_slots,
    subtract,
    tlb_flags,
)

pytestmark = pytest.mark.skipif(shutil.which("nasm") is None, reason="nasm not installed")

WC_PAT = 0x0007050100070406  # what the IA-32e variants write to IA32_PAT
MODES = {"32": PagingMode.BITS32, "32PSE": PagingMode.BITS32, "PAE": PagingMode.PAE,
         "L4": PagingMode.LEVEL4, "L5": PagingMode.LEVEL5}


class Machine:
    def __init__(self, variant: str, vm: L.QemuInstance) -> None:
        from qmp_tools.target import QmpTarget

        self.variant = variant
        self.vm = vm
        self.target = QmpTarget.connect(str(vm.qmp_path))
        pat = WC_PAT if variant in ("L4", "L5") else None
        self.cfg = resolve_config(self.target, pat=pat)
        self.dump = dump(self.target, self.cfg, collect_segments=True)
        # QEMU 7.2's mem_info_la57 is broken (it walks non-present entries: ~35 s, no output)
        self.info_mem = vm.hmp("info mem") if variant != "L5" else ""
        self.info_tlb = vm.hmp("info tlb")


@pytest.fixture(scope="module", params=VARIANTS)
def machine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Machine]:
    variant = request.param
    elf = build_ptkern(variant, tmp_path_factory.mktemp(f"ptkern-{variant}"))
    cfg = L.QemuConfig(kernel="i386", elf=Path(elf), scenario=variant, gdb_port=None,
                       build=False, log_items="")
    vm = L.QemuInstance.start(cfg)
    try:
        vm.wait_serial("ptkern ready", timeout=60, halt_check=False)
        m = Machine(variant, vm)
        try:
            yield m
        finally:
            m.target.close()
    finally:
        vm.stop()


def test_mode_comes_from_the_live_registers(machine: Machine) -> None:
    assert machine.cfg.mode is MODES[machine.variant]
    assert machine.cfg.params.pse == (machine.variant == "32PSE")
    assert machine.dump.truncated is None


def test_dump_agrees_with_info_mem(machine: Machine) -> None:
    if machine.variant == "L5":
        pytest.skip("QEMU 7.2 `info mem` is broken under LA57 (checked against info tlb)")
    holes = skipped_slots(machine.dump)
    ours = subtract(dump_as_info_mem(machine.dump), holes)
    qemu = subtract(parse_info_mem(machine.info_mem), holes)
    assert qemu, machine.info_mem
    assert ours == qemu


def test_pages_agree_with_info_tlb(machine: Machine) -> None:
    holes = skipped_slots(machine.dump)
    qemu = {va: v for va, v in parse_info_tlb(machine.info_tlb).items()
            if not any(lo <= va < hi for lo, hi in holes)}
    ours = dump_pages(machine.dump)
    assert set(ours) == set(qemu)
    for va, (pa, _size) in ours.items():
        assert qemu[va][0] == pa, hex(va)


def test_walks_agree_with_info_tlb_flags(machine: Machine) -> None:
    qemu = parse_info_tlb(machine.info_tlb)
    vas = sorted(qemu)
    sample = vas[:: max(1, len(vas) // 300)] + vas[-5:]
    cache = TableCache(machine.target)  # one stop: entries read once, as in `kd walk`
    for k, va in enumerate(sample):
        w = walk(machine.target, va, machine.cfg, cache=cache)
        assert w.ok, (hex(va), w.detail)
        leaf = w.steps[-1].entry
        assert w.pa == qemu[va][0], hex(va)
        assert tlb_flags(leaf.raw, not leaf.level.last) == qemu[va][1], hex(va)
        if k % 10 == 0:  # translate() reads one entry per level on its own (slower)
            assert translate(machine.target, va + 0x123) == w.pa + 0x123


def _walk(machine: Machine, va: int):
    return walk(machine.target, va, machine.cfg)


def test_effective_rights_and_types(machine: Machine) -> None:
    v = machine.variant
    if v in ("32", "32PSE"):
        w = _walk(machine, 0xC0800000)  # supervisor read-only PDE over U/W PTEs
        assert w.access is not None and not w.access.user and not w.access.writable
        assert _walk(machine, 0xC0030000).memtype is MemoryType.UC  # PCD+PWT, default PAT
        assert _walk(machine, 0xC0038000).memtype is MemoryType.WB  # PAT=1 -> PA4 = WB
        w = _walk(machine, 0xC0401000)
        if v == "32":  # PS ignored without CR4.PSE: a PT pointer
            assert w.page_size == 4096 and w.pa == 0x601000
        else:
            assert _walk(machine, 0xC4400000).page_size == 4 << 20
            assert _walk(machine, 0xC4400000).memtype is MemoryType.WT
    elif v == "PAE":
        assert _walk(machine, 0xC0000000).access.executable is False  # type: ignore[union-attr]
        assert _walk(machine, 0xC0008000).access.executable is True  # type: ignore[union-attr]
        w = _walk(machine, 0xC0600000)  # XD on the PDE: nothing below executes
        assert w.ok and w.access is not None and not w.access.executable and w.access.user
        big = _walk(machine, 0xC0400000 + 0x1234)
        assert big.page_size == 2 << 20 and big.pa == 0x800000 + 0x1234
        assert big.memtype is MemoryType.WB  # default PAT: PA4 = WB
    else:
        base = 0xFFFFFFFF80000000
        assert _walk(machine, base).access.rwx == "r-x"  # type: ignore[union-attr]
        assert _walk(machine, base + 0x10000).access.rwx == "r--"  # type: ignore[union-attr]
        assert _walk(machine, base + 0x18000).access.rwx == "rw-"  # type: ignore[union-attr]
        wc = _walk(machine, base + 0x200000)
        assert wc.memtype is MemoryType.WC and wc.page_size == 2 << 20
        phys = _walk(machine, 0xFFFF800040000000)
        assert phys.page_size == 1 << 30 and phys.pa == 0x40000000
        assert phys.access is not None and not phys.access.executable
        if v == "L4":
            rec = _walk(machine, 0xFFFFFF7FBFDFE000)  # PML4[510] four times: the PML4 itself
            assert rec.ok and rec.pa == 0x201000
            assert any(s.note and "recursive" in s.note for s in rec.steps)


def test_recursive_self_map_is_reported_not_followed(machine: Machine) -> None:
    kinds = {i.kind for i in machine.dump.issues}
    if machine.variant == "L4":
        assert kinds == {IssueKind.RECURSIVE}
        assert len(machine.dump.issues) == 1
        assert machine.dump.issues[0].va == 0xFFFFFF0000000000
    elif machine.variant == "PAE":
        assert kinds == {IssueKind.SOFT_RESERVED} or kinds == set()  # QEMU sets A only
    else:
        assert kinds == set()


def test_anomalies(machine: Machine) -> None:
    ram = ((0, 128 << 20),)
    found = {a.kind: a for a in check(machine.dump, CheckOptions(ram=ram))}
    v = machine.variant
    assert AnomalyKind.LOWER_HALF in found  # every variant keeps its identity map
    if v == "32PSE":
        assert AnomalyKind.MEMTYPE_CONFLICT in found  # 0x800000 as WB and WT
    if v in ("L4", "L5"):
        assert AnomalyKind.MEMTYPE_CONFLICT in found  # 0x4000000 WC and WB (identity)
        assert AnomalyKind.USER_KERNEL in found
        # L5: the shared PML4 also puts the user pages under PML5[511], in the kernel half
        assert 0x301000 in {r.pa for r in found[AnomalyKind.USER_KERNEL].regions}
        wx = [r.va for r in found[AnomalyKind.WX].regions]
        assert 0xFFFFFFFF80028000 in wx
        assert (AnomalyKind.RECURSIVE in found) == (v == "L4")
        assert AnomalyKind.PAGE_BEYOND_RAM in found  # the physmap's 1 GiB pages past 128 MiB
    if v == "PAE":
        assert found[AnomalyKind.USER_KERNEL].total >= 1


def test_reverse_lookup(machine: Machine) -> None:
    pa = 0x400000 if machine.variant != "L4" and machine.variant != "L5" else 0x4000000
    hits, _ = reverse_lookup(machine.target, machine.cfg, pa + 0x10)
    vas = {h.va for h in hits}
    if machine.variant in ("32", "32PSE"):
        assert vas == {0xC0000010, 0xC0065010}
    elif machine.variant == "PAE":
        assert vas == {0x400010, 0xC0000010}
    elif machine.variant == "L4":
        assert {0x4000010, 0xFFFF800004000010, 0xFFFFFFFF80200010} <= vas


def test_each_table_read_once_in_bulk(machine: Machine) -> None:
    st = machine.dump.stats
    assert st.tables >= 2
    assert st.reads <= st.tables  # coalesced: never more requests than tables
