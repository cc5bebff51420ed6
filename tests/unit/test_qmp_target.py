"""QmpTarget on a fake QMP session: recorded monitor output in, Target contract behaviour out.

The fake session answers ``info registers`` with a dump recorded from QEMU 7.2 (the tiny
triple-fault kernel), ``info mtree -f`` with a recorded flat view, and serves ``pmemsave`` /
``xp`` from a FakeTarget's memory, so caching, RAM checks and fallbacks are tested exactly.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kdiag.errors import MemoryReadError, MsrUnavailable, TargetError, TranslationError
from kdiag.target.fake import FakeTarget
from kdiag.x86.state import CpuMode, CpuState
from qmp_tools import target as T
from qmp_tools.session import QmpCommandError
from qmp_tools.target import (
    MemRange,
    QmpTarget,
    check_readable,
    parse_lapic_tpr,
    parse_mtree_flat,
    parse_xp_words,
)

# `info registers` from qemu-system-x86_64 7.2 after the tiny kernel's triple fault
REGS = """\

CPU#0
RAX=1122334455667788 RBX=0000000040000000 RCX=00000000c0000080 RDX=0000000000000000
RSI=0000000000000000 RDI=0000000000001000 RBP=0000000000000000 RSP=0000000000105000
R8 =0000000000000000 R9 =0000000000000000 R10=0000000000000000 R11=0000000000000000
R12=0000000000000000 R13=0000000000000000 R14=0000000000000000 R15=0000000000000000
RIP=00000000001000af RFL=00000086 [--S--P-] CPL=0 II=0 A20=1 SMM=0 HLT=0
ES =0010 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]
CS =0008 0000000000000000 ffffffff 00af9a00 DPL=0 CS64 [-R-]
SS =0010 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]
DS =0010 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]
FS =0010 0000000000345000 ffffffff 00cf9300 DPL=0 DS   [-WA]
GS =0010 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]
LDT=0000 0000000000000000 0000ffff 00008200 DPL=0 LDT
TR =0000 0000000000000000 0000ffff 00008b00 DPL=0 TSS64-busy
GDT=     00000000001000b8 00000017
IDT=     0000000000000000 00000000
CR0=80000011 CR2=0000000040000000 CR3=0000000000101000 CR4=00000020
DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000
DR6=00000000ffff0ff0 DR7=0000000000000400
EFER=0000000000000500
FCW=037f FSW=0000 [ST=0] FTW=00 MXCSR=00001f80
FPR0=0000000000000000 0000 FPR1=0000000000000000 0000
XMM00=0000000000000000 0000000000000000 XMM01=0000000000000000 0000000000000000
"""

# `info mtree -f` (pc machine, -m 512), trimmed to the first flat view and one of the second
MTREE = """\
FlatView #0
 AS "memory", root: system
 AS "cpu-memory-0", root: system
 Root memory region: system
  0000000000000000-000000000009ffff (prio 0, ram): pc.ram
  00000000000a0000-00000000000bffff (prio 1, i/o): vga-lowmem
  00000000000c0000-00000000000cafff (prio 0, rom): pc.ram @00000000000c0000
  00000000000cb000-00000000000cdfff (prio 0, ram): pc.ram @00000000000cb000
  00000000000ce000-00000000000e7fff (prio 0, rom): pc.ram @00000000000ce000
  00000000000e8000-00000000000effff (prio 0, ram): pc.ram @00000000000e8000
  00000000000f0000-00000000000fffff (prio 0, rom): pc.ram @00000000000f0000
  0000000000100000-000000001fffffff (prio 0, ram): pc.ram @0000000000100000
  00000000fd000000-00000000fdffffff (prio 1, ram): vga.vram
  00000000fee00000-00000000feefffff (prio 4096, i/o): apic-msi
  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios

FlatView #1
 AS "I/O", root: io
 Root memory region: io
  0000000000000000-0000000000000007 (prio 0, i/o): dma-chan
