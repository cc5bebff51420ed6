"""CoreTarget: a QEMU ``dump-guest-memory`` ELF core as an offline Target.

Format (QEMU 7.2 ``dump/dump.c`` and ``target/i386/arch_dump.c``):

- ELF ``ET_CORE``; ``EM_X86_64`` when the first CPU had EFER.LMA=1, else ``EM_386`` (ELFCLASS64
  anyway when guest RAM reaches above 4 GiB). ``e_phnum`` may be ``PN_XNUM`` (then section 0's
  ``sh_info`` holds the count).
- One ``PT_NOTE`` holding, for each CPU in order, a ``CORE``/``NT_PRSTATUS`` note (Linux
  ``elf_prstatus`` layout; GPRs and selectors only), then for each CPU a ``QEMU`` note (type 0)
  with ``QEMUCPUState``::

      u32 version (1), u32 size
      u64 rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags
      QEMUCPUSegment cs ds es fs gs ss ldt tr gdt idt     {u32 selector, limit, flags, pad; u64 base}
      u64 cr[5]
      u64 kernel_gs_base                                   (QEMU >= 7.1; size 0x1b8)

  ``flags`` is the descriptor's high dword as QEMU caches it; kdiag keeps bits 8-23, as QEMU's
  ``info registers`` dump prints them.
- ``PT_LOAD`` segments: ``p_paddr`` is the guest-physical address (``p_vaddr`` is 0 unless the
  dump was taken with ``paging: true``); ``p_filesz`` may be below ``p_memsz`` (zero fill).

What the core does not hold: EFER and every other MSR except KERNEL_GS_BASE (and the FS/GS bases,
which equal the segment bases). :meth:`CoreTarget.state` therefore *infers* EFER: LME|LMA when
the core is ``EM_X86_64`` or CS.L=1, and NXE whenever PAE paging is on (if the kernel ran with
NX bits in its tables, NXE must have been set; if it used none, NXE changes nothing a reader
sees). SCE is unknown and reported as 0. ``efer_inferred`` says so; renderers mention it.

Only the ELF format is read: ``kdump-*`` and ``win-dmp`` formats are refused with a clear
``InputError``.

MSR sidecar: ``kd core FILE`` in gdb writes the core through QEMU's monitor and, beside it,
``FILE.msrs.json`` (:data:`SIDECAR_SUFFIX`) with the MSRs it read from the stopped CPU by rdmsr
injection (EFER, PAT, STAR, LSTAR, CSTAR, SFMASK, APIC_BASE)::

    {"format": "kdiag-msrs/1", "cpu": 0,
     "fingerprint": {"rip": "0x...", "rsp": "0x...", "cr3": "0x..."}, "registers": {"cr8": "0x0"},
     "msrs": {"0x277": "0x0007040100070406", ...}, "method": "...", "unavailable": {...}}

:class:`CoreTarget` uses it when the fingerprint matches the core's CPU state (the same stop):
``read_msr`` answers from it and EFER is the real value instead of the inferred one. A sidecar
that does not match is ignored, and ``sidecar_note`` says why.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from kdiag._record import replace
from kdiag.errors import InputError, MemoryReadError, MsrUnavailable
from kdiag.target.virt import read_virt_paged
from kdiag.x86.state import CpuState, SegmentCache, TableRegister

ET_CORE = 4
EM_386 = 3
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
PN_XNUM = 0xFFFF
NT_PRSTATUS = 1
QEMU_NOTE_TYPE = 0
QEMUCPUSTATE_V1_SIZE = 0x1B0  # without kernel_gs_base
_SEG = struct.Struct("<IIIIQ")  # selector, limit, flags, pad, base
_SEG_ORDER = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt")
_GPR_ORDER = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
              "r12", "r13", "r14", "r15", "rip", "rflags")

DUMP_FLAGS_MASK = 0x00FFFF00
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11
MSR_EFER = 0xC0000080
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_KERNEL_GS_BASE = 0xC0000102
SIDECAR_SUFFIX = ".msrs.json"
SIDECAR_FORMAT = "kdiag-msrs/1"


def sidecar_path(core: str | os.PathLike[str]) -> Path:
    """Where ``kd core`` puts the MSRs of ``core``."""
    return Path(os.fspath(core) + SIDECAR_SUFFIX)


def _fingerprint(st: CpuState) -> dict[str, str]:
    return {"rip": f"{st.rip:#x}", "rsp": f"{st.gpr.get('rsp', 0):#x}", "cr3": f"{st.cr3:#x}"}


def write_sidecar(core: str | os.PathLike[str], state: CpuState, msrs: dict[int, int],
                  method: str, unavailable: dict[int, str] | None = None) -> Path:
    """Write the MSRs read at the stop ``state`` describes beside ``core`` (see the module doc).

    CR8 (the task-priority register, not in QEMUCPUState either) goes along when ``state``
    has it."""
    path = sidecar_path(core)
    doc = {"format": SIDECAR_FORMAT, "cpu": state.cpu_index or 0,
           "fingerprint": _fingerprint(state),
           "registers": {} if state.cr8 is None else {"cr8": f"{state.cr8:#x}"},
           "msrs": {f"{k:#x}": f"{v:#018x}" for k, v in sorted(msrs.items())},
           "method": method,
           "unavailable": {f"{k:#x}": v for k, v in sorted((unavailable or {}).items())}}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


@dataclass(frozen=True)
class LoadSegment:
    paddr: int
    offset: int
    filesz: int
    memsz: int

    @property
    def end(self) -> int:
        return self.paddr + self.memsz


def parse_qemu_cpu_state(desc: bytes, elf_machine: int, cpu_index: int = 0) -> CpuState:
    """Decode one ``QEMUCPUState`` note descriptor into a CpuState (EFER inferred)."""
    if len(desc) < QEMUCPUSTATE_V1_SIZE:
        raise InputError(f"QEMU CPU note is {len(desc)} bytes, expected at least "
                         f"{QEMUCPUSTATE_V1_SIZE:#x}: truncated core")
    version, size = struct.unpack_from("<II", desc, 0)
    if version != 1:
        raise InputError(f"QEMUCPUState version {version} is not supported (only 1)")
    regs = struct.unpack_from("<18Q", desc, 8)
    gpr = dict(zip(_GPR_ORDER, regs, strict=True))
    off = 8 + 18 * 8
    segs: dict[str, tuple[int, int, int, int]] = {}
    for name in _SEG_ORDER:
        sel, limit, flags, _pad, base = _SEG.unpack_from(desc, off)
        segs[name] = (sel, limit, flags, base)
        off += _SEG.size
    cr = struct.unpack_from("<5Q", desc, off)
    off += 40
    kgs = struct.unpack_from("<Q", desc, off)[0] if min(size, len(desc)) >= off + 8 else None

    def cache(name: str) -> SegmentCache:
        sel, limit, flags, base = segs[name]
        # QEMU keeps the descriptor's whole high dword (base bits too); its register dump
        # prints flags & 0x00ffff00 (attributes + limit 19:16), which CpuState follows.
        return SegmentCache(sel & 0xFFFF, base, limit, flags & DUMP_FLAGS_MASK)

    segments = {n: cache(n) for n in ("es", "cs", "ss", "ds", "fs", "gs")}
    cs_long = bool(segs["cs"][2] & (1 << 21))
    efer = 0
    if elf_machine == EM_X86_64 or cs_long:
        efer |= EFER_LME | EFER_LMA
    if cr[0] & (1 << 31) and cr[4] & (1 << 5):
        efer |= EFER_NXE
    # The note holds no CPL; QEMU derives it from SS.DPL in protected mode (target/i386/cpu.h,
    # HF_CPL_MASK; SDM Vol. 3A 5.5: SS.DPL always equals CPL), and it is 0 in real mode.
    cpl = (segs["ss"][2] >> 13) & 3 if cr[0] & 1 else 0
    return CpuState(
        gpr=gpr, cr0=cr[0], cr2=cr[2], cr3=cr[3], cr4=cr[4], efer=efer, cpl=cpl,
        segments=segments,
        gdtr=TableRegister(segs["gdt"][3], segs["gdt"][1]),
        idtr=TableRegister(segs["idt"][3], segs["idt"][1]),
        tr=cache("tr"), ldtr=cache("ldt"),
        fs_base=segs["fs"][3], gs_base=segs["gs"][3], kernel_gs_base=kgs,
        cpu_index=cpu_index)


class CoreTarget:
    """A Target over a QEMU ELF core file. Read-only; memory is mapped, not loaded."""

    name = "core"
    msr_method = "from the QEMU core's saved CPU state"
    msr_reads_are_passive = True
    efer_inferred = True
    bulk_read_gap = 1 << 20  # reads from a mapped file cost nothing extra

    def __init__(self, path: str, data: mmap.mmap | bytes, cpu: int = 0) -> None:
        self.path = path
        self._data = data
        self._size = len(data)
        self._loads: list[LoadSegment] = []
        self._states: list[CpuState] = []
        self._parse()
        if not self._states:
            raise InputError(f"{path}: no QEMU CPU state note: not a QEMU dump-guest-memory core "
                             "(or taken by a QEMU too old to write one)")
        if not 0 <= cpu < len(self._states):
            raise InputError(f"{path}: CPU {cpu} not in the core (it has {len(self._states)})")
        self.cpu = cpu
        self._starts = [s.paddr for s in self._loads]
        self._msrs: dict[int, int] = {}
        self.sidecar_note = ""
        self._load_sidecar()

    def _load_sidecar(self) -> None:
        path = sidecar_path(self.path)
        if not path.exists():
            return
        try:
            doc = json.loads(path.read_text())
            if doc.get("format") != SIDECAR_FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            msrs = {int(k, 16): int(v, 16) for k, v in doc["msrs"].items()}
            cpu, fp, method = int(doc["cpu"]), doc["fingerprint"], str(doc["method"])
            cr8 = doc.get("registers", {}).get("cr8")
            cr8 = None if cr8 is None else int(cr8, 16)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            self.sidecar_note = f"{path.name} ignored: unreadable ({err})"
            return
        st = self._states[self.cpu]
        if cpu != self.cpu or fp != _fingerprint(st):
            self.sidecar_note = (f"{path.name} ignored: it was written at another stop (CPU "
                                 f"{cpu}, {fp}) than the core's")
            return
        self._msrs = msrs
        self.msr_method = f"saved beside the core by `kd core`: {method}"
        if MSR_EFER in msrs:
            st = replace(st, efer=msrs[MSR_EFER])
            self.efer_inferred = False
        if cr8 is not None:
            st = replace(st, cr8=cr8)
        self._states[self.cpu] = st

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_path(cls, path: str | os.PathLike[str], cpu: int = 0) -> CoreTarget:
        p = Path(path)
        try:
            f = open(p, "rb")  # noqa: SIM115 - kept open by the mapping
        except OSError as err:
            raise InputError(f"cannot open core {p}: {err.strerror}") from err
        with f:
            head = f.read(8)
            if head.startswith(b"KDUMP") or head.startswith(b"PAGEDU"):
                raise InputError(f"{p} is a kdump/win-dmp dump; kdiag reads the ELF format "
                                 "(dump-guest-memory without a 'format' argument)")
            if head[:4] != b"\x7fELF":
                raise InputError(f"{p} is not an ELF file (magic {head[:4]!r})")
            try:
                data: mmap.mmap | bytes = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (ValueError, OSError):
                f.seek(0)
                data = f.read()
        return cls(str(p), data, cpu)

    def _parse(self) -> None:
        d = self._data
        if self._size < 52:
            raise InputError(f"{self.path}: truncated ELF header")
        ei_class, ei_data = d[4], d[5]
        if ei_data != 1:
            raise InputError(f"{self.path}: big-endian ELF is not an x86 core")
        if ei_class == 2:
            if self._size < 64:
                raise InputError(f"{self.path}: truncated ELF header")
            (e_type, e_machine, _v, _entry, e_phoff, e_shoff, _flags, _ehsize, e_phentsize,
             e_phnum, _shentsize, _shnum, _shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", d, 16)
            ph_fmt = "<IIQQQQQQ"
        elif ei_class == 1:
            (e_type, e_machine, _v, _entry, e_phoff, e_shoff, _flags, _ehsize, e_phentsize,
             e_phnum, _shentsize, _shnum, _shstrndx) = struct.unpack_from("<HHIIIIIHHHHHH", d, 16)
            ph_fmt = "<IIIIIIII"
        else:
            raise InputError(f"{self.path}: unknown ELF class {ei_class}")
        if e_type != ET_CORE:
            raise InputError(f"{self.path}: ELF type {e_type} is not a core file (ET_CORE); "
                             "did you pass the kernel instead of the dump?")
        if e_machine not in (EM_X86_64, EM_386):
            raise InputError(f"{self.path}: ELF machine {e_machine} is not x86")
        self.elf_machine = e_machine
        if e_phnum == PN_XNUM:
            sh_fmt = "<IIQQQQIIQQ" if ei_class == 2 else "<IIIIIIIIII"
            try:
                e_phnum = struct.unpack_from(sh_fmt, d, e_shoff)[7]
            except struct.error as err:
                raise InputError(f"{self.path}: truncated section header") from err
        notes: list[tuple[int, int]] = []
        for i in range(e_phnum):
            off = e_phoff + i * e_phentsize
            try:
                ph = struct.unpack_from(ph_fmt, d, off)
            except struct.error as err:
                raise InputError(f"{self.path}: truncated program header table") from err
            if ei_class == 2:
                p_type, _pflags, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _align = ph
            else:
                p_type, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _pflags, _align = ph
            if p_type == PT_LOAD and p_memsz:
                self._loads.append(LoadSegment(p_paddr, p_offset, p_filesz, p_memsz))
            elif p_type == PT_NOTE:
                notes.append((p_offset, p_filesz))
        self._loads.sort(key=lambda s: s.paddr)
        for off, size in notes:
            if off + size > self._size:
                raise InputError(f"{self.path}: note segment beyond the end of the file "
                                 "(truncated core)")
            self._parse_notes(bytes(d[off:off + size]))

    def _parse_notes(self, blob: bytes) -> None:
        pos = 0
        cpu = 0
        while pos + 12 <= len(blob):
            namesz, descsz, ntype = struct.unpack_from("<III", blob, pos)
            pos += 12
            name = blob[pos:pos + namesz].rstrip(b"\0")
            pos += (namesz + 3) & ~3
            desc = blob[pos:pos + descsz]
            pos += (descsz + 3) & ~3
            if name == b"QEMU" and ntype == QEMU_NOTE_TYPE:
                self._states.append(parse_qemu_cpu_state(desc, self.elf_machine, cpu))
                cpu += 1

    # -- info ---------------------------------------------------------------------------------
    @property
    def cpu_count(self) -> int:
        return len(self._states)

    @property
    def ram_ranges(self) -> list[tuple[int, int]]:
        """(start, end) guest-physical ranges present in the core, sorted."""
        return [(s.paddr, s.end) for s in self._loads]

    def close(self) -> None:
        if isinstance(self._data, mmap.mmap):
            self._data.close()

    # -- Target protocol ----------------------------------------------------------------------
    def state(self) -> CpuState:
        return self._states[self.cpu]

    def read_phys(self, pa: int, size: int) -> bytes:
        if size < 0 or pa < 0:
            raise MemoryReadError(f"bad physical read {pa:#x}+{size:#x}", addr=pa, size=size)
        out = bytearray()
        addr, end = pa, pa + size
        while addr < end:
            i = bisect_right(self._starts, addr) - 1
            seg = self._loads[i] if i >= 0 else None
            if seg is None or addr >= seg.end:
                raise MemoryReadError(
                    f"physical {addr:#x} is not in the core (RAM ranges: "
                    + ", ".join(f"{a:#x}-{b:#x}" for a, b in self.ram_ranges[:6]) + ")",
                    addr=pa, size=size)
            n = min(end, seg.end) - addr
            rel = addr - seg.paddr
            in_file = max(0, min(n, seg.filesz - rel))
            if in_file:
                start = seg.offset + rel
                if start + in_file > self._size:
                    raise MemoryReadError(f"physical {addr:#x} lies beyond the end of the core "
                                          "file (truncated dump)", addr=pa, size=size)
                out += self._data[start:start + in_file]
            out += bytes(n - in_file)
            addr += n
        return bytes(out)

    def read_virt(self, va: int, size: int) -> bytes:
        return read_virt_paged(self, va, size)

    def read_msr(self, index: int) -> int:
        st = self.state()
        if index in self._msrs:
            return self._msrs[index]
        if index == MSR_KERNEL_GS_BASE and st.kernel_gs_base is not None:
            return st.kernel_gs_base
        if index == MSR_FS_BASE and st.fs_base is not None:
            return st.fs_base
        if index == MSR_GS_BASE and st.gs_base is not None:
            return st.gs_base
        if index == MSR_EFER:
            raise MsrUnavailable("a QEMU core does not save EFER; `kdiag cr` shows the value "
                                 "inferred from the mode (LME/LMA, NXE)", msr=index)
        raise MsrUnavailable(f"a QEMU core holds no MSR {index:#x} (only KERNEL_GS_BASE and "
                             "the FS/GS bases); read it live with `kd msr` in gdb, or save the "
                             f"core with `kd core FILE`, which keeps the MSRs in FILE"
                             f"{SIDECAR_SUFFIX}", msr=index)
