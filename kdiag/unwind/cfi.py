"""Call-frame information from ``.eh_frame`` / ``.debug_frame`` (DWARF 5, 6.4).

pyelftools parses the CIEs and FDEs and decodes an FDE's instructions into its table of rows
(``get_decoded()``); this module indexes the FDEs by address and answers "what are the rules
at this pc" as a :class:`CfiRow`. Applying the rules to a stack is the unwinder's job
(:mod:`kdiag.unwind.unwinder`). DWARF register numbers (System V ABI): x86-64 0 rax, 1 rdx,
2 rcx, 3 rbx, 4 rsi, 5 rdi, 6 rbp, 7 rsp, 8-15 r8-r15, 16 return address; i386 0 eax,
1 ecx, 2 edx, 3 ebx, 4 esp, 5 ebp, 6 esi, 7 edi, 8 return address (eip).
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kdiag.errors import InputError

log = logging.getLogger(__name__)

X86_64_REGS = {0: "rax", 1: "rdx", 2: "rcx", 3: "rbx", 4: "rsi", 5: "rdi", 6: "rbp", 7: "rsp",
               8: "r8", 9: "r9", 10: "r10", 11: "r11", 12: "r12", 13: "r13", 14: "r14",
               15: "r15", 16: "rip"}
# i386 numbers mapped onto CpuState's zero-extended 64-bit names
I386_REGS = {0: "rax", 1: "rcx", 2: "rdx", 3: "rbx", 4: "rsp", 5: "rbp", 6: "rsi", 7: "rdi",
             8: "rip"}


@dataclass(frozen=True, slots=True)
class CfiRow:
    """The unwind rules in force at one pc.

    ``cfa_reg``/``cfa_offset``: CFA = reg + offset (``cfa_expr`` True means the CFA is the
    DWARF expression ``cfa_expression``, see :func:`eval_expression`). ``rules``: DWARF
    register -> (kind, arg) with kind one of ``OFFSET`` (saved at CFA+arg), ``VAL_OFFSET``
    (value is CFA+arg), ``REGISTER`` (in register arg), ``SAME_VALUE``, ``UNDEFINED``,
    ``EXPRESSION``/``VAL_EXPRESSION`` (the expression bytes are in ``expressions``).
    ``signal_frame``: the CIE's augmentation has "S" (``.cfi_signal_frame``): this code is
    entered by an interrupt/exception/signal, not by a call (DWARF 5 6.4.1, LSB 5.0 eh_frame).
    """

    pc: int
    fde_start: int
    fde_end: int
    cfa_reg: int
    cfa_offset: int
    cfa_expr: bool
    rules: dict[int, tuple[str, int]]
    ra_reg: int
    signal_frame: bool
    cfa_expression: bytes = b""
    expressions: dict[int, bytes] = field(default_factory=dict)


class CfiTable:
    """The FDEs of one ELF (addresses as linked; the caller removes the load bias)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.fdes: list[Any] = []
        self.source = ""
        self._decoded: dict[int, list[Any]] = {}
        self._load()

    def _load(self) -> None:
        try:
            from elftools.common.exceptions import ELFError, ELFParseError
            from elftools.dwarf.callframe import FDE
            from elftools.elf.elffile import ELFFile
        except ImportError:  # pragma: no cover - pyelftools is a dependency
            return
        try:
            with open(self.path, "rb") as f:
                elf = ELFFile(f)
                if not any(elf.get_section_by_name(n) for n in (".eh_frame", ".debug_frame")):
                    return
                dw = elf.get_dwarf_info(relocate_dwarf_sections=False)
                cls = _cfi_class()
                entries: list[Any] = []
                if dw.has_EH_CFI():
                    sec: Any = dw.eh_frame_sec
                    entries = list(cls(stream=sec.stream, size=sec.size, address=sec.address,
                                       base_structs=dw.structs, for_eh_frame=True).get_entries())
                    self.source = ".eh_frame"
                if dw.has_CFI():
                    sec = dw.debug_frame_sec
                    entries += list(cls(stream=sec.stream, size=sec.size, address=sec.address,
                                        base_structs=dw.structs).get_entries())
                    self.source = (self.source + " " if self.source else "") + ".debug_frame"
                fdes = []
                for e in entries:
                    if isinstance(e, FDE):
                        lo = e.header["initial_location"]
                        n = e.header["address_range"]
                        if n:
                            fdes.append((lo, lo + n, e))
                fdes.sort(key=lambda t: t[0])
                for lo, hi, e in fdes:
                    # force decoding now, while the file is open
                    self._decoded[len(self.fdes)] = e.get_decoded().table
                    self.starts.append(lo)
                    self.ends.append(hi)
                    self.fdes.append(e)
        except (OSError, ELFError, ELFParseError, ValueError, KeyError, AttributeError,
                AssertionError, IndexError, TypeError) as err:
            raise InputError(f"{self.path}: unreadable call-frame information: {err}") from err

    def __bool__(self) -> bool:
        return bool(self.starts)

    def row(self, pc: int) -> CfiRow | None:
        """The rules at ``pc`` (as linked), or None when no FDE covers it."""
        i = bisect_right(self.starts, pc) - 1
        if i < 0 or pc >= self.ends[i]:
            return None
        table = self._decoded[i]
        fde = self.fdes[i]
        best = None
        for r in table:
            if r["pc"] <= pc:
                best = r
            else:
                break
        if best is None:
            return None
        cfa = best["cfa"]
        rules: dict[int, tuple[str, int]] = {}
        exprs: dict[int, bytes] = {}
        for k, v in best.items():
            if isinstance(k, int):
                arg = v.arg if isinstance(v.arg, int) else 0
                rules[k] = (str(v.type), arg)
                if isinstance(v.arg, (list, bytes, bytearray)):
                    exprs[k] = bytes(v.arg)
        cie = fde.cie
        aug = cie.header.get("augmentation", b"") or b""
        return CfiRow(pc=pc, fde_start=self.starts[i], fde_end=self.ends[i],
                      cfa_reg=cfa.reg if cfa.reg is not None else -1,
                      cfa_offset=cfa.offset or 0, cfa_expr=cfa.expr is not None,
                      rules=rules, ra_reg=cie.header["return_address_register"],
                      signal_frame=_is_signal_frame(bytes(aug)),
                      cfa_expression=bytes(cfa.expr) if cfa.expr is not None else b"",
                      expressions=exprs)


