"""Write a QEMU-format ``dump-guest-memory`` ELF core from a CpuState and memory chunks.

Test helper only: it mirrors what QEMU 7.2's ``dump/dump.c`` + ``target/i386/arch_dump.c``
write (ELF64 ET_CORE, one PT_NOTE with CORE/NT_PRSTATUS then QEMU/0 notes, PT_LOADs with
p_paddr), so the CoreTarget can join the contract suite without booting QEMU. The real-core
check lives in tests/integration.
"""

from __future__ import annotations

import struct
from pathlib import Path

from kdiag.x86.state import CpuState, SegmentCache

EM_X86_64 = 62
EM_386 = 3
GPR = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12",
       "r13", "r14", "r15", "rip", "rflags")


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    namez = name + b"\0"
    out = struct.pack("<III", len(namez), len(desc), ntype)
    out += namez + bytes(-len(namez) % 4)
    out += desc + bytes(-len(desc) % 4)
    return out


def _seg(s: SegmentCache | None) -> bytes:
    if s is None:
        return struct.pack("<IIIIQ", 0, 0, 0, 0, 0)
    return struct.pack("<IIIIQ", s.selector, s.limit, s.flags, 0, s.base)


def qemu_cpu_state(st: CpuState, with_kgs: bool = True) -> bytes:
    body = b"".join(struct.pack("<Q", st.gpr.get(n, 0)) for n in GPR)
    for name in ("cs", "ds", "es", "fs", "gs", "ss"):
        body += _seg(st.segments.get(name))
    body += _seg(st.ldtr) + _seg(st.tr)
    for reg in (st.gdtr, st.idtr):
        body += struct.pack("<IIIIQ", 0, reg.limit if reg else 0, 0, 0, reg.base if reg else 0)
    body += struct.pack("<5Q", st.cr0, 0, st.cr2, st.cr3, st.cr4)
    if with_kgs:
        body += struct.pack("<Q", st.kernel_gs_base or 0)
    size = 8 + len(body)
    return struct.pack("<II", 1, size) + body


def prstatus(st: CpuState, cpu: int) -> bytes:
    # x86_64_elf_prstatus: pad1[32] pid pad2[76] regs(27*8) pad3[8]
    regs = [st.gpr.get(n, 0) for n in ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10",
                                        "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi")]
    regs += [0, st.rip, st.segments["cs"].selector if "cs" in st.segments else 0, st.rflags,
             st.rsp, st.segments["ss"].selector if "ss" in st.segments else 0, 0, 0, 0, 0, 0, 0]
    return bytes(32) + struct.pack("<I", cpu) + bytes(76) + struct.pack("<27Q", *regs) + bytes(8)


def write_qemu_core(path: Path, states: list[CpuState], memory: list[tuple[int, bytes]],
                    machine: int = EM_X86_64, with_kgs: bool = True,
                    zero_tail: dict[int, int] | None = None) -> Path:
    """``memory``: (physical address, bytes) chunks -> one PT_LOAD each (sorted).

    ``zero_tail``: chunk address -> extra p_memsz beyond the file bytes (reads as zero).
    """
    notes = b"".join(_note(b"CORE", 1, prstatus(s, i)) for i, s in enumerate(states))
    notes += b"".join(_note(b"QEMU", 0, qemu_cpu_state(s, with_kgs)) for s in states)
    chunks = sorted(memory)
    phnum = 1 + len(chunks)
    ehsize, phentsize = 64, 56
    off = ehsize + phnum * phentsize
    phdrs = [struct.pack("<IIQQQQQQ", 4, 0, off, 0, 0, len(notes), len(notes), 0)]
    data = notes
    off += len(notes)
    for pa, blob in chunks:
        memsz = len(blob) + (zero_tail or {}).get(pa, 0)
        phdrs.append(struct.pack("<IIQQQQQQ", 1, 0, off, 0, pa, len(blob), memsz, 0))
        data += blob
        off += len(blob)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    eh = ident + struct.pack("<HHIQQQIHHHHHH", 4, machine, 1, 0, ehsize, 0, 0, ehsize, phentsize,
                             phnum, 64, 0, 0)
    path.write_bytes(eh + b"".join(phdrs) + data)
    return path
