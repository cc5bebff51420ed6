"""``kdiag cr``: CR0, CR2, CR3, CR4, CR8, EFER and RFLAGS decoded (Bochs ``creg`` style)."""

from __future__ import annotations

import argparse

from kdiag.commands._machine import add_common, emit
from kdiag.commands._target import open_target

NAME = "cr"
HELP = "decode CR0/CR2/CR3/CR4/CR8, EFER and RFLAGS (set flags upper-case)"
DESCRIPTION = """\
Print the control registers with every flag named, upper-case when set and lower-case when
clear (CR0=0x80000011: PG cd nw ac wp ne ET ts em mp PE), CR3's base and PCID, EFER and
RFLAGS, and the CPU mode. Checks: NX bits in the page tables while EFER.NXE is off.

examples:
  kdiag cr --core dump.elf
  kdiag cr --core dump.elf -v        # bit-by-bit view
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, elf=False)


def run(args: argparse.Namespace) -> int:
    from kdiag.render.reports import cr_report

    return emit(args, cr_report(open_target(args), verbose=args.verbose))
