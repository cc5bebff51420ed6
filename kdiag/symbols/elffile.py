"""A minimal, validating ELF container reader (ELF32/ELF64 little-endian).

Only what symbolization needs: the file header, section headers and names, PT_LOAD segments,
section bytes (``SHF_COMPRESSED`` zlib sections decompressed, System V gABI 4.1 "Section
Compression"), the GNU build-id note and raw symbol tables. It exists so a warm lookup does not
pay for importing pyelftools, and so a corrupt file is one clear :class:`~kdiag.errors.InputError`
("kernel.elf: section .symtab extends past the end of the file"), never a traceback.
"""

from __future__ import annotations

import mmap
import os
import struct

from kdiag.errors import InputError

TYPE_CHECKING = False  # typing's constant without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Any

SHT_SYMTAB, SHT_NOTE, SHT_NOBITS, SHT_DYNSYM = 2, 7, 8, 11
SHF_ALLOC, SHF_EXECINSTR, SHF_COMPRESSED = 0x2, 0x4, 0x800
PT_LOAD = 1
NT_GNU_BUILD_ID = 3
EM_386, EM_X86_64 = 3, 62


class _Header:
    """A read-only ELF header entry: the values of ``__slots__``, in order. Hand-written, not a
    dataclass or ``kdiag._record``: those generate and compile methods when the module is
    imported, a millisecond each of every warm ``kdiag symbolize``."""

    __slots__: tuple[str, ...] = ()

    def __init__(self, *values: int | str) -> None:
        if len(values) != len(self.__slots__):
            raise TypeError(f"{type(self).__name__} takes {len(self.__slots__)} values")
        for name, value in zip(self.__slots__, values, strict=True):
            object.__setattr__(self, name, value)

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, n) for n in self.__slots__)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")


class Section(_Header):
    __slots__ = ("index", "name", "type", "flags", "addr", "offset", "size", "link", "info",
                 "entsize")
    index: int
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int


class Segment(_Header):
    __slots__ = ("type", "offset", "vaddr", "paddr", "filesz", "memsz", "flags")
    type: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    flags: int


