"""The values an unwind produces: :class:`Frame`, :class:`InterruptBoundary`, :class:`Backtrace`.

A backtrace is a list of frames, innermost first. Frame 0 is where the CPU stopped; every
other frame's ``pc`` is a return address (its ``location`` is looked up at ``pc - 1`` so the
line is the call's), except a frame entered through an interrupt or exception, whose ``pc``
is the interrupted instruction itself: that frame carries the ``boundary`` that renderers
print above it (``--- interrupt 14 (#PF) from CPL3 ---``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdiag.symbols.location import Location


@dataclass(frozen=True, slots=True)
class InterruptBoundary:
    """The hardware frame stepped over to reach the interrupted code (SDM Vol. 3A 6.12.1).

    ``vector``/``error_code`` are None where the entry stub's layout does not say;
    ``frame_address`` is where the saved instruction pointer lies on the stack.
    """

    vector: int | None
    mnemonic: str | None
    error_code: int | None
    from_cpl: int
    to_cpl: int
    frame_address: int
    stub: str | None
    stack_switch: bool
    after_instruction: bool = False  # saved IP follows the INT n / INT3 / SYSCALL that trapped
    recognized_by: str | None = None  # "symbol", "declared" or "cfi-signal-frame"
    found_by: str | None = None       # "cfi" (signal-frame rules) or "scan" (by its shape)

    def text(self) -> str:
        """``--- interrupt 14 (#PF) from CPL3 ---`` (the error code is in ``error_code``)."""
        if self.vector == 0x100:
            return f"--- syscall from CPL{self.from_cpl} ---"
        if self.vector is None:
            return f"--- interrupt from CPL{self.from_cpl} ---"
        label = f" ({self.mnemonic})" if self.mnemonic else ""
        return f"--- interrupt {self.vector}{label} from CPL{self.from_cpl} ---"


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame. ``method`` says how it was found: ``"regs"`` (frame 0), ``"cfi"``,
    ``"fp"`` (frame-pointer chain), ``"fp-prologue"`` (prologue/epilogue analysis) or
    ``"interrupt"`` (stepped over a hardware frame)."""

    level: int
    pc: int
    sp: int
    fp: int | None
    location: Location | None
    method: str
    args: tuple[int, ...] = ()
    boundary: InterruptBoundary | None = None
    is_entry_stub: bool = False
    cpl: int = 0

    @property
    def exact_pc(self) -> bool:
        """True when ``pc`` is the instruction itself (frame 0, code interrupted by a fault
        or an IRQ); False for return addresses and for the IP saved after INT n / INT3."""
        if self.level == 0:
            return True
        return self.boundary is not None and not self.boundary.after_instruction

    @property
    def offset(self) -> int | None:
        loc = self.location
        if loc is None or loc.function_start is None:
            return None
        return self.pc - loc.function_start


@dataclass(frozen=True)
class Backtrace:
    frames: tuple[Frame, ...]
    stop_reason: str
    word_size: int
    notes: tuple[str, ...] = field(default_factory=tuple)
