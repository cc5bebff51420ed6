"""``kdiag pt``: dump the page tables (merged ranges, filters, anomaly checks).

This module also holds the option parsing and report building shared by ``kdiag walk``,
``kdiag p2v`` and gdb's ``kd pt|walk|p2v`` (gdbext/cmd_paging.py), so the CLI and gdb print
the same text for the same machine.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kdiag._record import replace
from kdiag.commands._target import add_target_arguments, close_target, open_target, parse_int
from kdiag.errors import UsageError
from kdiag.paging.checks import CheckOptions, Severity, check
from kdiag.paging.config import MODE_CHOICES, PAT_DEFAULT, PagingConfig, resolve_config
from kdiag.paging.dump import DumpLimits, dump, reverse_lookup
from kdiag.paging.filters import PageFilter, parse_memtypes, parse_va_range
from kdiag.paging.tables import TableCache
from kdiag.paging.walker import walk
from kdiag.render import paging as R

if TYPE_CHECKING:
    from kdiag.target.base import Target

NAME = "pt"
HELP = "dump the page tables: merged ranges, filters, memory types, anomaly checks"
DESCRIPTION = """\
Dump every mapping of an address space: adjacent pages with the same effective rights
(R/W and U/S ANDed over all levels, XD ORed) and PAT memory type are merged into one range,
shown with its size, physical address (or "scattered"), permissions, memory type and page sizes.
Entries that map nothing (reserved bits, recursive self-maps, loops, tables beyond RAM) are
listed after the ranges. The mode (32-bit +/-PSE, PAE, 4-level, 5-level) follows CR0/CR4/EFER
unless --mode/--cr3 say otherwise; memory types use the live IA32_PAT when the backend can
read it, else the power-on default (and say so).

Filters combine (AND) and prune the walk early: --writable, --readonly, --executable, --nx,
--user, --supervisor, --wx, --type WB,WC, --range START-END, --contains ADDR.

--check lists anomalies instead: W+X, user-accessible kernel addresses, one physical page
with different memory types, XD without EFER.NXE, reserved bits, tables/pages beyond RAM
(--ram-size, else the core file's RAM or QEMU's memory map), the lower half still mapped, a
framebuffer that is not write-combining (--framebuffer PA+SIZE; over QMP the display's video
RAM is found in the memory map and checked where mapped), CR0.WP=0, loops and recursive
self-maps. Over QMP, IA32_PAT cannot be read: pass --pat VALUE for the real memory types.

exit codes: 0 ok (no error/warning anomaly with --check), 1 anomalies found, 2 unusable input

examples:
  kdiag pt --core dump.elf
  kdiag pt --core dump.elf --wx
  kdiag pt --core dump.elf --user --range 0-0x800000000000 --json
  kdiag pt --core dump.elf --check --framebuffer 0x80000000+8M
  kdiag pt --core dump.elf --cr3 0x1000 --mode pae
