"""``kdiag tss``: the current TSS (RSP0-2, IST1-7, IOPB) of a core dump or a live QEMU."""

from __future__ import annotations

import argparse

from kdiag.commands._machine import add_common, emit, symbolizer
from kdiag.commands._target import open_target

NAME = "tss"
HELP = "decode the current TSS (from TR): RSP0-2, IST1-7, I/O map base; check the stacks"
DESCRIPTION = """\
Decode the task-state segment TR points at (its cached base and limit, which the CPU uses):
RSP0-RSP2 and IST1-IST7 of a 64-bit TSS (with the IDT vectors that use each IST slot), or the
fields of a 32-bit TSS. Checks: TR never loaded, a limit below 0x67, RSP0/IST stacks that are
zero, non-canonical or unmapped.

examples:
  kdiag tss --core dump.elf --elf kernel/build/kernel-x86_64.elf
  kdiag tss --qmp run/qmp.sock --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    from kdiag.render.reports import tss_report

    target = open_target(args)
    return emit(args, tss_report(target, verbose=args.verbose, symbolize=symbolizer(args)))
