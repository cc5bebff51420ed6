"""``kdiag watch --qmp SOCK``: wait for the triple fault and diagnose it live over QMP."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "watch"
HELP = "wait for a QEMU's triple fault (over QMP) and diagnose the frozen machine live"
DESCRIPTION = """\
Attach to a running QEMU's QMP socket and wait until the guest triple-faults. QEMU must run
with -no-reboot -no-shutdown (kdiag run does this): the triple fault then arrives as
SHUTDOWN {reason: guest-reset} and the machine stays frozen with the faulting CPU state. If it
already happened before kdiag attached (run state "shutdown"), that state is diagnosed at once.

The diagnosis applies the same rules as `kd triage` in gdb, on the live registers and memory
(no log needed), and prints the same report as `kdiag triage` (--json: the triage schema).
--save-core FILE also writes a dump-guest-memory ELF core (paging off) for later:
`kdiag triage --core FILE` reports the same cause. kdiag never resumes or resets the guest.

exit codes:
  0  the guest shut down normally (nothing to diagnose)
  1  the guest triple-faulted; the report names the cause
  2  QEMU is gone / refused / the state is unusable (one line on stderr)
  4  --timeout expired before the guest stopped

examples:
  kdiag run --scenario idt-missing --qmp /tmp/kd/qmp.sock &   # or any QEMU with -qmp unix:...
  kdiag watch --qmp /tmp/kd/qmp.sock --elf kernel/build/kernel-x86_64.elf
  kdiag watch --qmp /tmp/kd/qmp.sock --json --save-core crash.elf --timeout 60
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--qmp", required=True, metavar="SOCK",
                        help="the QEMU's QMP unix socket (or 127.0.0.1:PORT)")
    parser.add_argument("--elf", action="append", default=[], metavar="FILE",
                        help="kernel ELF to symbolize and disassemble the fault (repeatable)")
    parser.add_argument("--json", action="store_true",
                        help="print the triage JSON document instead of text")
    parser.add_argument("--save-core", type=Path, metavar="FILE",
                        help="also write a dump-guest-memory ELF core of the frozen machine")
    parser.add_argument("--log", type=Path, metavar="FILE",
                        help="the run's QEMU -d int,cpu_reset log: adds the exception chain "
                             "(vectors, error codes) to the live state")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="give up after S seconds without a triple fault (exit 4)")


def run(args: argparse.Namespace) -> int:
    from qmp_tools.session import QmpSession
    from qmp_tools.watch import watch

    with QmpSession.connect(args.qmp) as session:
        result = watch(session, elfs=args.elf, timeout=args.timeout,
                       save_core_path=args.save_core, as_json=args.json, log_path=args.log)
    return result.exit_code