"""


# -- shared option parsing ---------------------------------------------------------------------
def parse_size(text: str) -> int:
    """``4096``, ``0x1000``, ``4K``, ``256M``, ``1G``, ``2GiB`` (binary units)."""
    m = re.fullmatch(r"(0[xX][0-9a-fA-F]+|\d+)\s*([kKmMgGtT])?(?:i?[bB])?",
                     text.strip().replace("_", ""))
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    unit = m.group(2)
    mult = 1 << (10 * ("KMGT".index(unit.upper()) + 1)) if unit else 1
    return int(m.group(1), 0) * mult


def _range_arg(text: str) -> tuple[int, int]:
    try:
        return parse_va_range(text)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _region_arg(text: str) -> tuple[int, int]:
    """``PA+SIZE`` (SIZE may use K/M/G) or ``START-END``."""
    t = text.strip()
    if "+" in t:
        a, b = t.split("+", 1)
        try:
            return int(a, 0), parse_size(b)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad region {text!r}") from None
    lo, hi = _range_arg(t)
    return lo, hi - lo


def add_paging_arguments(parser: argparse.ArgumentParser, with_json: bool = True) -> None:
    """``--cr3``, ``--mode``, ``--pat``, ``--maxphyaddr`` and ``--json`` (gdb adds its own)."""
    g = parser.add_argument_group("address space")
    g.add_argument("--cr3", type=parse_int, metavar="ADDR",
                   help="walk the tables at this CR3 value instead of the live CR3")
    g.add_argument("--mode", metavar="MODE",
                   help=f"paging mode instead of the live one: {', '.join(MODE_CHOICES)}")
    g.add_argument("--pat", type=parse_int, metavar="VALUE",
                   help="IA32_PAT value to use for memory types (default: read the MSR)")
    g.add_argument("--maxphyaddr", type=int, metavar="BITS",
                   help="physical address width for reserved-bit checks (default 52: only "
                        "always-reserved bits; QEMU TCG uses 40)")
    if with_json:
        parser.add_argument("--json", action="store_true", help="print one JSON document")


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("filters (combined with AND)")
    g.add_argument("-w", "--writable", dest="writable", action="store_const", const=True,
                   help="only writable pages")
    g.add_argument("--readonly", dest="writable", action="store_const", const=False,
                   help="only read-only pages")
    g.add_argument("-x", "--executable", dest="executable", action="store_const", const=True,
                   help="only executable pages")
    g.add_argument("--nx", dest="executable", action="store_const", const=False,
                   help="only non-executable pages")
    g.add_argument("-u", "--user", dest="user", action="store_const", const=True,
                   help="only user-accessible pages")
    g.add_argument("-s", "--supervisor", dest="user", action="store_const", const=False,
                   help="only supervisor-only pages")
    g.add_argument("--wx", action="store_true", help="only writable AND executable pages")
    g.add_argument("-t", "--type", dest="memtypes", metavar="TYPES",
                   help="only these memory types, e.g. WC or WB,UC-")
    g.add_argument("-r", "--range", dest="va_range", type=_range_arg, metavar="START-END",
                   help="only this linear range (START-END exclusive, or START+SIZE)")
    g.add_argument("--contains", "--has", dest="contains", type=parse_int, metavar="ADDR",
                   help="only the range containing this linear address")


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("anomaly checks")
    g.add_argument("--check", action="store_true", help="list anomalies instead of ranges")
    g.add_argument("--ram-size", type=parse_size, metavar="SIZE",
                   help="RAM is [0, SIZE) (default: what the backend knows, else unchecked)")
    g.add_argument("--ram", dest="ram", type=_region_arg, action="append", metavar="START+SIZE",
                   help="a RAM range (repeatable; e.g. from the UEFI/e820 memory map)")
    g.add_argument("--framebuffer", type=_region_arg, metavar="PA+SIZE",
                   help="the framebuffer's physical range (checked to be mapped and WC; "
                        "default: the display's video RAM in QEMU's memory map, checked "
                        "to be WC where mapped)")
    g.add_argument("--no-framebuffer", action="store_true",
                   help="do not look for a framebuffer in QEMU's memory map")
    g.add_argument("--kernel-base", type=parse_int, metavar="ADDR",
                   help="where kernel addresses start (default: the upper half in IA-32e "
                        "modes, 0xc0000000 in 32-bit modes)")
    g.add_argument("--no-lower-half", dest="lower_half", action="store_false",
                   help="do not flag supervisor mappings in the lower half (before boot ends)")


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("limits (bounded time on garbage tables)")
    d = DumpLimits()
    g.add_argument("--max-tables", type=int, default=d.max_tables, metavar="N",
                   help=f"distinct tables to read at most (default {d.max_tables})")
    g.add_argument("--max-ranges", type=int, default=d.max_mappings, metavar="N",
                   help=f"output ranges at most (default {d.max_mappings})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    add_paging_arguments(parser)
    add_filter_arguments(parser)
    add_check_arguments(parser)
    add_limit_arguments(parser)


def filters_from_args(args: argparse.Namespace) -> PageFilter:
    va = getattr(args, "va_range", None)
    mt = getattr(args, "memtypes", None)
    return PageFilter(writable=getattr(args, "writable", None),
                      executable=getattr(args, "executable", None),
                      user=getattr(args, "user", None), wx=bool(getattr(args, "wx", False)),
                      memtypes=parse_memtypes(mt) if mt else None,
                      va_start=va[0] if va else None, va_end=va[1] if va else None,
                      contains=getattr(args, "contains", None))


def limits_from_args(args: argparse.Namespace) -> DumpLimits:
    d = DumpLimits()
    return DumpLimits(max_tables=getattr(args, "max_tables", d.max_tables),
                      max_mappings=getattr(args, "max_ranges", d.max_mappings))


def config_from_args(target: Target, args: argparse.Namespace) -> PagingConfig:
    """The PagingConfig for ``args``. Besides the options, callers (gdb) may set
    ``args.pat_source`` (where a given ``args.pat`` came from), ``args.pat_error`` (why it
    could not be read) or ``args.no_msr`` (do not read it)."""
    no_read = bool(getattr(args, "no_msr", False))
    err = getattr(args, "pat_error", None)
    if err is None and not no_read and getattr(args, "pat", None) is None:
        err = pat_unreadable_reason(target)
    cfg = resolve_config(target, cr3=getattr(args, "cr3", None),
                         mode=getattr(args, "mode", None), pat=getattr(args, "pat", None),
                         maxphyaddr=getattr(args, "maxphyaddr", None),
                         read_pat=not (no_read or err))
    if cfg.pat_source == PAT_DEFAULT and (no_read or err):
        note = (f"IA32_PAT unreadable ({err}); assuming the power-on default" if err else
                "IA32_PAT not read (--no-msr); assuming the power-on default")
        cfg = replace(cfg, pat_note=note)
    source = getattr(args, "pat_source", None)
    if source and getattr(args, "pat", None) is not None:
        cfg = replace(cfg, pat_source=source)
    return cfg


def pat_unreadable_reason(target: Target) -> str | None:
    """Why ``target`` cannot read IA32_PAT, when that is known without asking it (and without
    the round trips a refused ``read_msr`` costs): QEMU's QMP/HMP monitor has no MSR read."""
    try:
        from qmp_tools.target import QmpTarget
    except ImportError:  # pragma: no cover - qmp_tools ships with kdiag
        return None
    if isinstance(target, QmpTarget):
        return ("QEMU's monitor has no MSR read; pass --pat VALUE, or use gdb's `kd pt`, "
                "which executes rdmsr")
    return None


