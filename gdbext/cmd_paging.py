"""``kd walk``, ``kd pt`` (``info tab``), ``kd p2v`` and ``$kd_v2p(va)``: page tables in gdb.

The commands share their options, reports and text with the CLI (``kdiag walk|pt|p2v``, see
kdiag/commands/pt.py). Page-table pages are read through the GdbTarget's physical path (bulk
``monitor pmemsave`` when QEMU runs on this host, else PhyMemMode packets) and kept until the
guest runs again, so ``kd walk`` after ``kd pt`` reads nothing new. IA32_PAT is read once per
stop (``rdmsr`` injection, see ``help kd msr``); when that is refused the power-on default is
used and every output says so. ``--pat VALUE`` skips the read.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

import gdb  # type: ignore[import-not-found]

from gdbext.common import Context, KdCommand, int_arg
from kdiag.commands import pt as P
from kdiag.errors import KdiagError
from kdiag.paging.tables import TableCache

# One stop's worth of state: the table cache and the IA32_PAT value read by injection.
_STOP: dict[str, Any] = {"cache": None, "pat": None}


def _forget(*_: object) -> None:
    _STOP["cache"] = None
    _STOP["pat"] = None


def _cache(target: Any) -> TableCache:
    cache = _STOP["cache"]
    if cache is None:
        cache = TableCache(target)
        _STOP["cache"] = cache
    cache.target = target  # a new GdbTarget per command; the pages stay valid until resume
    return cache


def _with_pat(args: argparse.Namespace, target: Any) -> argparse.Namespace:
    """Fill ``args.pat`` from this stop's cached IA32_PAT, reading it once if needed."""
    if getattr(args, "pat", None) is not None or getattr(args, "no_msr", False):
        return args
    if _STOP["pat"] is None:
        try:
            _STOP["pat"] = target.read_msr(0x277)
        except KdiagError as err:
            _STOP["pat"] = err
    if isinstance(_STOP["pat"], int):
        args.pat = _STOP["pat"]
        args.pat_source = "msr"
    else:
        args.pat_error = str(_STOP["pat"])
    return args


def _reads(target: Any) -> contextlib.AbstractContextManager[Any]:
    """Keep QEMU's physical mode on across the table reads of one command (packet reads;
    the pmemsave path needs no switching at all)."""
    hold = getattr(target, "physical_reads", None)
    return hold() if callable(hold) else contextlib.nullcontext()


def _paging_options(parser: argparse.ArgumentParser) -> None:
    P.add_paging_arguments(parser, with_json=False)
    parser.add_argument("--no-msr", action="store_true",
                        help="do not inject rdmsr for IA32_PAT (assume the power-on default)")


class KdWalk(KdCommand):
    """Translate linear addresses level by level: entries, flags, rights, memory type.

Usage: kd walk [--json] [--cr3 ADDR] [--mode MODE] [--pat VALUE] [--no-msr] VA [VA...]

For each VA (a number or any gdb expression: $rip, $sp, &idt, 0xb8000), every level the
CPU reads: the table's physical address, the index, the raw entry and its flags in Bochs'
style (upper case set, lower case clear; U/S and W/R): XD PS G PAT D A PCD PWT U/S W/R P.
Then the effective rights (R/W and U/S ANDed over all levels, XD ORed; what CR0.WP means
for kernel writes), the memory type (PAT*4+PCD*2+PWT -> IA32_PAT entry; the PAT bit is bit
12 in a large-page entry) and the physical address -- or the level where the walk stops and
why: not present, a reserved bit (XD without EFER.NXE, PS in a PML4E, bits above
MAXPHYADDR), a non-canonical address, a table beyond RAM. Recursive self-map and loop
entries are marked.

The mode (32-bit with/without PSE, PAE, 4-level, 5-level) follows CR0/CR4/EFER; --cr3 and
--mode walk other tables (a hierarchy the kernel is still building, a task's CR3).
IA32_PAT is read once per stop by rdmsr injection (`help kd msr`); --pat VALUE or --no-msr
avoid it (the power-on default is then assumed, and said).

Examples:
  kd walk $rip
  kd walk 0xffffffff80100000 0xb8000
  kd walk --cr3 0x1000 --mode 32-pse 0xf0100000
  kd walk --json $sp"""

    name = "walk"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("va", nargs="+", type=int_arg, metavar="VA")
        _paging_options(parser)

    def run(self, args: argparse.Namespace, ctx: Context) -> Any:
        t = ctx.target()
        args = _with_pat(args, t)
        with _reads(t):
            return P.walk_report(t, args, list(args.va), cache=_cache(t))