"""

RAM_END = 0x20000000
PML4, PDPT, PD = 0x101000, 0x102000, 0x103000
HI_PDPT, HI_PD, HI_PT = 0x104000, 0x105000, 0x106000
HI_VA = 0xFFFF800000000000
# HI_VA page i -> these frames (pages 0/1 contiguous, page 2 elsewhere, page 3 unmapped)
HI_FRAMES = [0x200000, 0x201000, 0x300000]


def build_memory() -> FakeTarget:
    """Identity map of 1 GiB with 2 MiB pages (the tiny kernel's) plus 4 KiB pages up high."""
    mem = FakeTarget(state=_dummy_state(), ram_size=RAM_END)
    mem.write_u64(PML4, PDPT | 3)
    mem.write_u64(PDPT, PD | 3)
    for i in range(512):
        mem.write_u64(PD + 8 * i, (i << 21) | 0x83)
    mem.write_u64(PML4 + 8 * 256, HI_PDPT | 3)
    mem.write_u64(HI_PDPT, HI_PD | 3)
    mem.write_u64(HI_PD, HI_PT | 3)
    for i, frame in enumerate(HI_FRAMES):
        mem.write_u64(HI_PT + 8 * i, frame | 3)
    for i, frame in enumerate(HI_FRAMES):
        mem.write_phys(frame, bytes([0x41 + i]) * 4096)
    mem.write_phys(0x100000, b"KDIAGMARK" + bytes(range(256)) * 15)  # below the PML4
    return mem


def _dummy_state() -> CpuState:
    return CpuState(gpr={}, cr0=0, cr2=0, cr3=0, cr4=0, efer=0)


class FakeSession:
    """Just the QmpSession surface QmpTarget uses."""

    def __init__(self, mem: FakeTarget, running: bool = False, write_files: bool = True,
                 address: str = "/fake/qmp.sock") -> None:
        self.mem = mem
        self.running = running
        self.write_files = write_files
        self.address = address
        self.where = address
        self.alive = True
        self.qemu_version = "7.2.22"
        self.run_state_epoch = 0
        self.calls: list[str] = []
        self.pmemsave_dirs: list[Path] = []

    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                timeout: float | None = None) -> Any:
        self.calls.append(command)
        args = arguments or {}
        if command == "query-status":
            return {"status": "running" if self.running else "paused", "running": self.running}
        if command == "pmemsave":
            path = Path(args["filename"])
            self.pmemsave_dirs.append(path.parent)
            if args["val"] < 0:
                raise QmpCommandError("QEMU refused pmemsave: bad", "pmemsave", "GenericError",
                                      "bad")
            data = self.mem.read_phys(args["val"], args["size"]) if args["val"] + args[
                "size"] <= RAM_END else bytes(args["size"])
            if self.write_files:
                path.write_bytes(data)
            return {}
        if command == "human-monitor-command":
            return self.hmp(args["command-line"], cpu_index=args.get("cpu-index"))
        raise AssertionError(f"unexpected command {command}")

    def execute_many(self, calls: list[tuple[str, dict[str, Any] | None]],
                     timeout: float | None = None) -> list[Any]:
        self.calls.append("batch")
        out: list[Any] = []
        for command, args in calls:
            try:
                out.append(self.execute(command, args))
            except QmpCommandError as err:
                out.append(err)
        return out

    def hmp(self, line: str, timeout: float | None = None, cpu_index: int | None = None) -> str:
        self.calls.append(f"hmp {line}")
        if line == "info registers":
            if cpu_index not in (None, 0):
                raise QmpCommandError("no cpu", "human-monitor-command", "GenericError",
                                      "CPU index out of range")
            return REGS
        if line == "info mtree -f":
            return MTREE
        if line == "info lapic":
            return LAPIC
        m = re.match(r"xp /(\d+)gx (0x[0-9a-f]+)$", line)
        if m:
            n, addr = int(m.group(1)), int(m.group(2), 16)
            data = self.mem.read_phys(addr, 8 * n)
            words = struct.unpack(f"<{n}Q", data)
            lines = []
            for i in range(0, n, 2):
                lines.append(f"{addr + 8 * i:016x}: " + " ".join(
                    f"0x{w:016x}" for w in words[i:i + 2]))
            return "\r\n".join(lines) + "\r\n"
        raise AssertionError(f"unexpected HMP {line}")

    def count(self, what: str) -> int:
        return sum(1 for c in self.calls if c == what)


# the tail of `info lapic` (QEMU 7.2) with a kernel that raised CR8 to 2
LAPIC = ("dumping local APIC state for CPU 0 \r\n\r\n"
         "LVT0\t 0x00010000 active-hi edge  masked                      Fixed  (vec 0)\r\n"
         "ISR\t (none)\r\nIRR\t (none)\r\n\r\n"
         "APR 0x00 TPR 0x20 DFR 0x0f LDR 0x00 PPR 0x20\r\n")


@pytest.fixture
def mem() -> FakeTarget:
    return build_memory()


@pytest.fixture
def session(mem: FakeTarget) -> FakeSession:
    return FakeSession(mem)