def memory_map_of(target: Target) -> list | None:
    """QEMU's flat physical memory map (``MemRange``s: start, inclusive end, kind, name) when
    the backend can give it: ``memory_map()`` (QMP) or ``monitor("info mtree -f")`` (gdb's
    monitor passthrough). None otherwise (a core file, a fake)."""
    try:
        mm = getattr(target, "memory_map", None)
        if callable(mm):
            return list(mm())
        mon = getattr(target, "monitor", None)
        if callable(mon):
            from qmp_tools.target import parse_mtree_flat

            return list(parse_mtree_flat(str(mon("info mtree -f"))))
    except Exception:  # noqa: BLE001 - an optional hint; never fatal
        return None
    return None


def ram_from_target(target: Target, mmap: list | None = None
                    ) -> tuple[tuple[int, int], ...] | None:
    """RAM ranges (half-open) the backend knows, from optional attributes outside the Target
    protocol: ``ram_ranges`` (a core's PT_LOADs; list or method), QEMU's memory map (QMP or
    gdb's monitor; RAM and ROM entries, inclusive ends) or ``ram_size``."""
    try:
        ranges = getattr(target, "ram_ranges", None)
        if callable(ranges):
            ranges = ranges()
        if ranges:
            return tuple((int(a), int(b)) for a, b in ranges)
        mm = mmap if mmap is not None else memory_map_of(target)
        if mm:
            got = tuple((int(r.start), int(r.end) + 1) for r in mm
                        if getattr(r, "kind", "") in ("ram", "rom", "romd"))
            if got:
                return got
    except Exception:  # noqa: BLE001 - an optional hint; never fatal
        pass
    size = getattr(target, "ram_size", None)
    if isinstance(size, int) and size > 0:
        return ((0, size),)
    return None


