"""``kd bt``: kdiag's backtrace inside gdb (through interrupt frames; JOS format on request)."""

from __future__ import annotations

import argparse
import os
from typing import Any

import gdb  # type: ignore[import-not-found]

from gdbext.common import Context, KdCommand, int_arg
from kdiag.render.reports import Report


def _gdb_elfs() -> list[str]:
    """The files gdb has loaded (``file``, ``add-symbol-file``) that exist on disk."""
    out = []
    for obj in gdb.objfiles():
        name = getattr(obj, "filename", None)
        if name and os.path.isfile(name) and name not in out:
            out.append(name)
    return out


class KdBt(KdCommand):
    """Backtrace through interrupt and exception frames, with CFI, frame pointers and STABS.

Usage: kd bt [--format full|jos] [--elf FILE[@BIAS]]... [--stub SYMBOL]... [--no-cfi] [--json] [N]

Unwinds the stopped CPU (the newest frame's registers, not gdb's selected frame) with
kdiag's own unwinder and symbolizes each frame with the ELFs gdb has loaded plus any --elf:
  - CFI (.eh_frame / .debug_frame) where the code has it (-fomit-frame-pointer code too),
    else the EBP/RBP chain, with prologue/epilogue checks at the stop address;
  - at an interrupt or exception entry stub (_alltraps, isr_common, ..., a name in
    $KDIAG_ENTRY_STUBS, or code whose CFI is a signal frame: .cfi_signal_frame) it reads
    the hardware frame (error code or not; 32-bit with or without a stack switch; 64-bit
    SS:RSP) - exactly where the signal frame's CFI rules put it, else found by its shape -
    and continues in the interrupted code, where gdb's `bt` stops for stubs without CFI:
        --- interrupt 14 (#PF) from CPL3 ---
  - STABS kernels (JOS): function, file:line and the argument values (N_PSYM count).
It ends with the reason it stopped: end of chain, N frames, a loop, unreadable memory.

--format jos prints exactly what JOS lab 1's mon_backtrace prints (naive EBP walk, five
"args", debuginfo_eip lines), so it can be compared with the kernel's own output.

Options:
  N                 at most N frames (default 64)
  --elf FILE[@BIAS] another ELF, loaded BIAS bytes above its link address (user programs)
  --stub SYMBOL     treat SYMBOL as an interrupt/exception entry stub (for this session;
                    also $KDIAG_ENTRY_STUBS=a,b)
  --no-cfi          frame pointers and interrupt frames only
  --json            {"frames":[{"level","pc","sp","symbol","offset","file","line",
                    "inlined_into","method","args","boundary":{"vector","error_code",
                    "from_cpl","to_cpl","stub","recognized_by","found_by",...}}],
                    "stop_reason"}

Examples:
  kd bt
  kd bt 10
  kd bt --format jos
  kd bt --elf user/hello.elf@0x400000"""

    name = "bt"
    json_option = True

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--format", choices=("full", "jos"), default="full")
        parser.add_argument("--elf", action="append", default=[], metavar="FILE[@BIAS]")
        parser.add_argument("--no-cfi", action="store_true")
        parser.add_argument("--stub", action="append", default=[], metavar="SYMBOL")
        parser.add_argument("limit", nargs="?", type=int_arg, default=64, metavar="N")

    def run(self, args: argparse.Namespace, ctx: Context) -> Any:
        from kdiag.errors import UsageError
        from kdiag.render import backtrace as render
        from kdiag.symbols.symbolizer import symbolizer_for
        from kdiag.unwind import jos_walk, register_stub, unwind

        for name in args.stub:
            register_stub(name)
        specs = _gdb_elfs() + list(args.elf)
        if not specs:
            raise UsageError("no ELF to symbolize with: load one with `file KERNEL.elf` "
                             "or pass --elf FILE")
        sym = symbolizer_for(specs)
        target = ctx.target()
        if args.format == "jos":
            trace = jos_walk(target, sym, limit=args.limit)
            return Report(render.jos_text(trace), render.jos_json(trace))
        bt = unwind(target, sym, limit=args.limit, use_cfi=not args.no_cfi)
        return Report(render.to_text(bt), render.to_json(bt))


def register() -> None:
    KdBt()
