"""Interrupt/exception entry stubs and the hardware frame they sit on.

A frame "belongs to an entry stub" when its pc lies in a symbol of the stub list (defaults
below, extended with :func:`register_stub` or ``KDIAG_ENTRY_STUBS=name,name``), in a symbol
matching :data:`STUB_PATTERNS`, or in code whose CFI is marked as a signal frame (CIE
augmentation ``S``, ``.cfi_signal_frame``). From such a frame the unwinder steps across the
hardware frame the CPU pushed (Intel SDM Vol. 3A 6.12.1 and 6.14.2):

- 32-bit, no privilege change: ``EIP, CS, EFLAGS`` (the interrupted ESP is just above);
- 32-bit, from CPL3 to CPL0:   ``EIP, CS, EFLAGS, ESP, SS``;
- 64-bit, always:              ``RIP, CS, RFLAGS, RSP, SS``;
with the error code (for the vectors that have one) and, in most hobby kernels (JOS, xv6,
the bundled kernels), the vector pushed by the stub right below it.

Where the stub's CFI is a signal frame whose rules locate the saved instruction pointer, the
frame is read exactly there (and the registers the rules describe are restored from it);
otherwise it is found by its shape, scanning up from the stub frame's stack pointer: a code
address, then a plausible CS selector (RPL 0 or 3, index inside the GDT), then a plausible
EFLAGS (bit 1 set; bits 3, 5, 15 and 22-31 clear). A :class:`StubLayout` may give the offsets
of registers the stub saved (relative to the saved-IP slot, in words) so the interrupted frame
pointer is exact; without one the frame pointer carries through the stub, which is right for
stubs that leave it alone (JOS ``_alltraps``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from kdiag.unwind.memory import StackMemory, Unreadable


@dataclass(frozen=True)
class StubLayout:
    """Where a stub keeps things, in words relative to the saved-IP slot of the hw frame."""

    vector: int | None = -2
    error: int | None = -1
    saved_regs: dict[str, int] = field(default_factory=dict)  # "rbp" -> word offset


# JOS _alltraps: pushal (edi esi ebp oesp ebx edx ecx eax), es, ds, trapno, err, eip ...
JOS_LAYOUT = StubLayout(saved_regs={"rdi": -12, "rsi": -11, "rbp": -10, "rbx": -8, "rdx": -7,
                                    "rcx": -6, "rax": -5})
# the bundled x86-64 kernel (kernel/x86_64/isr.S, percpu.h struct trapframe): r15..rax, vector,
# error, rip ...; TF_RBP = 64, TF_RIP = 136
KDIAG64_LAYOUT = StubLayout(saved_regs={"r15": -17, "r14": -16, "r13": -15, "r12": -14,
                                        "r11": -13, "r10": -12, "r9": -11, "r8": -10,
                                        "rbp": -9, "rdi": -8, "rsi": -7, "rdx": -6, "rcx": -5,
                                        "rbx": -4, "rax": -3})
GENERIC = StubLayout()

_STUBS: dict[str, StubLayout] = {
    "_alltraps": JOS_LAYOUT, "alltraps": JOS_LAYOUT,
    "isr_common": KDIAG64_LAYOUT, "syscall_entry": KDIAG64_LAYOUT, "isr_stubs": KDIAG64_LAYOUT,
    "isr_common_stub": GENERIC, "irq_common_stub": GENERIC, "interrupt_common": GENERIC,
    "common_interrupt": GENERIC, "exception_common": GENERIC, "trap_common": GENERIC,
    "isr_stub_common": GENERIC, "int_common": GENERIC, "trapret": GENERIC,
}
STUB_PATTERNS = [re.compile(p) for p in (
    r"^th_[a-z0-9_]+$",               # the bundled i386 kernel's per-vector stubs
    r"^(isr|irq|vector|trap|exc|int)_?(stub_?)?\d+$",
    r"^(isr|irq)_stub_\w+$",
    r"^asm_(exc|sysvec|common)_\w+$",  # Linux idtentry names
)]


_DECLARED: set[str] = set()


def register_stub(name: str, layout: StubLayout | None = None) -> None:
    """Declare ``name`` an entry stub (optionally with its save layout)."""
    _STUBS[name] = layout or GENERIC
    _DECLARED.add(name)


def stub_match(symbol: str | None) -> tuple[StubLayout, str] | None:
    """``(layout, how)`` if ``symbol`` is an entry stub, else None. ``how`` is ``"declared"``
    (:func:`register_stub` or ``KDIAG_ENTRY_STUBS``) or ``"symbol"`` (the built-in list and
    :data:`STUB_PATTERNS`)."""
    if not symbol:
        return None
    env = os.environ.get("KDIAG_ENTRY_STUBS", "")
    if symbol in _DECLARED or env and symbol in {s.strip() for s in env.split(",")}:
        return _STUBS.get(symbol, GENERIC), "declared"
    if symbol in _STUBS:
        return _STUBS[symbol], "symbol"
    if any(p.match(symbol) for p in STUB_PATTERNS):
        return GENERIC, "symbol"
    return None


def stub_layout(symbol: str | None) -> StubLayout | None:
    """The layout if ``symbol`` is an entry stub, else None."""
    m = stub_match(symbol)
    return m[0] if m is not None else None


def known_stubs() -> list[str]:
    return sorted(_STUBS)


@dataclass(frozen=True)
class HardwareFrame:
    ip_addr: int            # stack address of the saved IP
    ip: int
    cs: int
    flags: int
    sp: int                 # interrupted stack pointer
    ss: int | None
    stack_switch: bool
    vector: int | None
    error_code: int | None


def _plausible_flags(v: int) -> bool:
    return bool(v & 0x2) and not v & 0x8028 and not v >> 22


def _plausible_cs(v: int, gdt_limit: int | None) -> bool:
    if v > 0xFFFF or v & 0xFFFC == 0 or v & 4:  # null or LDT selector
        return False
    if v & 3 not in (0, 3):
        return False
    return gdt_limit is None or (v | 7) <= gdt_limit


def find_hardware_frame(mem: StackMemory, sp: int, *, handler_cpl: int, is_code: object,
                        layout: StubLayout, gdt_limit: int | None = None,
                        max_words: int = 64) -> HardwareFrame | None:
    """Scan up from ``sp`` for the hardware frame; None when nothing plausible is there.

    ``is_code(ip, cpl) -> bool`` tells whether an address is code (known to a symbolizer,
    or any canonical address for CPL3 code when no user ELF is loaded).
    """
    ws = mem.ws
    try:
        words = mem.words(sp, max_words + 5)
    except Unreadable:
        words = []
        for i in range(max_words + 5):
            try:
                words.append(mem.word(sp + i * ws))
            except Unreadable:
                break
    for i in range(len(words) - 2):
        ip, cs, flags = words[i], words[i + 1], words[i + 2]
        if not _plausible_cs(cs, gdt_limit) or not _plausible_flags(flags):
            continue
        cpl = cs & 3
        if not is_code(ip, cpl):  # type: ignore[operator]
            continue
        ip_addr = sp + i * ws
        switch = ws == 8 or cpl != handler_cpl
        if switch:
            if i + 4 >= len(words):
                continue
            isp, ss = words[i + 3], words[i + 4]
            if ws == 8 and (ss > 0xFFFF or (cpl == 3 and ss & 3 != 3)):
                continue
            if ws == 4 and (ss > 0xFFFF or ss & 3 != cpl or ss & 0xFFFC == 0):
                continue
        else:
            isp, ss = ip_addr + 3 * ws, None
        vector = error = None
        if layout.vector is not None:
            try:
                v = mem.word(ip_addr + layout.vector * ws)
            except Unreadable:
                v = -1
            if 0 <= v < 256 or v == 0x100:
                vector = v
        if vector is not None and layout.error is not None:
            from kdiag.x86.exceptions import has_error_code

            if has_error_code(vector):
                try:
                    error = mem.word(ip_addr + layout.error * ws)
                except Unreadable:
                    error = None
        return HardwareFrame(ip_addr, ip, cs, flags, isp, ss, switch and cpl != handler_cpl,
                             vector, error)
    return None
