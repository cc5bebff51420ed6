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
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", metavar="LOG", help="QEMU log file (-D FILE of -d int,cpu_reset)")
    parser.add_argument("--elf", action="append", default=[], metavar="FILE[@BIAS]",
                        help="kernel ELF to symbolize and disassemble with (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--count-resets", action="store_true",
                        help="count earlier triple faults in the whole file (reads all of it)")
    parser.add_argument("--no-registers", action="store_true",
                        help="leave the register dump out of the text report")


def run(args: argparse.Namespace) -> int:
    from kdiag.render.triage import to_json, to_text
    from kdiag.triage.engine import triage_path
    from kdiag.triage.location import KernelImage, parse_elf_spec

    image = KernelImage([parse_elf_spec(e) for e in args.elf]) if args.elf else None
    diag = triage_path(args.log, image=image, count_all_resets=args.count_resets)
    if args.json:
        json.dump(to_json(diag), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(to_text(diag, registers=not args.no_registers))
    sys.stdout.flush()
    return diag.exit_code
