"""The unwinder: CFI, frame pointers, and the step across interrupt and exception frames.

``unwind(target, symbolizer)`` starts from the CPU's registers and repeats one step per frame:

1. **entry stub** (:mod:`kdiag.unwind.stubs`): the pc lies in an interrupt/exception entry
   stub or a CFI signal frame -> find the hardware frame on the stack, continue at the
   interrupted instruction with the interrupted stack pointer (and the registers the stub
   saved, when its layout is known), and mark the boundary;
2. **CFI** (``.eh_frame``/``.debug_frame`` rows via :mod:`kdiag.unwind.cfi`): CFA = reg +
   offset, the return address and callee-saved registers from their rules - works for code
   built with ``-fomit-frame-pointer``;
3. **frame pointer**: the EBP/RBP chain (``[fp]`` = caller's fp, ``[fp + w]`` = return
   address), with a prologue/epilogue check for an exact pc at ``push %ebp`` / ``ret``.

It is bounded: at most ``limit`` frames; a repeated (pc, sp), a stack pointer that does not
grow outside an interrupt step, a return address 0, a frame pointer 0 or an unreadable word
ends it with a ``stop_reason`` - it never raises for a bad stack and never loops.
"""

from __future__ import annotations

import logging

from kdiag.errors import KdiagError
from kdiag.symbols.location import Location
from kdiag.symbols.symbolizer import Symbolizer
from kdiag.target.base import Target
from kdiag.unwind.cfi import (
    I386_REGS,
    X86_64_REGS,
    CfiRow,
    CfiTable,
    ExpressionError,
    cfi_table,
    eval_expression,
)
from kdiag.unwind.frames import Backtrace, Frame, InterruptBoundary
from kdiag.unwind.memory import StackMemory, Unreadable
from kdiag.unwind.stubs import GENERIC, StubLayout, find_hardware_frame, stub_match
from kdiag.x86.exceptions import mnemonic
from kdiag.x86.state import CpuMode, CpuState

log = logging.getLogger(__name__)

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
        "r12", "r13", "r14", "r15", "rip")
DEFAULT_LIMIT = 64


class _Stop(Exception):
    pass


def word_size_of(state: CpuState) -> int:
    """8 in 64-bit mode, else 4 (a 32-bit guest under qemu-system-x86_64 included)."""
    return 8 if state.mode == CpuMode.LONG else 4


