"""``kdiag idt``: the IDT of a QEMU core dump or a live QEMU (QMP), as ``kd idt`` prints it."""

from __future__ import annotations

import argparse

from kdiag.commands._machine import add_common, add_range, emit, selected, symbolizer
from kdiag.commands._target import open_target

NAME = "idt"
HELP = "decode the IDT gates, symbolize handlers, check selectors, handlers and IST slots"
DESCRIPTION = """\
Decode the Interrupt Descriptor Table named by IDTR (16-byte gates in IA-32e mode, 8-byte
otherwise), one line per gate, runs of empty gates folded. Checks: exception vectors without
a present gate, gate types the CPU rejects, selectors that are not (64-bit) code segments,
non-canonical or unmapped handlers, IST indices whose TSS slot is zero.

examples:
  kdiag idt --core dump.elf --elf kernel/build/kernel-x86_64.elf
  kdiag idt --core dump.elf 0x0e          # one vector (or FIRST LAST)
  kdiag idt --qmp run/qmp.sock --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    add_range(parser, "vector")
    parser.add_argument("--all", action="store_true", help="list empty gates one by one")


def run(args: argparse.Namespace) -> int:
    from kdiag.render.reports import idt_report

    target = open_target(args)
    return emit(args, idt_report(target, verbose=args.verbose, select=selected(args),
                                 symbolize=symbolizer(args), show_all=args.all))
