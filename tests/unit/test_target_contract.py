"""The Target contract, one suite for every backend; the FakeTarget is the reference.

Backends here: ``fake`` (reference, built by machine_builder) and ``core`` (a QEMU-format ELF
core written from the same machine by corewriter). Live backends run the same ``contract_*``
functions against a real ``dump-guest-memory`` core taken at the same stop: the gdb backend
inside gdb (tests/integration/gdb_contract.py, run by test_gdb_commands.py) and the QMP
backend in tests/integration/test_qmp_live.py.

The ``contract_*`` functions take (backend, reference, probes) so the integration tests reuse
them unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kdiag.errors import InputError, MemoryReadError, MsrUnavailable, TranslationError
from kdiag.machine.tables import read_gdt, read_idt, read_tss
from kdiag.target.base import Target
from kdiag.target.core import CoreTarget
from kdiag.x86.state import CpuState
from tests.unit.corewriter import EM_386, write_qemu_core
from tests.unit.machine_builder import GDT_BASE, HANDLER_BASE, PML4, RAM, TSS_BASE, Machine


@dataclass
class Probes:
    """Addresses to compare: physical reads (incl. page-crossing), virtual, unmapped."""

    phys: list[tuple[int, int]]
    virt: list[tuple[int, int]]
    unmapped_va: int
    beyond_ram_pa: int


FAKE_PROBES = Probes(
    phys=[(GDT_BASE, 0x40), (PML4, 4096), (0x2FF8, 16), (HANDLER_BASE, 3 * 4096 + 5),
          (RAM - 8, 8)],
    virt=[(GDT_BASE, 0x40), (TSS_BASE, 104), (HANDLER_BASE + 0xFFC, 8)],
    unmapped_va=0x0000700000000000,
    beyond_ram_pa=RAM + 0x1000,
)


# -- reusable contract checks --------------------------------------------------------------


def contract_is_a_target(backend: Target) -> None:
    assert isinstance(backend, Target)
    assert isinstance(backend.name, str) and backend.name


def contract_state(backend: Target, reference: Target, efer_mask: int = ~0) -> None:
    """Every CpuState field equal; ``efer_mask`` hides bits a backend only infers."""
    a, b = backend.state(), reference.state()
    for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10",
                 "r11", "r12", "r13", "r14", "r15", "rip", "rflags"):
        assert a.gpr[name] == b.gpr[name], name
    assert (a.cr0, a.cr2, a.cr3, a.cr4) == (b.cr0, b.cr2, b.cr3, b.cr4)
    assert a.efer & efer_mask == b.efer & efer_mask
    assert a.gdtr == b.gdtr and a.idtr == b.idtr
    assert a.tr == b.tr and a.ldtr == b.ldtr
    for seg in ("cs", "ss", "ds", "es", "fs", "gs"):
        assert a.segments[seg] == b.segments[seg], seg
    assert a.mode == b.mode and a.effective_cpl == b.effective_cpl


def contract_read_phys(backend: Target, reference: Target, probes: Probes) -> None:
    for pa, size in probes.phys:
        data = backend.read_phys(pa, size)
        assert len(data) == size
        assert data == reference.read_phys(pa, size), hex(pa)
    assert backend.read_phys(probes.phys[0][0], 0) == b""
    with pytest.raises(MemoryReadError):
        backend.read_phys(probes.beyond_ram_pa, 16)


def contract_read_virt(backend: Target, reference: Target, probes: Probes) -> None:
    for va, size in probes.virt:
        data = backend.read_virt(va, size)
        assert len(data) == size and data == reference.read_virt(va, size), hex(va)
    with pytest.raises((TranslationError, MemoryReadError)):
        backend.read_virt(probes.unmapped_va, 8)


def contract_msr_unavailable(backend: Target) -> None:
    with pytest.raises(MsrUnavailable) as info:
        backend.read_msr(0x12345678)
    assert info.value.msr == 0x12345678 and str(info.value)


def contract_tables(backend: Target, reference: Target) -> None:
    """The decoded GDT, IDT and TSS are identical through either backend."""
    assert read_gdt(backend) == read_gdt(reference)
    assert read_idt(backend) == read_idt(reference)
    assert read_tss(backend) == read_tss(reference)


# -- backends -------------------------------------------------------------------------------


def _core_from(fake: Target, tmp: Path, **kw: object) -> CoreTarget:
    chunks = [(0, fake.read_phys(0, RAM))]
    write_qemu_core(tmp / "core.elf", [fake.state()], chunks, **kw)  # type: ignore[arg-type]
    return CoreTarget.from_path(tmp / "core.elf")


_CORE_CACHE: dict[str, Path] = {}


def _shared_core(fake: Target, tmp: Path) -> CoreTarget:
    """The healthy machine's core, written once per session (64 MiB)."""
    if "healthy" not in _CORE_CACHE:
        _core_from(fake, tmp).close()
        _CORE_CACHE["healthy"] = tmp / "core.elf"
    return CoreTarget.from_path(_CORE_CACHE["healthy"])


