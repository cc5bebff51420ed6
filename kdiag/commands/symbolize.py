"""``kdiag symbolize``: addresses to function, file and line (DWARF, STABS, symbol table)."""

from __future__ import annotations

import sys
from itertools import repeat

from kdiag.errors import UsageError

TYPE_CHECKING = False  # typing's constant: importing typing costs a short process ~2 ms
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator
    from typing import Any

    from kdiag.symbols.location import Location

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


def parse_fast(argv: list[str]) -> dict[str, Any] | None:
    """What :func:`add_arguments`' parser makes of ``argv`` (after ``symbolize``), for plain
    command lines: ``--elf FILE`` / ``--elf=FILE`` (at least one), ``--format text|addr2line``,
    ``--no-inline``, ``--json``, ``--traceback`` and one run of addresses. None for anything
    else (help, abbreviations, ``--``, option-like values, a second run of addresses after an
    option, a bad choice): kdiag.cli then asks argparse, which accepts or reports it."""
    vals: dict[str, Any] = {"elf": [], "format": "text", "no_inline": False, "json": False,
                            "addresses": []}
    addresses: list[str] = vals["addresses"]
    runs = 0  # runs of positional arguments (argparse takes one run for nargs="*")
    prev_positional = False
    i, n = 0, len(argv)
    while i < n:
        arg = argv[i]
        i += 1
        if arg == "-" or not arg.startswith("-"):
            if not prev_positional:
                runs += 1
            prev_positional = True
            addresses.append(arg)
            continue
        prev_positional = False
        if arg in ("--no-inline", "--json", "--traceback"):
            vals[arg[2:].replace("-", "_")] = True
            continue
        opt, eq, value = arg.partition("=")
        if opt not in ("--elf", "--format"):
            return None
        if not eq:
            if i >= n or argv[i].startswith("-"):
                return None
            value = argv[i]
            i += 1
        elif not value:  # "--elf=": leave the details to argparse
            return None
        if opt == "--elf":
            vals["elf"].append(value)
        elif value in ("text", "addr2line"):
            vals["format"] = value
        else:
            return None
    if not vals["elf"] or runs > 1:
        return None
    return vals


def _addresses(args: argparse.Namespace) -> list[int]:
    """Arguments in C syntax (``0x...``, decimal); standard input as addr2line reads it (hex,
    with or without ``0x``), so addr2line pipelines work unchanged."""
    items = list(args.addresses)
    if not items or items == ["-"]:
        words = sys.stdin.read().split()
        try:
            return list(map(int, words, repeat(16, len(words))))
        except ValueError:
            return list(_checked(words, True))
    try:
        return [int(w.replace("_", ""), 0) for w in items]
    except ValueError:
        return list(_checked(items, False))


def _checked(words: list[str], from_stdin: bool) -> Iterator[int]:
    """The slow path of :func:`_addresses`: which word is not an address."""
    for w in words:
        try:
            yield int(w, 16) if from_stdin else int(w.replace("_", ""), 0)
        except ValueError:
            raise UsageError(f"not an address: {w!r}") from None


def run(args: argparse.Namespace) -> int:
    from kdiag.symbols.symbolizer import symbolizer_for

    sym = symbolizer_for(args.elf)
    addrs = _addresses(args)
    out = sys.stdout
    if args.json:
        import json

        doc: list[dict[str, Any]] = []
        for a, loc in zip(addrs, sym.lookup_many(addrs), strict=True):
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
    # The text that depends only on the segment an address falls in (all but the address and
    # the offset) is formatted once per segment (Symbolizer.map_segments), not per address.
    inline = not args.no_inline
    if args.format == "addr2line":
        def per_segment(loc: Location) -> Callable[[int, int], str]:
            block = _addr2line_block(loc, inline)
            return lambda _addr, _off: block
        unknown = "??\n??:0"
    else:
        def per_segment(loc: Location) -> Callable[[int, int], str]:
            name, tail = _text_parts(loc, inline)
            return lambda addr, off: (f"{addr:#x}: {name}+{off:#x}{tail}" if off
                                      else f"{addr:#x}: {name}{tail}")
        unknown = ""
    lines = sym.map_segments(addrs, per_segment)
    if None in lines:
        lines = [(unknown or f"{a:#x}: ??") if t is None else t
                 for a, t in zip(addrs, lines, strict=True)]
    out.write("\n".join(lines) + ("\n" if lines else ""))  # type: ignore[arg-type]
    return 0


def _addr2line_block(loc: Location, inline: bool) -> str:
    """``addr2line -f [-i]``'s lines for ``loc`` (they do not depend on the offset)."""
    lines = []
    for fr in loc.frames() if inline else loc.frames()[:1]:
        lines.append(fr.function or "??")
        lines.append(f"{fr.file or '??'}:{fr.line if fr.line is not None else 0}"
                     if fr.file else "??:?")
    return "\n".join(lines)


def _text_parts(loc: Location, inline: bool) -> tuple[str, str]:
    """The text line of ``loc`` around its offset: the name before ``+0x...``, and what
    follows it (the function, file and line, and the inlined-into lines)."""
    name = loc.symbol or "??"
    tail = ""
    if loc.function and loc.function != loc.symbol:
        tail += f" [{loc.function}]"
    if loc.file:
        tail += f" at {loc.file}:{loc.line}"
    if inline:
        for c in loc.inlined_into:
            tail += f"\n    inlined into {c.function} at {c.file}:{c.line}"
    return name, tail
