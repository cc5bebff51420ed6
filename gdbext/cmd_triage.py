"""``kd triage``: why did the machine just triple-fault? The rules of ``kdiag triage``, live.

After a triple fault QEMU started with ``-no-reboot -no-shutdown`` stops with the CPU state
and memory preserved (``monitor info status``: ``paused (shutdown)``; gdb reports SIGQUIT at
the faulting RIP). ``kd triage`` reads that state through :class:`gdbext.target.GdbTarget`
and runs :func:`kdiag.triage.engine.triage_state` (the engine ``kdiag watch`` and
``kdiag triage --core`` use), so the rules see the registers and, through memory, the IDT
gates, the GDT/TSS entries and the page tables. Text and JSON come from
:mod:`kdiag.render.triage`, the same renderers as the CLI.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import gdb  # type: ignore[import-not-found]

from gdbext.common import Context, KdCommand
from kdiag.errors import UsageError
from kdiag.render.reports import Report

SHUTDOWN = "paused (shutdown)"


def _gdb_elfs() -> list[str]:
    """The ELF files gdb has loaded (``file``, ``add-symbol-file``), for --elf by default."""
    out: list[str] = []
    names = [gdb.current_progspace().filename] + [o.filename for o in gdb.objfiles()]
    for name in names:
        if not name or name in out or not os.path.isfile(name):
            continue
        try:
            with open(name, "rb") as f:
                if f.read(4) != b"\x7fELF":
                    continue
        except OSError:
            continue
        out.append(name)
    return out


class KdTriage(KdCommand):
    """Diagnose the triple fault (or fatal stop) QEMU is frozen in: the rules of `kdiag triage`.

Usage: kd triage [--json] [--elf FILE[@BIAS]]... [--no-elf] [--log FILE] [--no-registers]

Run it after the triple-fault stop: QEMU started with -no-reboot -no-shutdown keeps the CPU
and memory as they were (gdb says "Program received signal SIGQUIT"; `monitor info status`
says "paused (shutdown)"; do not stepi/continue, they hang). kd triage then:

  - runs the root-cause rules of `kdiag triage` on the live registers (IDTR/GDTR/TR against
    the mode, CR0/CR4/EFER consistency, CPL, CR2 against RIP and RSP);
  - goes further with memory: walks the page tables for RIP, RSP and CR2 and names the entry
    that stops the walk ("PML4[0x1ff] at 0x1500ff8 = 0x0 is not present while walking RIP"),
    reads the IDT gate of the vector (#DF, whose delivery failed, and the likely first fault),
    the handler's page and code segment, the GDT entries of CS, SS and TR, and the TSS stacks a
    delivery switches to (RSP0 from ring 3, the IST of the gate);
  - decodes the instruction at RIP from memory and walks its memory operand (a NULL pointer,
    a non-canonical or unmapped address);
  - with the ELF (default: the files gdb loaded with `file`/`add-symbol-file`; --elf FILE to
    choose, FILE@BIAS for code running BIAS above its link address, --no-elf for none):
    symbol+offset, file:line, the instruction and the ones before it (a `mov cr3` just before
    an unmapped RIP is evidence of its own).

The report puts the verdict first, then the ranked causes with their evidence ([memory] for
what was read from the machine), the memory checks (ok/BAD) and the registers. --json prints
the `kdiag triage --json` document (outcome, chain, first_fault, registers, location, causes)
plus "memory": each check with "ok" and, when wrong, the "entry".

Without a log the exception vectors and error codes are unknown (QEMU keeps no record of
them). --log FILE (the run's `-d int,cpu_reset -D FILE`) takes the chain from the log and the
memory from this machine. At a stop that is not a triple fault (a breakpoint, Ctrl-C) there is
no fatal state to triage without --log: the memory checks of the current state are shown.

Examples:
  kd triage
  kd triage --json
  kd triage --elf kernel/build/kernel-x86_64.elf --log run/qemu.log
  kdiag triage --qmp run/qmp.sock     (the same from a shell, over QMP)"""

    name = "triage"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--elf", action="append", default=[], metavar="FILE[@BIAS]",
                            help="kernel ELF to symbolize with (repeatable; default: gdb's)")
        parser.add_argument("--no-elf", action="store_true", help="do not symbolize")
        parser.add_argument("--log", metavar="FILE",
                            help="the run's QEMU -d int,cpu_reset log: the chain comes from it")
        parser.add_argument("--no-registers", action="store_true",
                            help="leave the register dump out of the text report")

    def run(self, args: argparse.Namespace, ctx: Context) -> Any:
        from kdiag.render.triage import to_json, to_text
        from kdiag.triage.engine import triage_path, triage_state
        from kdiag.triage.location import KernelImage, parse_elf_spec

        if args.no_elf and args.elf:
            raise UsageError("--elf and --no-elf exclude each other")
        specs = [parse_elf_spec(e) for e in args.elf] if args.elf else (
            [] if args.no_elf else [parse_elf_spec(p) for p in _gdb_elfs()])
        image = KernelImage(specs) if specs else None
        target = ctx.target()
        status = target.vm_status()
        state = target.state()
        if args.log:
            diag = triage_path(args.log, image=image, target=target)
        elif status == SHUTDOWN:
            diag = triage_state(state, target=target, image=image)
        else:
            diag = triage_state(state, target=target, image=image, outcome="clean")
            diag.verdict = (f"QEMU is {status}, not stopped by a triple fault: without a log "
                            "there is no fatal state to diagnose (give --log FILE for an "
                            "exception a handler took); the memory checks of the current state "
                            "follow")
            diag.notes = [n for n in diag.notes if "start-up" not in n and
                          "no interrupt records" not in n]
        if status == SHUTDOWN and not args.log:
            diag.notes.append("QEMU is paused (shutdown): with -no-reboot -no-shutdown that is a "
                              "triple fault (QMP: SHUTDOWN reason guest-reset), the CPU and "
                              "memory as they were; stepi/continue would hang")
        return Report(lambda: to_text(diag, registers=not args.no_registers).rstrip("\n"),
                      lambda: to_json(diag))


def register() -> None:
    KdTriage()
