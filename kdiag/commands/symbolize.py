"""``kdiag symbolize``: addresses to function, file and line (DWARF, STABS, symbol table)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

from kdiag.errors import UsageError

NAME = "symbolize"
HELP = "symbolize addresses with one or more ELFs (like addr2line -f -i), from args or stdin"
DESCRIPTION = """\
Print, for each address, the function (symbol+offset), the source file and line, and the
calls the address is inlined into. Addresses come from the command line (C syntax: 0x...,
decimal) or, when none are given (or "-"), from standard input, one or more per line, in hex
with or without 0x (as addr2line reads them).

The ELF's index is built once and cached (KDIAG_CACHE_DIR, else ~/.cache/kdiag), so later runs
start at once. --format addr2line prints exactly what `addr2line -f -i -e ELF` prints.

examples:
  kdiag symbolize --elf kernel/build/kernel-x86_64.elf 0xffffffff80001234
  grep -o 'RIP=[0-9a-f]*' qemu.log | cut -d= -f2 | sed s/^/0x/ | kdiag symbolize --elf k.elf
  kdiag symbolize --elf k.elf --elf user.elf@0x400000 --json 0x401000
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--elf", action="append", default=[], metavar="FILE[@BIAS]",
                        required=True, help="ELF to symbolize with (repeatable)")
    parser.add_argument("--format", choices=("text", "addr2line"), default="text",
                        help="text (default) or addr2line (function and file:line lines)")
    parser.add_argument("--no-inline", action="store_true",
                        help="do not list the calls inlined code sits in")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("addresses", nargs="*", metavar="ADDR")


def _addresses(args: argparse.Namespace) -> Iterator[int]:
    """Arguments in C syntax (``0x...``, decimal); standard input as addr2line reads it (hex,
    with or without ``0x``), so addr2line pipelines work unchanged."""
    items = list(args.addresses)
    from_stdin = not items or items == ["-"]
    if from_stdin:
        items = [w for line in sys.stdin for w in line.split()]
    for w in items:
        try:
            yield int(w, 16) if from_stdin else int(w.replace("_", ""), 0)
        except ValueError:
            raise UsageError(f"not an address: {w!r}") from None


def run(args: argparse.Namespace) -> int:
    from kdiag.symbols.symbolizer import symbolizer_for

    sym = symbolizer_for(args.elf)
    addrs = list(_addresses(args))
    locs = sym.lookup_many(addrs)
    out = sys.stdout
    if args.json:
        doc: list[dict[str, Any]] = []
        for a, loc in zip(addrs, locs, strict=True):
            if loc is None:
                doc.append({"address": f"{a:#x}", "symbol": None})
                continue
            doc.append({"address": f"{a:#x}", "symbol": loc.symbol,
                        "offset": f"{loc.offset:#x}",
                        "function_start": f"{loc.function_start:#x}"
                        if loc.function_start is not None else None,
                        "function": loc.function or loc.symbol, "file": loc.file,
                        "line": loc.line, "elf": loc.elf, "source": loc.source,
                        "inlined_into": [{"function": c.function, "file": c.file,
                                          "line": c.line} for c in loc.inlined_into]})
        json.dump(doc, out, indent=2)
        out.write("\n")
        return 0
    lines: list[str] = []
    for a, loc in zip(addrs, locs, strict=True):
        if args.format == "addr2line":
            if loc is None:
                lines += ["??", "??:0"]
                continue
            frames = loc.frames() if not args.no_inline else loc.frames()[:1]
            for fr in frames:
                lines.append(fr.function or "??")
                lines.append(f"{fr.file or '??'}:{fr.line if fr.line is not None else 0}"
                             if fr.file else "??:?")
            continue
        if loc is None:
            lines.append(f"{a:#x}: ??")
            continue
        name = loc.symbol or "??"
        text = f"{a:#x}: {name}+{loc.offset:#x}" if loc.offset else f"{a:#x}: {name}"
        if loc.function and loc.function != loc.symbol:
            text += f" [{loc.function}]"
        if loc.file:
            text += f" at {loc.file}:{loc.line}"
        lines.append(text)
        if not args.no_inline:
            for c in loc.inlined_into:
                lines.append(f"    inlined into {c.function} at {c.file}:{c.line}")
    out.write("\n".join(lines) + ("\n" if lines else ""))
    return 0
