"""``kdiag walk VA...``: translate linear addresses level by level (Bochs' ``page``)."""

from __future__ import annotations

import argparse

from kdiag.commands._target import add_target_arguments, close_target, open_target, parse_int
from kdiag.commands.pt import add_paging_arguments, walk_report

NAME = "walk"
HELP = "translate a linear address level by level: entries, flags, rights, memory type"
DESCRIPTION = """\
Walk the page tables for each linear address the way the CPU does, printing every level: the
table's physical address, the index, the raw entry and its flags (Bochs style: upper case set,
lower case clear; U/S and W/R), then the effective rights (R/W and U/S ANDed over all levels,
XD ORed; CR0.WP noted), the memory type the PAT selects (PAT/PCD/PWT -> IA32_PAT entry; the
PAT bit is bit 12 in large-page entries) and the physical address -- or the level where the
walk stops and why: not present, reserved bit set, XD without EFER.NXE, PS where reserved,
non-canonical address, a table that cannot be read. Entries that point back into the
hierarchy are marked (recursive self-map, loop).

exit codes: 0 every address translates, 1 some walk stops, 2 unusable input

examples:
  kdiag walk --core dump.elf 0xffffffff80100000
  kdiag walk --core dump.elf --json 0xb8000 0xffff800000000000
  kdiag walk --core dump.elf --cr3 0x1000 --mode 32-pse 0xf0100000
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("va", nargs="+", type=parse_int, metavar="VA",
                        help="linear address(es) to translate (C-style numbers)")
    add_target_arguments(parser)
    add_paging_arguments(parser)


def run(args: argparse.Namespace) -> int:
    target = open_target(args, cr8=False)
    try:
        rep = walk_report(target, args, list(args.va))
    finally:
        close_target(target)
    print(rep.output(args.json))
    return 1 if rep.diagnosed else 0
