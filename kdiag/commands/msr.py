"""``kdiag msr NAME|NUMBER``: one MSR read from a target (where the backend can) and decoded."""

from __future__ import annotations

import argparse

from kdiag.commands._machine import add_common, emit, method_of, symbolizer
from kdiag.commands._target import open_target, parse_int
from kdiag.errors import UsageError

NAME = "msr"
HELP = "read and decode an MSR (STAR, LSTAR, SFMASK, EFER, PAT, APIC_BASE, FS/GS bases...)"
DESCRIPTION = """\
Read one model-specific register and decode it: STAR into the SYSCALL/SYSRET selectors (checked
against the GDT), LSTAR/CSTAR/FS_BASE/GS_BASE/KERNEL_GS_BASE as addresses, SFMASK as the RFLAGS
bits SYSCALL clears, APIC_BASE, EFER, PAT. A core dump holds only EFER (inferred),
KERNEL_GS_BASE and the FS/GS bases; QMP holds EFER and the FS/GS bases. Use --value to decode a
number you already have. Inside gdb, `kd msr` reads any MSR by injecting rdmsr.

examples:
  kdiag msr star --value 0x0023001000000000
  kdiag msr kernel_gs_base --core dump.elf
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("msr", metavar="NAME|NUMBER", help="e.g. star, IA32_LSTAR, 0xc0000080")
    parser.add_argument("--value", type=parse_int, metavar="N",
                        help="decode this value instead of reading a target")


def run(args: argparse.Namespace) -> int:
    from kdiag.render import regs
    from kdiag.render.reports import Report, msr_report
    from kdiag.x86.msr import msr_index

    try:
        index = msr_index(args.msr)
    except ValueError as err:
        raise UsageError(str(err)) from err
    if args.value is not None and not (args.core or args.qmp):
        return emit(args, Report(regs.msr_to_text(index, args.value),
                                 regs.msr_to_json(index, args.value)))
    target = open_target(args)
    return emit(args, msr_report(target, index, method=method_of(target),
                                 symbolize=symbolizer(args), value=args.value))