@pytest.fixture
def target(session: FakeSession) -> Iterator[QmpTarget]:
    t = QmpTarget(session)  # type: ignore[arg-type]
    yield t
    t.close()


# ------------------------------------------------------------------------------------------
# pure parsers

def test_mtree_flat_view_of_memory() -> None:
    ranges = parse_mtree_flat(MTREE)
    assert ranges[0] == MemRange(0, 0x9FFFF, "ram", "pc.ram")
    assert [r.kind for r in ranges].count("i/o") == 2
    assert ranges[-1].name == "pc.bios" and ranges[-1].readable
    assert all(a.start < b.start for a, b in zip(ranges, ranges[1:], strict=False))


def _mtree_reference(text: str, address_space: str = "memory") -> list[MemRange]:
    """The straightforward parser (every view parsed), to compare the fast one against."""
    import re

    views: list[tuple[set[str], list[MemRange]]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith("FlatView"):
            views.append((set(), []))
            continue
        if not views:
            continue
        m = re.match(r'^\s*AS "([^"]+)"', line)
        if m:
            views[-1][0].add(m.group(1))
            continue
        m = re.match(r"^\s*([0-9a-fA-F]+)-([0-9a-fA-F]+)\s+\(prio\s+-?\d+,\s*([^)]+)\):\s*(.*?)\s*$",
                     line)
        if m:
            views[-1][1].append(MemRange(int(m.group(1), 16), int(m.group(2), 16),
                                         m.group(3).strip(), m.group(4)))
    for names, ranges in views:
        if address_space in names:
            return sorted(ranges, key=lambda r: r.start)
    raise AssertionError("no view")


def test_mtree_parser_skips_other_views_but_finds_the_same_ranges() -> None:
    """QEMU prints one flat view per PCI device before or after the system one; the parser
    reads only the wanted view's ranges, with the same result as parsing everything."""
    device = ("FlatView #2\n AS \"e1000\", root: bus master container\n"
              " Root memory region: (none)\n"
              "  0000000000000000-ffffffffffffffff (prio 0, i/o): dummy\n\n")
    for text in (MTREE, device + MTREE.replace("FlatView #0", "FlatView #9"),
                 MTREE + device, MTREE.replace("\n", "\r\n")):
        for space in ("memory", "I/O", "cpu-memory-0"):
            assert parse_mtree_flat(text, space) == _mtree_reference(text, space)
    assert parse_mtree_flat(device + MTREE, "e1000") == [MemRange(0, 2**64 - 1, "i/o", "dummy")]
    got = parse_mtree_flat(MTREE)
    got.clear()  # callers get their own list (the parse is memoized per text)
    assert parse_mtree_flat(MTREE) == _mtree_reference(MTREE)


def test_mtree_without_memory_view_is_an_input_error() -> None:
    from kdiag.errors import InputError

    with pytest.raises(InputError):
        parse_mtree_flat("FlatView #0\n AS \"I/O\", root: io\n")


@pytest.mark.parametrize("pa, size", [(0, 16), (0x9FFF0, 16), (0x100000, 0x1000),
                                      (0x1FFFFFF0, 16), (0xFFFFFFF0, 16), (0xC0000, 0x30000)])
def test_check_readable_accepts_ram_and_rom(pa: int, size: int) -> None:
    check_readable(parse_mtree_flat(MTREE), pa, size)


@pytest.mark.parametrize("pa, size, words", [
    (0x9FFF0, 0x20, "device region 'vga-lowmem'"),
    (0x1FFFFFF8, 16, "nothing is mapped at 0x20000000"),
    (0xFEE00000, 4, "apic-msi"),
    (0x100000000, 8, "outside guest RAM"),
])
def test_check_readable_refuses_holes_and_devices(pa: int, size: int, words: str) -> None:
    with pytest.raises(MemoryReadError, match=re.escape(words)) as info:
        check_readable(parse_mtree_flat(MTREE), pa, size)
    assert info.value.addr == pa and info.value.size == size


def test_parse_xp_words() -> None:
    text = ("0000000000100000: 0x000100001badb002 0x00100000e4514ffe\r\n"
            "0000000000100010: 0x001000ea00100000\r\n")
    data = parse_xp_words(text, 0x100000)
    assert data[:4] == struct.pack("<I", 0x1BADB002) and len(data) == 24
    with pytest.raises(MemoryReadError, match="Cannot access|cannot access"):
        parse_xp_words("0000000020000000: Cannot access memory\r\n", 0x20000000)
    with pytest.raises(MemoryReadError, match="skips"):
        parse_xp_words("0000000000100010: 0x0000000000000001\r\n", 0x100000)


# ------------------------------------------------------------------------------------------
# registers and MSRs

def test_state_from_info_registers(target: QmpTarget) -> None:
    st = target.state()
    assert st.rip == 0x1000AF and st.cr2 == 0x40000000 and st.cr3 == PML4
    assert st.mode is CpuMode.LONG and st.efer == 0x500
    assert st.gdtr is not None and (st.gdtr.base, st.gdtr.limit) == (0x1000B8, 0x17)
    assert st.idtr is not None and st.idtr.limit == 0
    assert st.tr is not None and st.tr.flags == 0x8B00
    assert st.segments["cs"].long and st.cpl == 0


def test_cr8_is_the_local_apic_tpr_in_long_mode(target: QmpTarget,
                                                session: FakeSession) -> None:
    assert parse_lapic_tpr(LAPIC) == 0x20 and parse_lapic_tpr("no apic") is None
    assert target.state().cr8 == 2  # CR8 = TPR[7:4] (SDM Vol. 3A 10.8.6.1)
    assert session.count("hmp info lapic") == 1


def test_a_cold_state_is_one_batch_a_warm_one_a_status_check(target: QmpTarget,
                                                             session: FakeSession) -> None:
    target.state()
    assert session.calls == ["batch", "query-status", "human-monitor-command",
                             "hmp info registers", "human-monitor-command", "hmp info lapic",
                             "human-monitor-command", "hmp info mtree -f"]
    session.calls.clear()
    target.state()
    assert session.calls == ["query-status"]
    plain = QmpTarget(session)  # type: ignore[arg-type]
    plain.with_cr8 = False  # a caller that never shows CR8 saves QEMU the `info lapic`
    session.calls.clear()
    assert plain.state().cr8 is None and "hmp info lapic" not in session.calls


def test_the_memory_map_rides_in_the_first_state_batch(target: QmpTarget,
                                                       session: FakeSession) -> None:
    """`info mtree -f` comes with the first cold state(): the reads that follow (and later
    cold states of the same target) cost no extra round trip for it."""
    target.state()
    session.calls.clear()
    assert target.memory_map() == parse_mtree_flat(MTREE)
    target.read_phys(0x100000, 8)
    assert "hmp info mtree -f" not in session.calls
    session.run_state_epoch += 2  # the guest ran: a new cold batch, without the map again
    session.calls.clear()
    target.state()
    assert "hmp info mtree -f" not in session.calls and "batch" in session.calls
    plain = QmpTarget(session)  # type: ignore[arg-type]
    plain.with_memory_map = False
    session.calls.clear()
    plain.state()
    assert "hmp info mtree -f" not in session.calls
    plain.memory_map()
    assert session.calls[-1] == "hmp info mtree -f"


def test_state_is_cached_while_stopped_and_refetched_after_run_state_events(
        target: QmpTarget, session: FakeSession) -> None:
    target.state()
    target.state()
    assert session.count("hmp info registers") == 1
    assert session.count("query-status") == 2  # every state() re-checks the run state
    session.run_state_epoch += 2  # e.g. RESUME + STOP arrived
    target.state()
    assert session.count("hmp info registers") == 2


def test_state_is_not_cached_while_running(target: QmpTarget, session: FakeSession) -> None:
    session.running = True
    target.state()
    target.state()
    assert session.count("hmp info registers") == 2


def test_other_cpu_is_asked_with_cpu_index(session: FakeSession) -> None:
    t = QmpTarget(session, cpu_index=3)  # type: ignore[arg-type]
    with pytest.raises(TargetError, match="no CPU #3"):
        t.state()


def test_msrs_from_the_dump_and_a_reason_for_the_rest(target: QmpTarget,
                                                       session: FakeSession) -> None:
    assert target.read_msr(0xC0000080) == 0x500
    assert target.read_msr(0xC0000100) == 0x345000  # FS.base
    assert target.read_msr(0xC0000101) == 0
    session.calls.clear()
    with pytest.raises(MsrUnavailable, match="no MSR read") as info:
        target.read_msr(0x277)
    assert info.value.msr == 0x277 and "kdiag pat --value" in str(info.value)
    with pytest.raises(MsrUnavailable) as info:
        target.read_msr(0x1B)  # IA32_APIC_BASE
    assert "--value" not in str(info.value)
    assert session.calls == []  # refused without a round trip


# ------------------------------------------------------------------------------------------
# physical memory

def test_read_phys_matches_memory_and_caches_pages(target: QmpTarget, session: FakeSession,
                                                   mem: FakeTarget) -> None:
    assert target.read_phys(0x100000, 9) == b"KDIAGMARK"
    assert target.read_phys(0x100FF0, 0x20) == mem.read_phys(0x100FF0, 0x20)  # spans pages
    pmems = session.count("pmemsave")
    assert target.read_phys(0x100004, 100) == mem.read_phys(0x100004, 100)
    assert session.count("pmemsave") == pmems  # served from the page cache
    assert target.stats["cache_hits"] >= 1


def test_large_reads_bypass_the_cache(target: QmpTarget, session: FakeSession,
                                      mem: FakeTarget) -> None:
    data = target.read_phys(0x200000, 1 << 20)
    assert data == mem.read_phys(0x200000, 1 << 20)
    assert session.count("pmemsave") == 1 and not target._pages


def test_running_guest_reads_are_never_cached(target: QmpTarget, session: FakeSession) -> None:
    session.running = True
    target.read_phys(0x100000, 8)
    target.read_phys(0x100000, 8)
    assert session.count("pmemsave") == 2


def test_read_phys_refuses_what_is_not_ram(target: QmpTarget, session: FakeSession) -> None:
    with pytest.raises(MemoryReadError, match="apic-msi"):
        target.read_phys(0xFEE00000, 4)
    with pytest.raises(MemoryReadError, match="outside guest RAM"):
        target.read_phys(RAM_END - 8, 16)
    assert session.count("pmemsave") == 0  # refused before asking QEMU
    assert target.read_phys(0x1000, 0) == b""


def test_pmemsave_error_is_a_memory_read_error(target: QmpTarget, session: FakeSession) -> None:
    def refuse(*a: Any, **k: Any) -> Any:
        raise QmpCommandError("QEMU refused pmemsave: x", "pmemsave", "GenericError", "x")

    target._fetch_pmemsave(0x100000, 8)  # warm the private dir
    session.execute = refuse  # type: ignore[method-assign]
    with pytest.raises(MemoryReadError, match="failed"):
        target._fetch_pmemsave(0x100000, 8)


def test_falls_back_to_xp_when_qemu_cannot_write_our_files(mem: FakeTarget) -> None:
    session = FakeSession(mem, write_files=False)
    t = QmpTarget(session)  # type: ignore[arg-type]
    assert t.read_phys(0x100003, 21) == mem.read_phys(0x100003, 21)
    assert t.read_phys(0x100FFD, 6000) == mem.read_phys(0x100FFD, 6000)
    assert session.count("pmemsave") == 1  # tried once, then xp only
    assert t.stats["xp"] >= 3


def test_pmemsave_files_live_in_a_private_dir_removed_on_close(
        target: QmpTarget, session: FakeSession) -> None:
    target.read_phys(0x100000, 8)
    d = session.pmemsave_dirs[0]
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert list(d.iterdir()) == []  # each file is deleted after reading
    target.close()
    assert not d.exists()


# ------------------------------------------------------------------------------------------
# virtual memory

def test_read_virt_identity_and_high_mapping(target: QmpTarget, mem: FakeTarget) -> None:
    assert target.read_virt(0x100000, 9) == b"KDIAGMARK"
    data = target.read_virt(HI_VA + 0xFF0, 0x1020)
    assert data == b"A" * 0x10 + b"B" * 0x1000 + b"C" * 0x10


def test_read_virt_merges_contiguous_frames(target: QmpTarget, session: FakeSession) -> None:
    target.read_virt(HI_VA, 3 * 4096)  # pages 0+1 contiguous, page 2 elsewhere
    assert target.stats["pmemsave"] <= 6  # 4 table pages at most, then 2 data runs


def test_read_virt_unmapped_is_a_translation_error(target: QmpTarget) -> None:
    with pytest.raises(TranslationError) as info:
        target.read_virt(HI_VA + 3 * 4096, 8)
    assert info.value.va == HI_VA + 3 * 4096
    with pytest.raises(TranslationError):
        target.read_virt(0x40000000, 8)  # CR2 of the recorded fault


# ------------------------------------------------------------------------------------------
# sharing one connection

def test_connect_inside_shared_returns_the_shared_target(target: QmpTarget) -> None:
    with T.shared(target):
        assert QmpTarget.connect("/fake/qmp.sock") is target
        assert QmpTarget.connect("unix:/fake/qmp.sock") is target
    assert "/fake/qmp.sock" not in T._shared
