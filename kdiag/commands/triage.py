"""``kdiag triage LOG``: why did the guest triple-fault? (offline, from a QEMU ``-d`` log)."""

from __future__ import annotations

import argparse
import json
import sys

from kdiag.triage.causes import CAUSE_IDS

NAME = "triage"
HELP = "diagnose a triple fault / fatal exception from a QEMU -d int,cpu_reset log"
DESCRIPTION = f"""\
Find the last fatal exception chain in a QEMU log (-d int,cpu_reset, best with -no-reboot),
decode it (vectors, error codes, the #PF bits, QEMU's vector*16+2 IDT quirk), symbolize and
disassemble the faulting instruction with --elf, and name the most likely root causes with the
log lines they rest on.

Large logs are read from the end: a 1 GiB log costs a few hundred KiB of reading when it ends
in the crash. A log that holds only -d cpu_reset dumps is judged from the register state QEMU
logged before the reset.

--elf FILE[@BIAS] may be repeated. BIAS is added to the ELF's link addresses (a relocated
kernel or module); code that runs at its physical load address before the jump to the higher
half is found through the ELF's p_paddr automatically.

exit codes:
  0  the log shows no fatal exception (clean)
  1  a fault was diagnosed (triple fault, reset, or an exception a handler took)
  2  unusable input: unreadable, binary, or not a QEMU -d log (one line on stderr)

cause ids: {", ".join(CAUSE_IDS)}

examples:
  qemu-system-x86_64 -accel tcg ... -d int,cpu_reset -D qemu.log -no-reboot
  kdiag triage qemu.log
  kdiag triage qemu.log --elf kernel/build/kernel-x86_64.elf --json | jq .causes[0].id
  kdiag triage --core crash.elf --elf kernel.elf   # a dump-guest-memory core (kdiag watch --save-core)
  kdiag triage --qmp run/qmp.sock                   # the frozen machine itself, live and read-only

With --core or --qmp (no LOG) the machine is taken as stopped by the fatal fault (QEMU with
-no-reboot -no-shutdown freezes it there); the rules read its IDT, GDT, TSS and page tables.
Given both a LOG and --core/--qmp, the chain comes from the log and memory from the machine.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kdiag.commands._target import add_target_arguments

    parser.add_argument("log", metavar="LOG", nargs="?",
                        help="QEMU log file (-D FILE of -d int,cpu_reset)")
    add_target_arguments(parser)
    parser.add_argument("--elf", action="append", default=[], metavar="FILE[@BIAS]",
                        help="kernel ELF to symbolize and disassemble with (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--count-resets", action="store_true",
                        help="count earlier triple faults in the whole file (reads all of it)")
    parser.add_argument("--no-registers", action="store_true",
                        help="leave the register dump out of the text report")


def run(args: argparse.Namespace) -> int:
    from kdiag.commands._target import close_target, open_target
    from kdiag.errors import UsageError
    from kdiag.render.triage import to_json, to_text
    from kdiag.triage.engine import triage_path, triage_state

    image = None
    if args.elf:  # pyelftools and capstone only when needed (a 1 GiB log costs less)
        from kdiag.triage.location import KernelImage, parse_elf_spec

        image = KernelImage([parse_elf_spec(e) for e in args.elf])
    target = open_target(args) if (args.core or args.qmp) else None
    if args.log is None and target is None:
        raise UsageError("give a LOG file, --core DUMP or --qmp SOCKET (see kdiag triage --help)")
    try:
        if args.log is not None:
            diag = triage_path(args.log, image=image, count_all_resets=args.count_resets,
                               target=target)
        else:
            assert target is not None
            diag = triage_state(target.state(), target=target, image=image)
    finally:
        close_target(target)
    if args.json:
        json.dump(to_json(diag), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(to_text(diag, registers=not args.no_registers))
    sys.stdout.flush()
    return diag.exit_code
