"""JOS's ``mon_backtrace``, reproduced from outside the guest.

The JOS lab 1 backtrace walks the saved-EBP chain from the current frame and prints, per frame,
its EBP, the return EIP stored above it, the five words above that ("args", whatever the real
argument count), and ``debuginfo_eip(eip)`` (STABS). It does not know about interrupt
frames: through a trap it continues with the trap handler's saved EBP, which is the
interrupted code's, skipping the interrupted function itself. :func:`jos_walk` does exactly
the same so ``kd bt --format jos`` matches the kernel's own output line for line; use
``kd bt`` (full format) for the correct story.

One refinement: stopped at a function's first instruction (``break *func``) or right after
its ``push %ebp``, the frame does not exist yet; the walk then starts from the frame the
function is about to build (its EBP-to-be is ESP-4 or ESP), which is what the kernel's
``read_ebp()`` inside that function will see.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdiag.errors import KdiagError
from kdiag.symbols.location import Location
from kdiag.symbols.stabs import EipDebugInfo
from kdiag.symbols.symbolizer import Symbolizer
from kdiag.target.base import Target
from kdiag.unwind.memory import StackMemory, Unreadable
from kdiag.unwind.unwinder import DEFAULT_LIMIT, word_size_of
from kdiag.x86.state import CpuState

JOS_ARGS = 5


@dataclass(frozen=True, slots=True)
class JosRow:
    ebp: int
    eip: int
    args: tuple[int, ...]
    info: EipDebugInfo | None  # from STABS (the kernel's own answer)
    location: Location | None  # from DWARF / the symbol table when there are no STABS


@dataclass(frozen=True)
class JosTrace:
    rows: tuple[JosRow, ...]
    stop_reason: str  # "" when the chain ended at EBP 0, as JOS's loop does
    word_size: int


def jos_walk(target: Target, symbolizer: Symbolizer, *, state: CpuState | None = None,
             limit: int = DEFAULT_LIMIT, nargs: int = JOS_ARGS) -> JosTrace:
    st = state if state is not None else target.state()
    ws = word_size_of(st)
    mask = (1 << (8 * ws)) - 1
    mem = StackMemory(target, ws)
    pc = st.gpr.get("rip", 0) & mask
    sp = st.gpr.get("rsp", 0) & mask
    ebp = st.gpr.get("rbp", 0) & mask
    rows: list[JosRow] = []
    stop = ""

    def row(frame_ebp: int, eip: int, args_at: int) -> JosRow:
        try:
            args = tuple(mem.words(args_at, nargs))
        except Unreadable:
            args = ()
        info = symbolizer.stabs_info(eip) if symbolizer.has_stabs() else None
        loc = None if info is not None else _lookup(symbolizer, eip)
        return JosRow(frame_ebp, eip, args, info, loc)

    try:
        loc = _lookup(symbolizer, pc)
        start = loc.function_start if loc is not None else None
        if start is not None and start <= pc <= start + 5:
            code = mem.read(start, 8)
            skip = 4 if code[:4] in (b"\xf3\x0f\x1e\xfa", b"\xf3\x0f\x1e\xfb") else 0
            if pc <= start + skip:  # nothing pushed: the frame-to-be is at sp - w
                eip = mem.word(sp)
                rows.append(row(sp - ws, eip, sp + ws))
            elif code[skip:skip + 1] == b"\x55" and pc == start + skip + 1:
                ebp = sp  # pushed %ebp, not yet mov %esp,%ebp
        seen: set[int] = set()
        while ebp != 0:
            if len(rows) >= limit:
                stop = f"limit of {limit} frames reached"
                break
            if ebp in seen:
                stop = f"loop in the frame-pointer chain at {ebp:#x}"
                break
            seen.add(ebp)
            saved, eip = mem.words(ebp, 2)
            rows.append(row(ebp, eip, ebp + 2 * ws))
            ebp = saved
    except Unreadable as err:
        stop = f"{err}: stopped"
    return JosTrace(tuple(rows), stop, ws)


def _lookup(symbolizer: Symbolizer, addr: int) -> Location | None:
    try:
        return symbolizer.lookup(addr)
    except KdiagError:
        return None
