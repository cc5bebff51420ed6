"""``kdiag bt``: backtrace of a stopped CPU from a core dump (offline) or a live QEMU (QMP)."""

from __future__ import annotations

import argparse
import json
import sys

from kdiag.commands._target import add_target_arguments, open_target, parse_int

NAME = "bt"
HELP = "backtrace through interrupt/exception frames (CFI, frame pointers, STABS/JOS format)"
DESCRIPTION = """\
Unwind the stack of the stopped CPU and symbolize every frame with the given ELFs (DWARF line
tables and inlined calls, or STABS). The unwinder uses CFI (.eh_frame/.debug_frame) where the
code has it, frame pointers elsewhere, and steps across interrupt and exception frames into
the interrupted code - also from user mode (CPL3) into the kernel - marking each boundary:

  --- interrupt 14 (#PF) from CPL3 ---

Entry stubs are recognized by name (_alltraps, isr_common, th_*, isr<N>, ...), by a CFI
signal-frame mark (.cfi_signal_frame), or because you declared them: --stub SYMBOL or
KDIAG_ENTRY_STUBS=a,b.

It stops, with the reason on the last line, at the end of the chain, after N frames, at a
loop or at unreadable memory.

--format jos prints JOS lab 1's mon_backtrace output exactly (naive EBP walk, five args,
STABS debuginfo_eip lines), for comparing with a JOS-style kernel's own backtrace.

ELFs: --elf FILE, or --elf FILE@BIAS for code loaded BIAS bytes above its link address.

examples:
  kdiag bt --core dump.elf --elf kernel/build/kernel-x86_64.elf
  kdiag bt --core dump.elf --elf kernel/build/kernel-i386.elf --format jos
  kdiag bt --qmp run/qmp.sock --elf kernel.elf --elf user.elf@0x400000 20 --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--elf", action="append", default=[], metavar="FILE[@BIAS]",
                        help="symbolize with this ELF (repeatable)")
    parser.add_argument("--format", choices=("full", "jos"), default="full",
                        help="full (default) or jos (JOS mon_backtrace, byte for byte)")
    parser.add_argument("--no-cfi", action="store_true",
                        help="ignore CFI: frame pointers and interrupt frames only")
    parser.add_argument("--stub", action="append", default=[], metavar="SYMBOL",
                        help="treat SYMBOL as an interrupt/exception entry stub (repeatable; "
                             "also $KDIAG_ENTRY_STUBS=a,b)")
    parser.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("limit", nargs="?", type=parse_int, default=64, metavar="N",
                        help="at most N frames (default 64)")


def run(args: argparse.Namespace) -> int:
    from kdiag.render import backtrace as render
    from kdiag.symbols.symbolizer import symbolizer_for
    from kdiag.unwind import jos_walk, register_stub, unwind

    for name in args.stub:
        register_stub(name)
    sym = symbolizer_for(args.elf)
    target = open_target(args)
    if args.format == "jos":
        trace = jos_walk(target, sym, limit=args.limit)
        out: object = render.jos_json(trace) if args.json else render.jos_text(trace)
    else:
        bt = unwind(target, sym, limit=args.limit, use_cfi=not args.no_cfi)
        out = render.to_json(bt) if args.json else render.to_text(bt)
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(f"{out}\n")
    return 0