class Unwinder:
    """One unwind over ``target`` with ``symbolizer``; see :func:`unwind`."""

    def __init__(self, target: Target, symbolizer: Symbolizer, *, state: CpuState | None = None,
                 use_cfi: bool = True, limit: int = DEFAULT_LIMIT) -> None:
        self.target = target
        self.sym = symbolizer
        self.state = state if state is not None else target.state()
        self.ws = word_size_of(self.state)
        self.mask = (1 << (8 * self.ws)) - 1
        self.mem = StackMemory(target, self.ws)
        self.use_cfi = use_cfi
        self.limit = max(1, limit)
        self.regnames = X86_64_REGS if self.ws == 8 else I386_REGS
        self.gdt_limit = self.state.gdtr.limit if self.state.gdtr else None
        self.notes: list[str] = []
        self._cfi: dict[str, CfiTable | None | bool] = {}

    # -- helpers ---------------------------------------------------------------------------------
    def _cfi_row(self, pc: int) -> CfiRow | None:
        if not self.use_cfi:
            return None
        for idx, bias in self.sym.elfs:
            if not idx.contains(pc - bias):
                continue
            key = idx.path
            table = self._cfi.get(key, False)
            if table is False:
                try:
                    table = cfi_table(idx.path)
                except KdiagError as err:
                    self.notes.append(str(err))
                    table = None
                self._cfi[key] = table
            if isinstance(table, CfiTable) and table:
                row = table.row(pc - bias)
                if row is not None:
                    return row
        return None

    def _lookup(self, pc: int) -> Location | None:
        try:
            return self.sym.lookup(pc)
        except KdiagError:
            return None

    def _is_code(self, ip: int, cpl: int) -> bool:
        if ip == 0:
            return False
        if self.ws == 4 and ip > 0xFFFFFFFF:
            return False
        if self.ws == 8 and not (ip < 1 << 47 or ip >= 0xFFFF800000000000):
            return False
        if self._lookup(ip) is not None:
            return True
        return cpl == 3  # user code the symbolizer may not know

    def _stub_of(self, loc: Location | None, pc: int) -> tuple[StubLayout, str] | None:
        """The entry-stub layout of the code at ``pc`` (the lookup address: the pc itself
        when exact, else pc - 1) and how it was recognized, or None."""
        if loc is not None:
            m = stub_match(loc.symbol)
            if m is not None:
                return m
        row = self._cfi_row(pc)
        if row is not None and row.signal_frame:
            return GENERIC, "cfi-signal-frame"
        return None

    def _signal_frame_rules(self, row: CfiRow, regs: dict[str, int], known: set[str]
                            ) -> tuple[int, dict[str, int]] | None:
        """From a signal frame's CFI row: the stack address of the saved instruction pointer
        (the hardware frame's first slot) and the registers the rules restore; None when the
        rules do not locate it (e.g. SYSCALL's entry, where the user RIP is in RCX)."""
        names = self.regnames

        def reg(n: int) -> int:
            name = names.get(n)
            if name is None or name not in known:
                raise KeyError(f"DWARF register {n} unknown here")
            return regs[name]

        try:
            if row.cfa_expr:
                cfa = eval_expression(row.cfa_expression, reg, self.mem.word, self.ws)
            else:
                cfa = (reg(row.cfa_reg) + row.cfa_offset) & self.mask

            def where(r: int, kind: str, arg: int) -> int | None:
                if kind == "OFFSET":
                    return (cfa + arg) & self.mask
                if kind == "EXPRESSION":
                    return eval_expression(row.expressions[r], reg, self.mem.word, self.ws,
                                           push_cfa=cfa)
                return None

            ra = row.rules.get(row.ra_reg)
            slot = where(row.ra_reg, *ra) if ra is not None else None
            if slot is None:
                return None
            out: dict[str, int] = {}
            for r, (kind, arg) in row.rules.items():
                name = names.get(r)
                if name is None or name in ("rip", "rsp"):
                    continue
                addr = where(r, kind, arg)
                if addr is not None:
                    out[name] = self.mem.word(addr)
                elif kind == "VAL_OFFSET":
                    out[name] = (cfa + arg) & self.mask
                elif kind == "VAL_EXPRESSION":
                    out[name] = eval_expression(row.expressions[r], reg, self.mem.word, self.ws,
                                                push_cfa=cfa)
                elif kind == "REGISTER" and names.get(arg) in known:
                    out[name] = regs[names[arg]]
            return slot, out
        except (ExpressionError, KeyError, Unreadable) as err:
            log.debug("signal-frame CFI at %#x not usable: %s", row.pc, err)
            return None

    def _trapped_after(self, ip: int, vector: int | None) -> bool:
        """Whether the instruction before ``ip`` raised ``vector`` as a trap (SDM 6.5):
        ``int3`` (cc), ``int imm8`` (cd NN), ``into`` (ce), ``int1`` (f1), ``syscall``."""
        if vector is None:
            return False
        before = self._code(ip - 2, 2)
        if len(before) != 2:
            return False
        if vector == 3 and before[1] == 0xCC:
            return True
        if before[0] == 0xCD and before[1] == vector:
            return True
        if vector == 4 and before[1] == 0xCE or vector == 1 and before[1] == 0xF1:
            return True
        return vector == 0x100 and before == b"\x0f\x05"

    def _code(self, addr: int, n: int) -> bytes:
        try:
            return self.mem.read(addr, n)
        except Unreadable:
            return b""

    # -- the walk --------------------------------------------------------------------------------
    def run(self) -> Backtrace:
        st = self.state
        regs = {name: st.gpr.get(name, 0) & self.mask for name in GPRS}
        regs_known = set(regs)
        cpl = st.effective_cpl
        frames: list[Frame] = []
        seen: set[tuple[int, int]] = set()
        boundary: InterruptBoundary | None = None
        method = "regs"
        stop = ""
        level = 0
        while True:
            pc, sp = regs["rip"], regs["rsp"]
            exact = level == 0 or (boundary is not None and not boundary.after_instruction)
            loc = self._lookup(pc if exact else pc - 1)
            stub = self._stub_of(loc, pc if exact else pc - 1)
            fp = regs.get("rbp") if "rbp" in regs_known else None
            frames.append(Frame(level=level, pc=pc, sp=sp, fp=fp, location=loc, method=method,
                                args=self._args(loc, pc, fp, exact), boundary=boundary,
                                is_entry_stub=stub is not None, cpl=cpl))
            if len(frames) >= self.limit:
                stop = f"limit of {self.limit} frames reached"
                break
            if (pc, sp) in seen:
                stop = f"loop in the frame chain at pc {pc:#x} sp {sp:#x}"
                break
            seen.add((pc, sp))
            try:
                new, method, boundary, cpl = self._step(regs, regs_known, loc, stub, exact, cpl)
            except Unreadable as err:
                stop = f"{err}: stopped"
                break
            except _Stop as why:
                stop = str(why)
                break
            regs_known = set(new)
            regs = {**regs, **new}
            if regs["rip"] == 0:
                stop = "end of the call chain (return address 0)"
                break
            level += 1
        return Backtrace(tuple(frames), stop, self.ws, tuple(self.notes))

    def _args(self, loc: Location | None, pc: int, fp: int | None, exact: bool) -> tuple[int, ...]:
        """STABS argument values: ``narg`` words at fp + 2w (32-bit frame-pointer code)."""
        if self.ws != 4 or loc is None or not loc.narg or fp is None or fp == 0:
            return ()
        if exact and loc.function_start is not None and pc <= loc.function_start + 3:
            return ()  # in the prologue: the frame is not set up yet
        try:
            return tuple(self.mem.words(fp + 2 * self.ws, min(loc.narg, 16)))
        except Unreadable:
            return ()

    def _step(self, regs: dict[str, int], known: set[str], loc: Location | None,
              stub: tuple[StubLayout, str] | None, exact: bool, cpl: int
              ) -> tuple[dict[str, int], str, InterruptBoundary | None, int]:
        ws = self.ws
        pc, sp = regs["rip"], regs["rsp"]
        # 1. across an interrupt / exception frame
        if stub is not None:
            layout, how = stub
            hw = None
            cfi_regs: dict[str, int] = {}
            row = self._cfi_row(pc if exact else pc - 1)
            if row is not None and row.signal_frame:
                rules = self._signal_frame_rules(row, regs, known)
                if rules is not None:
                    slot, cfi_regs = rules
                    hw = find_hardware_frame(self.mem, slot, handler_cpl=cpl,
                                             is_code=self._is_code, layout=layout,
                                             gdt_limit=self.gdt_limit, max_words=0)
                    if hw is not None and hw.ip_addr != slot:
                        hw = None
            found_by = "cfi" if hw is not None else "scan"
            if hw is None:
                cfi_regs = {}
                hw = find_hardware_frame(self.mem, sp, handler_cpl=cpl, is_code=self._is_code,
                                         layout=layout, gdt_limit=self.gdt_limit)
            if hw is not None:
                new = {"rip": hw.ip & self.mask, "rsp": hw.sp & self.mask}
                for name, off in layout.saved_regs.items():
                    try:
                        new[name] = self.mem.word(hw.ip_addr + off * ws)
                    except Unreadable:
                        pass
                new.update(cfi_regs)
                if "rbp" not in new and "rbp" in known:
                    fp = regs["rbp"]
                    try:  # a frame record linking to the interrupted pc: its saved fp
                        if fp and self.mem.word(fp + ws) == hw.ip:
                            new["rbp"] = self.mem.word(fp)
                        else:
                            new["rbp"] = fp
                    except Unreadable:
                        new["rbp"] = fp
                sym = loc.symbol if loc else None
                after = self._trapped_after(hw.ip, hw.vector)
                b = InterruptBoundary(
                    vector=hw.vector, mnemonic=mnemonic(hw.vector) if hw.vector is not None
                    and hw.vector < 256 else None, error_code=hw.error_code,
                    from_cpl=hw.cs & 3, to_cpl=cpl, frame_address=hw.ip_addr, stub=sym,
                    stack_switch=hw.stack_switch, after_instruction=after, recognized_by=how,
                    found_by=found_by)
                return new, "interrupt", b, hw.cs & 3
            self.notes.append(f"frame at {pc:#x} is in entry stub "
                              f"{loc.symbol if loc else '?'} but no hardware frame was found "
                              "above its stack pointer")
        # 2. CFI
        row = self._cfi_row(pc if exact else pc - 1)
        if row is not None and not row.cfa_expr:
            try:
                res = self._cfi_step(row, regs, known)
            except _CfiUnusable as why:
                log.debug("CFI unusable at %#x: %s", pc, why)
                res = None
            if res is not None:
                return res, "cfi", None, cpl
        # 3. frame pointer (with prologue / epilogue analysis at an exact pc)
        if exact and loc is not None and loc.function_start is not None:
            start = loc.function_start
            code = self._code(start, 8)
            skip = 4 if code[:4] in (b"\xf3\x0f\x1e\xfa", b"\xf3\x0f\x1e\xfb") else 0
            push_at = start + skip
            if pc <= push_at:  # at the entry: nothing pushed yet
                ra = self.mem.word(sp)
                return ({"rip": ra, "rsp": sp + ws, "rbp": regs["rbp"]}, "fp-prologue", None,
                        cpl)
            if code[skip:skip + 1] == b"\x55" and pc == push_at + 1:  # after push %ebp
                ra = self.mem.word(sp + ws)
                return ({"rip": ra, "rsp": sp + 2 * ws, "rbp": self.mem.word(sp)},
                        "fp-prologue", None, cpl)
            if self._code(pc, 1) == b"\xc3":  # at ret: the frame is already torn down
                ra = self.mem.word(sp)
                return ({"rip": ra, "rsp": sp + ws, "rbp": regs["rbp"]}, "fp-prologue", None,
                        cpl)
        if "rbp" not in known:
            raise _Stop("no frame pointer and no CFI for this frame")
        fp = regs["rbp"]
        if fp == 0:
            raise _Stop("end of the frame-pointer chain (frame pointer 0)")
        if fp < sp:
            raise _Stop(f"frame pointer {fp:#x} below the stack pointer {sp:#x}: "
                        "not a frame-pointer frame")
        if fp % ws:
            raise _Stop(f"misaligned frame pointer {fp:#x}")
        new_fp, ra = self.mem.words(fp, 2)
        new = {"rip": ra, "rsp": (fp + 2 * ws) & self.mask, "rbp": new_fp}
        return new, "fp", None, cpl

    def _cfi_step(self, row: CfiRow, regs: dict[str, int], known: set[str]) -> dict[str, int]:
        names = self.regnames
        base = names.get(row.cfa_reg)
        if base is None or base not in known:
            raise _CfiUnusable(f"CFA register {row.cfa_reg} unknown")
        cfa = (regs[base] + row.cfa_offset) & self.mask
        if cfa <= regs["rsp"]:
            raise _CfiUnusable("CFA not above the stack pointer")
        new: dict[str, int] = {}
        ra_rule = row.rules.get(row.ra_reg)
        if ra_rule is None or ra_rule[0] == "UNDEFINED":
            raise _Stop("outermost frame (CFI: return address undefined)")
        for reg, (kind, arg) in row.rules.items():
            name = names.get(reg)
            if name is None:
                continue
            if kind == "OFFSET":
                new[name] = self.mem.word(cfa + arg)
            elif kind == "VAL_OFFSET":
                new[name] = (cfa + arg) & self.mask
            elif kind == "REGISTER":
                src = names.get(arg)
                if src is not None and src in known:
                    new[name] = regs[src]
            elif kind == "SAME_VALUE" and name in known:
                new[name] = regs[name]
        if "rip" not in new:  # the return-address column maps to "rip" on both ABIs
            raise _CfiUnusable("return address rule not understood")
        new["rsp"] = cfa
        # callee-saved registers without a rule keep their value (System V ABI)
        callee = ("rbx", "rbp", "r12", "r13", "r14", "r15") if self.ws == 8 else \
            ("rbx", "rbp", "rsi", "rdi")
        for name in callee:
            if name not in new and name in known:
                new[name] = regs[name]
        return new


class _CfiUnusable(Exception):
    pass


def unwind(target: Target, symbolizer: Symbolizer, *, state: CpuState | None = None,
           limit: int = DEFAULT_LIMIT, use_cfi: bool = True) -> Backtrace:
    """Unwind the stopped CPU of ``target``; see the module docstring."""
    return Unwinder(target, symbolizer, state=state, use_cfi=use_cfi, limit=limit).run()