BACKENDS: dict[str, Callable[[Target, Path], Target]] = {
    "fake": lambda fake, tmp: fake,
    "core": _shared_core,
}


# EFER bits a backend cannot know and only infers (a core does not save EFER: SCE is lost).
EFER_MASK = {"fake": ~0, "core": ~1}


@pytest.fixture(params=sorted(BACKENDS))
def pair(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Target, Target]]:
    reference = Machine().build()
    backend = BACKENDS[request.param](reference, tmp_path_factory.getbasetemp())
    backend.efer_mask = EFER_MASK[request.param]  # type: ignore[attr-defined]
    yield backend, reference
    close = getattr(backend, "close", None)
    if close:
        close()


def test_is_a_target(pair: tuple[Target, Target]) -> None:
    contract_is_a_target(pair[0])


def test_state(pair: tuple[Target, Target]) -> None:
    contract_state(*pair, efer_mask=pair[0].efer_mask)  # type: ignore[attr-defined]


def test_read_phys(pair: tuple[Target, Target]) -> None:
    contract_read_phys(*pair, FAKE_PROBES)


def test_read_virt(pair: tuple[Target, Target]) -> None:
    contract_read_virt(*pair, FAKE_PROBES)


def test_msr_unavailable(pair: tuple[Target, Target]) -> None:
    contract_msr_unavailable(pair[0])


def test_tables(pair: tuple[Target, Target]) -> None:
    contract_tables(*pair)


# -- core specifics -----------------------------------------------------------------------------


def test_core_infers_efer_and_says_so(tmp_path: Path) -> None:
    fake = Machine(efer=0xD01).build()
    core = _core_from(fake, tmp_path)
    assert core.state().efer == 0xD00  # LME LMA NXE inferred; SCE unknown
    assert core.efer_inferred
    with pytest.raises(MsrUnavailable, match="does not save EFER"):
        core.read_msr(0xC0000080)


def test_core_msrs_it_has(tmp_path: Path) -> None:
    m = Machine()
    fake = m.build()
    st = fake.state()
    from kdiag._record import replace

    fake.set_state(replace(st, kernel_gs_base=0xFFFF888000001000, fs_base=0))
    core = _core_from(fake, tmp_path)
    assert core.read_msr(0xC0000102) == 0xFFFF888000001000
    assert core.read_msr(0xC0000100) == 0


def test_core_without_kernel_gs_base_field(tmp_path: Path) -> None:
    core = _core_from(Machine().build(), tmp_path, with_kgs=False)
    assert core.state().kernel_gs_base is None


def test_core_zero_fill_beyond_filesz(tmp_path: Path) -> None:
    st = Machine().build().state()
    write_qemu_core(tmp_path / "c.elf", [st], [(0x1000, b"\xaa" * 16)], zero_tail={0x1000: 32})
    core = CoreTarget.from_path(tmp_path / "c.elf")
    assert core.read_phys(0x1008, 16) == b"\xaa" * 8 + bytes(8)
    with pytest.raises(MemoryReadError):
        core.read_phys(0x1000 + 48, 1)


def test_core_32_bit_guest_has_no_lma(tmp_path: Path) -> None:
    st = Machine(efer=0, cr0=0x80000011, cr4=0x10).build().state()
    from kdiag._record import replace

    segs = dict(st.segments)
    segs["cs"] = replace(segs["cs"], flags=0x00CF9B00)
    st = replace(st, segments=segs)
    write_qemu_core(tmp_path / "c.elf", [st], [(0, bytes(4096))], machine=EM_386)
    core = CoreTarget.from_path(tmp_path / "c.elf")
    assert core.state().efer == 0 and core.state().mode == "protected"