class KdPt(KdCommand):
    """Dump the page tables: merged ranges with rights, memory types and page sizes.

Usage: kd pt [--json] [FILTERS] [--check [CHECK OPTIONS]] [--cr3 ADDR] [--mode MODE]

Every mapping of the address space in linear order: adjacent pages with the same effective
rights (R/W, U/S ANDed over all levels, XD ORed) and memory type merge into one range:
  start-end  size  phys (or "scattered")  perm (U/S + rwx)  type  pages (count x size)
followed by entries that map nothing (reserved bits, recursive self-maps -- shown, never
descended -- loops, tables beyond RAM) and what the dump cost.

Filters (combined, and pruned while walking): -w/--writable, --readonly, -x/--executable,
--nx, -u/--user, -s/--supervisor, --wx, -t/--type WB,WC,UC,UC-,WT,WP, -r/--range START-END
(or START+SIZE), --contains ADDR.

--check lists anomalies instead: W+X, user-accessible kernel addresses, one physical page
under different memory types, XD without EFER.NXE, reserved bits, tables/pages beyond RAM
(QEMU's memory map, `monitor info mtree -f`, or --ram-size), supervisor mappings left in
the lower half, a framebuffer not write-combining (--framebuffer PA+SIZE; by default the
display's video RAM from the memory map, e.g. vga.vram, checked where it is mapped),
CR0.WP=0, loops, self-maps.
Options: --ram-size SIZE, --ram START+SIZE, --framebuffer PA+SIZE, --no-framebuffer,
--kernel-base ADDR, --no-lower-half. Limits: --max-tables N, --max-ranges N (garbage
tables end truncated, with the reason).

Examples:
  kd pt
  info tab
  kd pt --wx
  kd pt -u -r 0-0x800000000000
  kd pt -t WC
  kd pt --check --framebuffer 0x80000000+8M"""

    name = "pt"
    aliases = ("info tab",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _paging_options(parser)
        P.add_filter_arguments(parser)
        P.add_check_arguments(parser)
        P.add_limit_arguments(parser)

    def run(self, args: argparse.Namespace, ctx: Context) -> Any:
        t = ctx.target()
        args = _with_pat(args, t)
        with _reads(t):
            return P.pt_report(t, args, cache=_cache(t))


class KdP2v(KdCommand):
    """Reverse lookup: every linear address that maps a physical address.

Usage: kd p2v [--json] [--cr3 ADDR] [--mode MODE] PA

Walks the whole address space and lists each alias of PA with its page size, rights and
memory type. Aliases with different memory types are a bug (`kd pt --check` says so).

Examples:
  kd p2v 0xb8000
  kd p2v $cr3"""

    name = "p2v"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("pa", type=int_arg, metavar="PA")
        _paging_options(parser)
        P.add_limit_arguments(parser)

    def run(self, args: argparse.Namespace, ctx: Context) -> Any:
        t = ctx.target()
        args = _with_pat(args, t)
        with _reads(t):
            return P.p2v_report(t, args, args.pa, cache=_cache(t))


class KdV2p(gdb.Function):  # type: ignore[misc]
    """$kd_v2p(VA): the physical address VA translates to (errors name the level and why).

Uses the live CR3 and paging mode, like the CPU. Example: p/x $kd_v2p($rip)"""

    def __init__(self) -> None:
        super().__init__("kd_v2p")

    def invoke(self, va: Any) -> int:
        from gdbext.target import GdbTarget
        from kdiag.paging.translate import translate

        target = GdbTarget()
        try:
            with target.physical_reads():
                return translate(target, int(va) & (2**64 - 1), cache=_cache(target))
        except KdiagError as err:
            raise gdb.GdbError(f"$kd_v2p: {err}") from None
        finally:
            target.close()


def register() -> None:
    KdWalk()
    KdPt()
    KdP2v()
    KdV2p()
    for event in ("cont", "memory_changed", "register_changed", "new_objfile", "exited"):
        registry = getattr(gdb.events, event, None)
        if registry is not None:
            registry.connect(_forget)
