"""``kdiag sreg``: segment registers with their hidden caches, LDTR/TR, GDTR/IDTR."""

from __future__ import annotations

import argparse

from kdiag.commands._machine import add_common, emit
from kdiag.commands._target import open_target

NAME = "sreg"
HELP = "segment registers and their descriptor caches, checked against the GDT"
DESCRIPTION = """\
Print CS, SS, DS, ES, FS, GS with the descriptor cache the CPU is using (base, limit, QEMU's
attribute word, decoded), LDTR, TR, GDTR, IDTR and the FS/GS/KERNEL_GS bases. Checks each
selector against the GDT: beyond the limit (a stale selector survives until the next reload),
wrong descriptor type or DPL, or a cache that no longer matches the GDT entry.

examples:
  kdiag sreg --core dump.elf
  kdiag sreg --qmp run/qmp.sock -v
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, elf=False)


def run(args: argparse.Namespace) -> int:
    from kdiag.render.reports import sreg_report

    return emit(args, sreg_report(open_target(args), verbose=args.verbose))
