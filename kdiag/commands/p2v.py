"""``kdiag p2v PA``: every linear address that maps a physical address."""

from __future__ import annotations

import argparse

from kdiag.commands._target import add_target_arguments, close_target, open_target, parse_int
from kdiag.commands.pt import add_limit_arguments, add_paging_arguments, p2v_report

NAME = "p2v"
HELP = "reverse lookup: every linear address mapping a physical address"
DESCRIPTION = """\
Walk the whole address space and list every linear address whose page maps the physical
address PA, with the page size, effective rights and memory type of each alias (aliases with
different memory types are a bug: see `kdiag pt --check`).

exit codes: 0 mapped at least once, 1 not mapped, 2 unusable input

examples:
  kdiag p2v --core dump.elf 0xb8000
  kdiag p2v --core dump.elf --json 0x100000
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pa", type=parse_int, metavar="PA", help="physical address")
    add_target_arguments(parser)
    add_paging_arguments(parser)
    add_limit_arguments(parser)


def run(args: argparse.Namespace) -> int:
    target = open_target(args, cr8=False)
    try:
        rep = p2v_report(target, args, args.pa)
    finally:
        close_target(target)
    print(rep.output(args.json))
    return 0 if not rep.diagnosed else 1