def test_core_multiple_cpus(tmp_path: Path) -> None:
    from kdiag._record import replace

    st = Machine().build().state()
    st1 = replace(st, gpr={**st.gpr, "rip": 0x1234})
    write_qemu_core(tmp_path / "c.elf", [st, st1], [(0, bytes(4096))])
    assert CoreTarget.from_path(tmp_path / "c.elf", cpu=1).state().rip == 0x1234
    assert CoreTarget.from_path(tmp_path / "c.elf").cpu_count == 2
    with pytest.raises(InputError, match="CPU 2"):
        CoreTarget.from_path(tmp_path / "c.elf", cpu=2)


@pytest.mark.parametrize("content,match", [
    (b"", "not an ELF"),
    (b"KDUMP   " + bytes(100), "kdump"),
    (b"hello world, not a core", "not an ELF"),
    (b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HH", 2, 62) + bytes(60), "not a core"),
    (b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HH", 4, 62) + bytes(60), "no QEMU CPU"),
    (b"\x7fELF\x02\x01", "truncated"),
])
def test_core_bad_input_is_one_clear_error(tmp_path: Path, content: bytes, match: str) -> None:
    p = tmp_path / "bad.elf"
    p.write_bytes(content)
    with pytest.raises(InputError, match=match):
        CoreTarget.from_path(p)


def test_core_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open"):
        CoreTarget.from_path(tmp_path / "nope.elf")


def test_truncated_core_memory_is_a_read_error(tmp_path: Path) -> None:
    st = Machine().build().state()
    p = write_qemu_core(tmp_path / "c.elf", [st], [(0, bytes(8192))])
    p.write_bytes(p.read_bytes()[:-4096])
    core = CoreTarget.from_path(p)
    assert core.read_phys(0, 16) == bytes(16)
    with pytest.raises(MemoryReadError, match="truncated"):
        core.read_phys(4096 + 16, 16)


def reference_state_for_docs() -> CpuState:  # keeps the builder importable for docs/examples
    return Machine().build().state()


# -- the MSR file `kd core` writes beside a core -------------------------------------------------


def test_core_sidecar_supplies_msrs_and_the_real_efer(tmp_path: Path) -> None:
    from kdiag.target.core import write_sidecar

    fake = Machine(efer=0xD01).build()
    core_path = tmp_path / "c.elf"
    write_qemu_core(core_path, [fake.state()], [(0, bytes(4096))])
    from kdiag._record import replace

    write_sidecar(core_path, replace(fake.state(), cr8=2), {0x277: 0x0007040100070406, 0xC0000080: 0xD01},
                  "read by injecting rdmsr at RIP 0x1", {0xC0000083: "refused"})
    core = CoreTarget.from_path(core_path)
    assert core.read_msr(0x277) == 0x0007040100070406
    assert core.state().efer == 0xD01 and not core.efer_inferred and core.state().cr8 == 2
    assert core.msr_method.startswith("saved beside the core by `kd core`: read by injecting")
    with pytest.raises(MsrUnavailable, match="kd core FILE"):
        core.read_msr(0xC0000083)


def test_core_sidecar_from_another_stop_is_ignored(tmp_path: Path) -> None:
    from kdiag._record import replace
    from kdiag.target.core import write_sidecar

    st = Machine(efer=0xD01).build().state()
    core_path = tmp_path / "c.elf"
    write_qemu_core(core_path, [st], [(0, bytes(4096))])
    write_sidecar(core_path, replace(st, gpr={**st.gpr, "rip": st.rip + 2}), {0x277: 6}, "x")
    core = CoreTarget.from_path(core_path)
    assert "another stop" in core.sidecar_note and core.efer_inferred
    with pytest.raises(MsrUnavailable):
        core.read_msr(0x277)
    (tmp_path / "c.elf.msrs.json").write_text("{not json")
    assert "unreadable" in CoreTarget.from_path(core_path).sidecar_note


@pytest.mark.parametrize(("cs", "ss", "cpl"), [(0x08, 0x10, 0), (0x2B, 0x23, 3)])
def test_core_cpl_comes_from_ss_dpl(tmp_path: Path, cs: int, ss: int, cpl: int) -> None:
    """A QEMU core has no CPL field: it is SS.DPL (SDM Vol. 3A 5.5), as QEMU's hflags keep it."""
    from tests.unit.machine_builder import KCODE, KDATA, UCODE64, UDATA, seg_cache

    user = cpl == 3
    segments = {"cs": seg_cache(cs, UCODE64 if user else KCODE),
                "ss": seg_cache(ss, UDATA if user else KDATA)}
    fake = Machine(segments=segments).build()
    assert _core_from(fake, tmp_path).state().cpl == cpl
