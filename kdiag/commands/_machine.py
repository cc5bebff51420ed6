"""Shared plumbing of the machine-state commands (gdt, idt, tss, cr, pat, msr, sreg).

Each command is a thin wrapper: open the Target (``--core``/``--qmp``), call the report in
``kdiag.render.reports`` (the same one the gdb ``kd`` commands call, so the text is identical),
print text or one JSON document. Exit status: 0 clean, 1 when a check found an error or a
warning (a diagnosed problem in the machine), 2 for unusable input (KdiagError from cli.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from bisect import bisect_right
from collections.abc import Callable

from kdiag.commands._target import add_target_arguments, parse_int
from kdiag.render.findings import Symbolizer
from kdiag.render.reports import Report


def add_common(parser: argparse.ArgumentParser, elf: bool = True) -> None:
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="add raw values and the bit-by-bit field view")
    if elf:
        parser.add_argument("--elf", action="append", default=[], metavar="FILE",
                            help="symbolize addresses with this ELF (repeatable)")


def add_range(parser: argparse.ArgumentParser, what: str,
              number: Callable[[str], int] = parse_int) -> None:
    """Optional FIRST [LAST] positionals (``kd`` passes a parser of gdb expressions)."""
    parser.add_argument("first", nargs="?", type=number, metavar="FIRST",
                        help=f"show only this {what} (or the range FIRST..LAST)")
    parser.add_argument("last", nargs="?", type=number, metavar="LAST",
                        help=f"last {what} of the range (inclusive)")


def selected(args: argparse.Namespace) -> tuple[int, int] | None:
    first = getattr(args, "first", None)
    if first is None:
        return None
    last = getattr(args, "last", None)
    return (first, first if last is None else last)


def symbolizer(args: argparse.Namespace) -> Symbolizer | None:
    paths = getattr(args, "elf", None) or []
    if not paths:
        return None
    from kdiag.symbols.symbolizer import Symbolizer as ElfSymbolizer

    sym = ElfSymbolizer()
    objects: list[tuple[int, int, str]] = []
    for p in paths:
        sym.add_elf(p)
        objects += _data_symbols(p)
    objects.sort()
    starts = [o[0] for o in objects]

    def lookup(addr: int) -> str | None:
        loc = sym.lookup(addr)
        if loc is not None and getattr(loc, "symbol", None):
            off = getattr(loc, "offset", 0) or 0
            return f"{loc.symbol}+{off:#x}" if off else str(loc.symbol)
        i = bisect_right(starts, addr) - 1  # data objects (stacks, tables): STT_OBJECT
        if i >= 0:
            start, size, name = objects[i]
            if addr < start + max(size, 1):
                return f"{name}+{addr - start:#x}" if addr != start else name
        return None

    return lookup


def _data_symbols(path: str) -> list[tuple[int, int, str]]:
    """(address, size, name) of the STT_OBJECT symbols of an ELF (kernel stacks, tables), so
    stack pointers symbolize like gdb's ``info symbol``. Unreadable files give none."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            tab = elf.get_section_by_name(".symtab")
            if not isinstance(tab, SymbolTableSection):
                return []
            return [(s["st_value"], s["st_size"], s.name) for s in tab.iter_symbols()
                    if s["st_info"]["type"] == "STT_OBJECT" and s.name and s["st_value"]]
    except (OSError, ValueError, ELFError):
        return []


def emit(args: argparse.Namespace, report: Report) -> int:
    if args.json:
        json.dump(report.doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(report.text + "\n")
    return 1 if report.diagnosed else 0


def method_of(target: object) -> str:
    return str(getattr(target, "msr_method", "") or "")