def framebuffer_from_map(mmap: list | None) -> tuple[int, int] | None:
    """The linear framebuffer's physical range from QEMU's memory map: the largest piece of
    the display device's video RAM (``vga.vram`` for -vga std and bochs-display; ``qxl.vram``,
    ``vmsvga.vram``), i.e. its PCI BAR, not the 64 KiB legacy window at 0xa0000."""
    best: tuple[int, int] | None = None
    for r in mmap or ():
        name = str(getattr(r, "name", "")).split(" @")[0]
        if not name.endswith("vram"):
            continue
        size = int(r.end) + 1 - int(r.start)
        if best is None or size > best[1]:
            best = (int(r.start), size)
    return best


def check_options_from_args(target: Target, args: argparse.Namespace) -> CheckOptions:
    """RAM from --ram/--ram-size, else the backend's memory map; the framebuffer from
    --framebuffer, else the display's video RAM in QEMU's memory map (then only a non-WC
    mapping of it is reported, not its absence: many kernels never draw)."""
    mmap = None
    if not getattr(args, "ram", None) and not getattr(args, "ram_size", None) \
            or getattr(args, "framebuffer", None) is None:
        mmap = memory_map_of(target)
    ram: tuple[tuple[int, int], ...] | None
    if getattr(args, "ram", None):
        ram = tuple((lo, lo + size) for lo, size in args.ram)
    elif getattr(args, "ram_size", None):
        ram = ((0, args.ram_size),)
    else:
        ram = ram_from_target(target, mmap)
    fb = getattr(args, "framebuffer", None)
    auto = False
    if fb is None and not getattr(args, "no_framebuffer", False):
        fb = framebuffer_from_map(mmap)
        auto = fb is not None
    return CheckOptions(ram=ram, framebuffer=fb, framebuffer_auto=auto,
                        kernel_base=getattr(args, "kernel_base", None),
                        lower_half=getattr(args, "lower_half", True))


# -- reports -------------------------------------------------------------------------------------
@dataclass
class PagingReport:
    """What a paging command prints, and whether it diagnosed a problem (exit 1)."""

    text: str
    doc: object
    diagnosed: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    def output(self, as_json: bool) -> str:
        return json.dumps(self.doc, indent=2) if as_json else self.text


def pt_report(target: Target, args: argparse.Namespace, *,
              cache: TableCache | None = None) -> PagingReport:
    """``pt``: the dump, or with ``args.check`` the anomalies."""
    cfg = config_from_args(target, args)
    filters = filters_from_args(args)
    limits = limits_from_args(args)
    checking = bool(getattr(args, "check", False))
    d = dump(target, cfg, filters=filters, limits=limits, cache=cache,
             collect_segments=checking)
    if not checking:
        return PagingReport(R.dump_to_text(d), R.dump_to_json(d), False)
    anomalies = check(d, check_options_from_args(target, args))
    text = "\n".join(R.dump_header(d, note=False)
                     + [R.anomalies_to_text(anomalies, cfg), R.stats_text(d)])
    bad = any(a.severity in (Severity.ERROR, Severity.WARNING) for a in anomalies)
    return PagingReport(text, R.dump_to_json(d, anomalies), bad)


def walk_report(target: Target, args: argparse.Namespace, vas: list[int], *,
                cache: TableCache | None = None) -> PagingReport:
    """``walk``: every level for each address."""
    cfg = config_from_args(target, args)
    cache = cache or TableCache(target)
    walks = [walk(target, va, cfg, cache=cache) for va in vas]
    text = "\n\n".join(R.walk_to_text(w) for w in walks)
    docs = [R.walk_to_json(w) for w in walks]
    return PagingReport(text, docs[0] if len(docs) == 1 else docs,
                        not all(w.ok for w in walks))


def p2v_report(target: Target, args: argparse.Namespace, pa: int, *,
               cache: TableCache | None = None) -> PagingReport:
    """``p2v``: every linear address that maps physical ``pa``."""
    cfg = config_from_args(target, args)
    hits, d = reverse_lookup(target, cfg, pa, limits=limits_from_args(args), cache=cache)
    text = R.p2v_to_text(pa, hits, cfg, d.truncated)
    return PagingReport(text, R.p2v_to_json(pa, hits, cfg, d.truncated), not hits)


def run(args: argparse.Namespace) -> int:
    target = open_target(args, cr8=False)
    try:
        rep = pt_report(target, args)
    finally:
        close_target(target)
    print(rep.output(args.json))
    return 1 if rep.diagnosed else 0
