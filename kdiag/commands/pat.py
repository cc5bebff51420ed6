"""``kdiag pat``: IA32_PAT's eight memory types and the PAT/PCD/PWT bits that select each."""

from __future__ import annotations

import argparse

from kdiag.commands._machine import add_common, emit, method_of
from kdiag.commands._target import open_target, parse_int

NAME = "pat"
HELP = "decode IA32_PAT (PA0-PA7 memory types) from a target or a given value"
DESCRIPTION = """\
Decode the Page Attribute Table MSR: PA0..PA7 with their memory types (UC, WC, WT, WP, WB,
UC-) and the PAT/PCD/PWT combination that selects each. QEMU core dumps and QMP cannot read
IA32_PAT; pass the value with --value (e.g. from the kernel's own log), or use `kd pat` in gdb.

examples:
  kdiag pat --value 0x0007010600070406
  kdiag pat --qmp run/qmp.sock
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, elf=False)
    parser.add_argument("--value", type=parse_int, metavar="PAT",
                        help="decode this IA32_PAT value instead of reading a target")


def run(args: argparse.Namespace) -> int:
    from kdiag.render.reports import pat_report

    if args.value is not None:
        from kdiag.render import regs
        from kdiag.render.reports import Report

        return emit(args, Report(regs.pat_to_text(args.value), regs.pat_to_json(args.value)))
    target = open_target(args)
    return emit(args, pat_report(target, method=method_of(target)))