class ElfFile:
    """Parse ``path`` (or ``data``) eagerly enough to validate it; sections are read lazily."""

    def __init__(self, path: str | os.PathLike[str], data: bytes | None = None) -> None:
        self.path = str(path)
        self._mm: mmap.mmap | None = None
        if data is None:
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size == 0:
                        raise InputError(f"{self.path}: empty file, not an ELF")
                    self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                    self.data: bytes | mmap.mmap = self._mm
            except OSError as err:
                raise InputError(f"{self.path}: cannot read: {err.strerror or err}") from err
        else:
            self.data = data
        self._parse()

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def __enter__(self) -> ElfFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _bad(self, why: str) -> InputError:
        return InputError(f"{self.path}: corrupt ELF: {why}")

    def _parse(self) -> None:
        d = self.data
        n = len(d)
        if n < 16 or d[:4] != b"\x7fELF":
            raise InputError(f"{self.path}: not an ELF file (no \\x7fELF magic)")
        cls, enc = d[4], d[5]
        if cls not in (1, 2):
            raise self._bad(f"bad EI_CLASS {cls}")
        if enc != 1:
            raise InputError(f"{self.path}: big-endian or invalid ELF data encoding ({enc}); "
                             "kdiag reads little-endian x86 ELFs")
        self.elfclass = 32 if cls == 1 else 64
        if self.elfclass == 32:
            hdr = "<HHIIIIIHHHHHH"
            if n < 52:
                raise self._bad("file header truncated")
            (self.e_type, self.machine, _v, self.entry, phoff, shoff, _fl, _eh, phentsize,
             phnum, shentsize, shnum, shstrndx) = struct.unpack_from(hdr, d, 16)
        else:
            hdr = "<HHIQQQIHHHHHH"
            if n < 64:
                raise self._bad("file header truncated")
            (self.e_type, self.machine, _v, self.entry, phoff, shoff, _fl, _eh, phentsize,
             phnum, shentsize, shnum, shstrndx) = struct.unpack_from(hdr, d, 16)
        self.shoff, self.shnum, self.shentsize = shoff, shnum, shentsize
        # segments
        self.segments: list[Segment] = []
        if phnum:
            if phentsize < (32 if self.elfclass == 32 else 56) or phoff + phnum * phentsize > n:
                raise self._bad("program header table outside the file")
            for i in range(phnum):
                off = phoff + i * phentsize
                if self.elfclass == 32:
                    t, o, va, pa, fs, ms, fl, _al = struct.unpack_from("<IIIIIIII", d, off)
                else:
                    t, fl, o, va, pa, fs, ms, _al = struct.unpack_from("<IIQQQQQQ", d, off)
                self.segments.append(Segment(t, o, va, pa, fs, ms, fl))
        # sections
        self.sections: list[Section] = []
        self.shdr_bytes = b""
        if shoff == 0 or shnum == 0:
            return
        need = 40 if self.elfclass == 32 else 64
        if shentsize < need or shoff + shnum * shentsize > n:
            raise self._bad(f"section header table ({shnum} x {shentsize} at {shoff:#x}) "
                            f"runs past the end of the file ({n:#x} bytes)")
        self.shdr_bytes = bytes(d[shoff:shoff + shnum * shentsize])
        raw = []
        for i in range(shnum):
            off = shoff + i * shentsize
            if self.elfclass == 32:
                nm, t, fl, addr, o, sz, lk, inf, _al, es = struct.unpack_from("<IIIIIIIIII", d, off)
            else:
                nm, t, fl, addr, o, sz, lk, inf, _al, es = struct.unpack_from("<IIQQQQIIQQ", d, off)
            raw.append((nm, t, fl, addr, o, sz, lk, inf, es))
        if shstrndx >= shnum:
            raise self._bad(f"section name table index {shstrndx} >= {shnum} sections")
        _, st, _, _, so, ss, _, _, _ = raw[shstrndx]
        if so + ss > n:
            raise self._bad("section name table runs past the end of the file")
        names = bytes(d[so:so + ss])
        for i, (nm, t, fl, addr, o, sz, lk, inf, es) in enumerate(raw):
            end = names.find(b"\0", nm) if nm < len(names) else -1
            name = names[nm:end].decode("latin-1") if end >= 0 else ""
            if t != SHT_NOBITS and t != 0 and o + sz > n:
                raise self._bad(f"section {name or i} ({sz:#x} bytes at {o:#x}) extends past "
                                f"the end of the file ({n:#x} bytes)")
            self.sections.append(Section(i, name, t, fl, addr, o, sz, lk, inf, es))
        self._by_name = {s.name: s for s in reversed(self.sections)}

    # -- access ---------------------------------------------------------------------------------
    def section(self, name: str) -> Section | None:
        return self._by_name.get(name) if self.sections else None

    def section_data(self, sec: Section | str | None) -> bytes:
        """The section's bytes (decompressed); b"" for a missing or NOBITS section."""
        if isinstance(sec, str):
            sec = self.section(sec)
        if sec is None or sec.type == SHT_NOBITS or sec.type == 0:
            return b""
        raw = bytes(self.data[sec.offset:sec.offset + sec.size])
        if sec.flags & SHF_COMPRESSED:
            hsize = 12 if self.elfclass == 32 else 24
            if len(raw) < hsize:
                raise self._bad(f"compressed section {sec.name} has no header")
            ch_type = struct.unpack_from("<I", raw, 0)[0]
            if ch_type != 1:
                raise InputError(f"{self.path}: section {sec.name} uses compression type "
                                 f"{ch_type} (only zlib is supported)")
            import zlib

            try:
                return zlib.decompress(raw[hsize:])
            except zlib.error as err:
                raise self._bad(f"section {sec.name} does not decompress: {err}") from err
        if sec.name.startswith(".zdebug") and raw[:4] == b"ZLIB":
            import zlib

            try:
                return zlib.decompress(raw[12:])
            except zlib.error as err:
                raise self._bad(f"section {sec.name} does not decompress: {err}") from err
        return raw

    def dwarf_section(self, name: str) -> bytes:
        """``.debug_X`` or its legacy ``.zdebug_X`` form."""
        if self.section(name) is not None:
            return self.section_data(name)
        return self.section_data(".z" + name[1:])

    def build_id(self) -> bytes | None:
        for sec in self.sections:
            if sec.type != SHT_NOTE:
                continue
            data = self.section_data(sec)
            pos = 0
            while pos + 12 <= len(data):
                namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
                pos += 12
                name = data[pos:pos + namesz]
                pos += (namesz + 3) & ~3
                desc = data[pos:pos + descsz]
                pos += (descsz + 3) & ~3
                if ntype == NT_GNU_BUILD_ID and name.rstrip(b"\0") == b"GNU":
                    return bytes(desc)
        return None

    def symbols(self) -> list[tuple[str, int, int, int, int]]:
        """``(name, value, size, st_info, st_shndx)`` of ``.symtab`` (else ``.dynsym``)."""
        tab = next((s for s in self.sections if s.type == SHT_SYMTAB), None)
        if tab is None:
            tab = next((s for s in self.sections if s.type == SHT_DYNSYM), None)
        if tab is None:
            return []
        if tab.link >= len(self.sections):
            raise self._bad(f"{tab.name} links to missing string table {tab.link}")
        strtab = self.section_data(self.sections[tab.link])
        data = self.section_data(tab)
        out = []
        if self.elfclass == 32:
            fmt = struct.Struct("<IIIBBH")
            usable = len(data) - len(data) % 16
            for nm, val, size, info, _o, shndx in fmt.iter_unpack(data[:usable]):
                if nm:
                    out.append((nm, val, size, info, shndx))
        else:
            fmt = struct.Struct("<IBBHQQ")
            usable = len(data) - len(data) % 24
            for nm, info, _o, shndx, val, size in fmt.iter_unpack(data[:usable]):
                if nm:
                    out.append((nm, val, size, info, shndx))
        res = []
        for nm, val, size, info, shndx in out:
            end = strtab.find(b"\0", nm)
            if end < 0:
                continue
            res.append((strtab[nm:end].decode("utf-8", "replace"), val, size, info, shndx))
        return res


def _blake2b(digest_size: int) -> Any:
    """``hashlib.blake2b`` without importing hashlib (which loads OpenSSL's ``_hashlib``: a few
    milliseconds of every warm ``kdiag symbolize`` start); the same hash."""
    try:
        from _blake2 import blake2b
    except ImportError:  # an interpreter built without it
        from hashlib import blake2b
    return blake2b(digest_size=digest_size)


def file_key(path: str | os.PathLike[str]) -> tuple[str, ElfFile]:
    """A cache key for ``path``: hash of (build-id or whole content, size, section headers)."""
    elf = ElfFile(path)
    h = _blake2b(20)
    bid = elf.build_id()
    h.update(str(len(elf.data)).encode())
    h.update(elf.shdr_bytes)
    if bid:
        h.update(b"bid:" + bid)
    else:
        h.update(b"content:")
        h.update(elf.data)
    return h.hexdigest(), elf

