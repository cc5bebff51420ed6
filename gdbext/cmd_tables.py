"""``kd gdt``, ``kd idt``, ``kd tss`` (and Bochs' ``info gdt``, ``info idt``, ``info tss``)."""

from __future__ import annotations

import argparse
from typing import Any

from gdbext.common import Context, KdCommand, int_arg
from kdiag.commands._machine import add_range, selected
from kdiag.errors import KdiagError, MsrUnavailable
from kdiag.machine.tables import prefetch_tables, read_tss, stack_probe_ranges, table_ranges
from kdiag.render import reports


def _prefetch(target: Any, which: tuple[str, ...]) -> None:
    """Read the tables a report needs ahead, in as few requests as the target can."""
    try:
        prefetch_tables(target, target.state(), which)
    except KdiagError:
        pass  # the report's own reads raise the real error


class KdGdt(KdCommand):
    """Decode the GDT: descriptors in Bochs' words, registers that use them, layout checks.

Usage: kd gdt [--json] [-v] [--star] [FIRST [LAST]]

Reads GDTR (from QEMU's `info registers`) and decodes every descriptor: code/data
segments with base, limit, type, DPL and 16/32/64-bit, 16-byte TSS/LDT descriptors in
IA-32e mode. `<- cs,ss` marks the registers whose selector points at an entry; `!` marks
entries a warning refers to.

Checks: a segment register whose selector lies beyond the GDT limit (a stale selector
from the firmware's GDT survives until the next reload, e.g. iretq) or names the wrong
descriptor type or DPL; with --star, IA32_STAR's SYSCALL/SYSRET selectors against the
descriptor types they land on (user data must sit right before 64-bit user code).

Options:
  FIRST [LAST]  only these selectors (numbers or gdb expressions)
  --star        also read IA32_STAR/LSTAR (rdmsr injection, see `help kd msr`) and check them
  -v            raw descriptor and its bit fields
  --json        {"base","limit","long_mode","entries":[{"selector","kind","dpl","present",
                "base","limit","long",...}],"warnings":[...]}

Examples:
  kd gdt
  kd gdt 0x28
  kd gdt --star
  info gdt"""

    name = "gdt"
    aliases = ("info gdt",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--star", action="store_true",
                            help="read IA32_STAR/LSTAR by rdmsr injection and check them")
        add_range(parser, "selector", int_arg)

    def run(self, args: argparse.Namespace, ctx: Context) -> Any:
        t = ctx.target()
        msrs: dict[int, int] = {}
        if args.star:  # both read by one injection
            try:
                got = t.read_msrs([0xC0000081, 0xC0000082])
            except MsrUnavailable as err:
                raise MsrUnavailable(f"--star: {err}", msr=err.msr) from err
            for index, read in got.items():
                if isinstance(read, str):
                    raise MsrUnavailable(f"--star: {read}", msr=index)
                msrs[index] = read.value
        report = reports.gdt_report(t, verbose=args.verbose, select=selected(args), msrs=msrs)
        if args.star and t.msr_method:
            report.text += f"\n(IA32_STAR/LSTAR {t.msr_method})"
            report.doc["msr_method"] = t.msr_method
        return report


class KdIdt(KdCommand):
    """Decode the IDT: gates with symbolized handlers, checked against the GDT and the TSS.

Usage: kd idt [--json] [-v] [--all] [FIRST [LAST]]

Reads IDTR and decodes each gate (16-byte in IA-32e mode, 8-byte otherwise): type,
target selector:offset with the handler's symbol from gdb's loaded files, DPL, IST.
Runs of empty gates are folded into one line (--all lists them).

Checks: CPU exception vectors without a present gate (or cut off by the IDT limit),
gate types the CPU rejects in this mode, selectors that are not present (64-bit) code
segments, non-canonical or unmapped handler addresses, IST indices whose TSS slot is 0.

Options:
  FIRST [LAST]  only these vectors
  --all         list empty gates one by one
  -v            raw gate and its bit fields
  --json        {"base","limit","entries":[{"vector","type","dpl","present","selector",
                "offset","ist","symbol",...}],"warnings":[...]}

Examples:
  kd idt
  kd idt 14
  kd idt 0x20 0x2f
  info idt"""

    name = "idt"
    aliases = ("info idt",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--all", action="store_true", help="list empty gates one by one")
        add_range(parser, "vector", int_arg)

    def run(self, args: argparse.Namespace, ctx: Context) -> Any:
        _prefetch(ctx.target(), ("gdt", "idt", "tss"))  # the gates are checked against both
        return reports.idt_report(ctx.target(), verbose=args.verbose, select=selected(args),
                                  symbolize=ctx.symbolize, show_all=args.all)


class KdTss(KdCommand):
    """Decode the current TSS: RSP0-2, IST1-7 (and the vectors using each), the I/O map base.

Usage: kd tss [--json] [-v]

Reads the TSS at TR's cached base and limit (what the CPU uses, even if the GDT entry
changed since `ltr`). 64-bit TSS: RSP0-RSP2, IST1-IST7 with symbols and the IDT vectors
whose gates select each IST slot; 32-bit TSS: SS0:ESP0.. and the saved task state.

Checks: TR never loaded, a limit below 0x67, RSP0 zero (the first interrupt from user
mode faults), RSP0/IST stacks non-canonical or unmapped.

Options:
  -v      hex dump of the 104 bytes
  --json  {"tr":{...},"rsp0".."rsp2","ist1".."ist7","iopb","ist_users","warnings"}

Examples:
  kd tss
  info tss"""

    name = "tss"
    aliases = ("info tss",)

    def run(self, args: argparse.Namespace, ctx: Context) -> Any:
        t = ctx.target()
        view = None
        try:  # the TSS, then in one go the IDT (which vectors use each IST) and the pages
            st = t.state()  # below the stack tops (nearby ones merge into one read)
            prefetch_tables(t, st, ("tss",))
            view = read_tss(t, st)
            t.prefetch_virt(table_ranges(st, ("idt",)) + stack_probe_ranges(view))
        except KdiagError:
            pass  # the report's own reads raise the real error
        return reports.tss_report(t, verbose=args.verbose, symbolize=ctx.symbolize, view=view)


def register() -> None:
    KdGdt()
    KdIdt()
    KdTss()