def _is_signal_frame(aug: bytes) -> bool:
    """"S" in a CIE augmentation string: "zRS", "zS" (.eh_frame) or a bare "S" (.debug_frame).
    Only the GNU letters count, so e.g. "armcc+" never reads as a signal frame."""
    return b"S" in aug and (aug.startswith(b"z") or set(aug) <= set(b"S"))


def _cfi_class() -> Any:
    """pyelftools' CallFrameInfo, taught the CIE augmentation "S" without "z".

    gas writes ``.cfi_signal_frame`` into a ``.debug_frame`` CIE as the bare augmentation
    string "S" (no "z", no augmentation data); pyelftools 0.33 asserts on any string not
    starting with "z". "S" carries no data, so it parses as an empty augmentation; the
    string itself stays in the CIE header, where :meth:`CfiTable.row` reads the mark.
    """
    from elftools.dwarf.callframe import CallFrameInfo

    class SignalFrameAwareCFI(CallFrameInfo):  # type: ignore[misc]
        def _parse_cie_augmentation(self, header: Any, entry_structs: Any) -> Any:
            aug = header.get("augmentation") or b""
            if aug and not aug.startswith(b"z") and set(aug) <= set(b"S"):
                return (b"", {})
            return super()._parse_cie_augmentation(header, entry_structs)

    return SignalFrameAwareCFI


class ExpressionError(Exception):
    """A DWARF expression this evaluator does not handle (or a malformed one)."""


