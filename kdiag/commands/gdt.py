"""``kdiag gdt``: the GDT of a QEMU core dump or a live QEMU (QMP), as ``kd gdt`` prints it."""

from __future__ import annotations

import argparse

from kdiag.commands._machine import add_common, add_range, emit, selected
from kdiag.commands._target import open_target

NAME = "gdt"
HELP = "decode the GDT (Bochs-style), annotate segment registers, check SYSCALL/SYSRET layout"
DESCRIPTION = """\
Decode the Global Descriptor Table named by GDTR: one line per descriptor in Bochs' words,
the registers holding each selector (<- cs,ss), 16-byte TSS/LDT descriptors in IA-32e mode.
Checks: segment registers beyond the GDT limit or on the wrong type (a stale CS from the
firmware's GDT), and, when IA32_STAR is readable, the SYSCALL/SYSRET selectors against the
descriptor types they land on.

examples:
  kdiag gdt --core dump.elf
  kdiag gdt --qmp run/qmp.sock --json
  kdiag gdt --core dump.elf 0x28          # one selector (or FIRST LAST)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, elf=False)
    add_range(parser, "selector")


def run(args: argparse.Namespace) -> int:
    from kdiag.render.reports import gdt_report, readable_msrs

    target = open_target(args)
    msrs = readable_msrs(target, [0xC0000081, 0xC0000082]) if getattr(
        target, "msr_reads_are_passive", True) else {}
    return emit(args, gdt_report(target, verbose=args.verbose, select=selected(args), msrs=msrs))
