"""Where a faulting address is in the kernel ELF(s): symbol, file:line, the instruction.

Symbol and line answers come from :class:`kdiag.symbols.Symbolizer` (symtab, DWARF, STABS).
This module adds what triage needs on top: mapping a run-time address to the ELF's link-time
address (``--elf FILE@BIAS``, and automatically through ``p_paddr`` for code that runs at its
physical load address before the jump to the higher half), the instruction bytes from the ELF's
``PT_LOAD`` segments, their disassembly with capstone in the mode the CS descriptor says
(64/32/16-bit), the instructions just before, the effective addresses of memory operands
computed from the dump's registers, and a few source lines when the file is on disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kdiag._log import warning
from kdiag.errors import InputError
from kdiag.symbols.elffile import ElfFile
from kdiag.triage.model import Location
from kdiag.x86.state import CpuMode, CpuState

PT_LOAD = 1
MAX_INSN = 15

__all__ = ["ElfSpec", "KernelImage", "parse_elf_spec"]


@dataclass(frozen=True)
class ElfSpec:
    path: str
    bias: int = 0


def parse_elf_spec(text: str) -> ElfSpec:
    """``FILE`` or ``FILE@BIAS`` (BIAS in any ``int(x, 0)`` form, may be negative)."""
    if "@" in text:
        path, _, bias_s = text.rpartition("@")
        try:
            return ElfSpec(path, int(bias_s, 0))
        except ValueError:
            if os.path.exists(text):
                return ElfSpec(text, 0)
            raise InputError(f"--elf {text}: bias {bias_s!r} is not a number "
                             "(use FILE@0xffffffff80000000)") from None
    return ElfSpec(text, 0)


@dataclass(frozen=True)
class _Seg:
    vaddr: int
    paddr: int
    memsz: int
    filesz: int
    offset: int
    flags: int


class _Image:
    def __init__(self, spec: ElfSpec) -> None:
        self.path = spec.path
        self.bias = spec.bias
        with ElfFile(spec.path) as elf:
            self.elfclass = elf.elfclass
            self.segs = [_Seg(s.vaddr, s.paddr, s.memsz, s.filesz, s.offset, s.flags)
                         for s in elf.segments if s.type == PT_LOAD and s.memsz]
            self._data = {}
            for s in self.segs:
                if s.filesz:
                    self._data[s.offset] = bytes(elf.data[s.offset:s.offset + s.filesz])

    def link_address(self, addr: int) -> tuple[int, str] | None:
        a = addr - self.bias
        for s in self.segs:
            if s.vaddr <= a < s.vaddr + s.memsz:
                return a, "vaddr"
        for s in self.segs:
            if s.paddr != s.vaddr and s.paddr <= a < s.paddr + s.memsz:
                return a - s.paddr + s.vaddr, "paddr"
        return None

    def read(self, link: int, size: int) -> bytes:
        for s in self.segs:
            if s.vaddr <= link < s.vaddr + s.filesz:
                data = self._data.get(s.offset, b"")
                start = link - s.vaddr
                return data[start:start + size]
        return b""


class KernelImage:
    """One or more kernel ELFs with their biases. Raises InputError for unreadable ELFs."""

    def __init__(self, specs: list[ElfSpec]) -> None:
        from kdiag.symbols.symbolizer import Symbolizer

        self.images = [_Image(s) for s in specs]
        self.symbolizer = Symbolizer()
        for s in specs:
            try:
                self.symbolizer.add_elf(s.path, bias=s.bias)
            except InputError:
                raise
            except Exception as err:  # a bug in a decoder must not cost the whole triage
                warning(__name__, "symbolizer failed on %s: %s", s.path, err)

    def __bool__(self) -> bool:
        return bool(self.images)

    def _find(self, addr: int) -> tuple[_Image, int, str] | None:
        for img in self.images:
            hit = img.link_address(addr)
            if hit is not None:
                return img, hit[0], hit[1]
        return None

    def contains(self, addr: int) -> bool:
        return self._find(addr) is not None

    def locate(self, addr: int, state: CpuState | None = None, context: int = 2) -> Location | None:
        """The Location of run-time ``addr``; None when no ELF holds it."""
        hit = self._find(addr)
        if hit is None:
            return None
        img, link, via = hit
        sym = file = None
        off = line = None
        fstart: int | None = None
        try:
            loc = self.symbolizer.lookup(link + img.bias)
        except Exception as err:  # noqa: BLE001 - symbolization is best effort
            warning(__name__, "symbol lookup of %#x failed: %s", addr, err)
            loc = None
        if loc is not None:
            sym, off, file, line = loc.symbol, loc.offset, loc.file, loc.line
            fstart = loc.function_start
            if fstart is not None:
                fstart -= img.bias
        bits = _mode_bits(state, img.elfclass)
        code = img.read(link, MAX_INSN)
        text, nbytes, mems = _disasm_one(code, link, bits, state, addr - link)
        prev = _previous(img, link, fstart, bits)
        return Location(address=addr, elf=img.path, link_address=link, via=via, symbol=sym,
                        offset=off, file=file, line=line, instruction=text,
                        insn_bytes=code[:nbytes] if nbytes else None, mode_bits=bits,
                        previous=prev, source=_source(file, line, img.path, context),
                        mem_addresses=mems)


def _mode_bits(state: CpuState | None, elfclass: int) -> int:
    if state is None:
        return 64 if elfclass == 64 else 32
    mode = state.mode
    if mode is CpuMode.LONG:
        return 64
    if mode is CpuMode.REAL:
        return 16
    cs = state.segments.get("cs")
    if cs is None:
        return 64 if elfclass == 64 else 32
    return 32 if cs.default_big else 16


def _cs_mode(bits: int) -> int:
    import capstone

    return {64: capstone.CS_MODE_64, 32: capstone.CS_MODE_32, 16: capstone.CS_MODE_16}[bits]


_REG64 = {"al": "rax", "ah": "rax", "ax": "rax", "eax": "rax", "rax": "rax",
          "bl": "rbx", "bh": "rbx", "bx": "rbx", "ebx": "rbx", "rbx": "rbx",
          "cl": "rcx", "ch": "rcx", "cx": "rcx", "ecx": "rcx", "rcx": "rcx",
          "dl": "rdx", "dh": "rdx", "dx": "rdx", "edx": "rdx", "rdx": "rdx",
          "si": "rsi", "esi": "rsi", "rsi": "rsi", "di": "rdi", "edi": "rdi", "rdi": "rdi",
          "bp": "rbp", "ebp": "rbp", "rbp": "rbp", "sp": "rsp", "esp": "rsp", "rsp": "rsp"}
for _n in range(8, 16):
    for _suf in ("", "d", "w", "b"):
        _REG64[f"r{_n}{_suf}"] = f"r{_n}"


def _reg_value(name: str, state: CpuState) -> int | None:
    key = _REG64.get(name)
    if key is None:
        return None
    val = state.gpr.get(key)
    if val is None:
        return None
    if name.startswith("e") or name.endswith("d"):
        return val & 0xFFFFFFFF
    return val


def _disasm_one(code: bytes, link: int, bits: int, state: CpuState | None,
                delta: int) -> tuple[str | None, int, tuple[int, ...]]:
    if not code:
        return None, 0, ()
    try:
        import capstone
        from capstone import x86_const
    except ImportError:  # pragma: no cover - capstone is a dependency
        return None, 0, ()
    md = capstone.Cs(capstone.CS_ARCH_X86, _cs_mode(bits))
    md.detail = True
    for insn in md.disasm(code, link):
        text = f"{insn.mnemonic} {insn.op_str}".strip()
        mems: list[int] = []
        if state is not None:
            mask = (1 << 64) - 1 if bits == 64 else 0xFFFFFFFF
            for op in insn.operands:
                if op.type != x86_const.X86_OP_MEM:
                    continue
                addr = op.mem.disp
                ok = True
                if op.mem.base:
                    bname = insn.reg_name(op.mem.base)
                    if bname in ("rip", "eip"):
                        addr += link + delta + insn.size
                    else:
                        v = _reg_value(bname, state)
                        ok = ok and v is not None
                        addr += v or 0
                if op.mem.index:
                    v = _reg_value(insn.reg_name(op.mem.index), state)
                    ok = ok and v is not None
                    addr += (v or 0) * op.mem.scale
                if op.mem.segment:
                    seg = insn.reg_name(op.mem.segment)
                    sc = state.segments.get(seg) if seg else None
                    if sc is not None:
                        addr += sc.base
                if ok:
                    mems.append(addr & mask)
        return text, insn.size, tuple(mems)
    return "(bad)", 0, ()


def _previous(img: _Image, link: int, fstart: int | None, bits: int) -> tuple[str, ...]:
    if fstart is None or not 0 < link - fstart <= 4096:
        return ()
    try:
        import capstone
    except ImportError:  # pragma: no cover
        return ()
    code = img.read(fstart, link - fstart)
    md = capstone.Cs(capstone.CS_ARCH_X86, _cs_mode(bits))
    out: list[str] = []
    end = fstart
    for insn in md.disasm(code, fstart):
        out.append(f"{insn.address:#x}: {insn.mnemonic} {insn.op_str}".strip())
        end = insn.address + insn.size
    if end != link:
        return ()
    return tuple(out[-3:])


def _source(file: str | None, line: int | None, elf_path: str,
            context: int) -> tuple[tuple[int, str], ...]:
    if not file or not line or context < 0:
        return ()
    candidates = [Path(file)]
    here = Path(elf_path).parent
    rel = Path(file) if not os.path.isabs(file) else Path(Path(file).name)
    candidates += [here / rel, here.parent / rel]  # the tree moved: look beside the ELF
    if not os.path.isabs(file):
        # a relative name (STABS `kern/init.c`, DWARF without comp_dir): the build ran in a
        # sibling source directory (kernel/build/x.elf, kernel/i386/kern/init.c)
        for top in (here.parent, here):
            try:
                candidates += sorted(d / rel for d in top.iterdir() if d.is_dir())
            except OSError:
                continue
    for p in candidates:
        try:
            if p.is_file() and p.stat().st_size < 8 << 20:
                lines = p.read_text(errors="replace").splitlines()
                lo = max(1, line - context)
                hi = min(len(lines), line + context)
                return tuple((n, lines[n - 1]) for n in range(lo, hi + 1))
        except OSError:
            continue
    return ()