def _uleb(b: bytes, i: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        if i >= len(b):
            raise ExpressionError("truncated LEB128")
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def _sleb(b: bytes, i: int) -> tuple[int, int]:
    start = i
    v, i = _uleb(b, i)
    bits = 7 * (i - start)
    if b[i - 1] & 0x40:
        v -= 1 << bits
    return v, i


def eval_expression(expr: bytes, reg: Callable[[int], int], deref: Callable[[int], int],
                    word_size: int, *, push_cfa: int | None = None) -> int:
    """Evaluate a CFI DWARF expression (DWARF 5 2.5, 6.4.2) and return the top of the stack.

    Covers what entry stubs write with ``.cfi_escape``: ``DW_OP_breg0..31``/``bregx``,
    ``deref``, ``lit``/``const*``, ``plus``/``plus_uconst``/``minus``/``and``/``or``,
    ``dup``/``drop``/``over``/``swap``/``nop``. ``reg(n)`` gives DWARF register n (raises KeyError
    when unknown), ``deref(addr)`` reads one word. ``push_cfa``: the CFA, pushed first for
    register rules (``DW_CFA_expression``); None for the CFA's own expression.
    """
    mask = (1 << (8 * word_size)) - 1
    st: list[int] = [] if push_cfa is None else [push_cfa & mask]
    i = 0
    fixed = {0x08: (1, False), 0x09: (1, True), 0x0A: (2, False), 0x0B: (2, True),
             0x0C: (4, False), 0x0D: (4, True), 0x0E: (8, False), 0x0F: (8, True)}
    try:
        while i < len(expr):
            op = expr[i]
            i += 1
            if 0x70 <= op <= 0x8F:                      # DW_OP_bregN sleb
                off, i = _sleb(expr, i)
                st.append((reg(op - 0x70) + off) & mask)
            elif op == 0x92:                            # DW_OP_bregx uleb sleb
                r, i = _uleb(expr, i)
                off, i = _sleb(expr, i)
                st.append((reg(r) + off) & mask)
            elif 0x30 <= op <= 0x4F:                    # DW_OP_litN
                st.append(op - 0x30)
            elif op in fixed:                           # DW_OP_const{1,2,4,8}{u,s}
                n, signed = fixed[op]
                st.append(int.from_bytes(expr[i:i + n], "little", signed=signed) & mask)
                if len(expr[i:i + n]) != n:
                    raise ExpressionError("truncated constant")
                i += n
            elif op == 0x10:                            # DW_OP_constu
                v, i = _uleb(expr, i)
                st.append(v & mask)
            elif op == 0x11:                            # DW_OP_consts
                v, i = _sleb(expr, i)
                st.append(v & mask)
            elif op == 0x06:                            # DW_OP_deref
                st.append(deref(st.pop()) & mask)
            elif op == 0x23:                            # DW_OP_plus_uconst
                v, i = _uleb(expr, i)
                st.append((st.pop() + v) & mask)
            elif op in (0x22, 0x1C, 0x1A, 0x21):        # plus, minus, and, or
                b, a = st.pop(), st.pop()
                st.append({0x22: a + b, 0x1C: a - b, 0x1A: a & b, 0x21: a | b}[op] & mask)
            elif op == 0x12:                            # DW_OP_dup
                st.append(st[-1])
            elif op == 0x13:                            # DW_OP_drop
                st.pop()
            elif op == 0x14:                            # DW_OP_over
                st.append(st[-2])
            elif op == 0x16:                            # DW_OP_swap
                st[-1], st[-2] = st[-2], st[-1]
            elif op == 0x96:                            # DW_OP_nop
                pass
            else:
                raise ExpressionError(f"DWARF expression op {op:#x} not supported")
    except (IndexError, KeyError) as err:
        raise ExpressionError(f"cannot evaluate DWARF expression {expr.hex()}: {err!r}") from err
    if not st:
        raise ExpressionError("empty DWARF expression stack")
    return st[-1]


_tables: dict[tuple[str, int, int], CfiTable] = {}


def cfi_table(path: str) -> CfiTable:
    """The CFI table of ``path``, memoized while the file is unchanged."""
    try:
        st = os.stat(path)
        key = (path, st.st_mtime_ns, st.st_size)
    except OSError:
        key = (path, 0, 0)
    t = _tables.get(key)
    if t is None:
        t = CfiTable(path)
        _tables[key] = t
    return t
