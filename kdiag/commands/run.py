"""``kdiag run``: boot the bundled kernel (or your own) in QEMU, ready for gdb, QMP and triage."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

NAME = "run"
HELP = "boot the bundled kernel in QEMU (TCG) with gdbstub, QMP and -d int,cpu_reset logging"
DESCRIPTION = """\
Boot the bundled UEFI loader + x86-64 kernel under OVMF (or the i386 JOS-style kernel with
--kernel i386), in a private run directory, with the QEMU debugging plumbing switched on:
-d int,cpu_reset logging, -no-reboot -no-shutdown (a triple fault freezes the machine), QMP on a
unix socket in a 0700 directory, and the gdbstub on 127.0.0.1 only when --gdb is given.

The kernel is rebuilt first if its sources changed. Serial output is shown on the terminal
(or written to --serial FILE).

exit codes:
  0  ready line seen (--batch), or QEMU ended normally
  2  usage error, missing tool/firmware, build or launch failure
  3  the guest triple-faulted, shut down, or halted with interrupts off (a kernel panic)
  4  --timeout expired before the ready line (the last serial lines are shown)
  130 interrupted (Ctrl-C); QEMU is always stopped on the way out

examples:
  kdiag run --batch                               # boot healthy, exit 0 at "ready"
  kdiag run --scenario idt-missing --batch; kdiag triage --elf kernel/build/kernel-x86_64.elf LOG
  kdiag run --gdb 127.0.0.1:1234 --wait-gdb       # then attach gdb (command printed)
  kdiag run --scenario stack-overflow --watch     # diagnose the triple fault over QMP
"""

EXIT_READY = 0
EXIT_STOPPED = 3
EXIT_TIMEOUT = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", choices=("x86_64", "i386"), default="x86_64",
                        help="which bundled kernel to boot (default: x86_64)")
    parser.add_argument("--scenario", default="healthy", metavar="NAME",
                        help="fault scenario to select at boot (default: healthy); "
                             "`--scenario list` lists them")
    parser.add_argument("--elf", type=Path, metavar="FILE",
                        help="boot your own kernel ELF instead of the bundled one "
                             "(multiboot with --kernel i386; loaded by the bundled UEFI loader "
                             "otherwise)")
    parser.add_argument("--gdb", metavar="HOST:PORT",
                        help="start the gdbstub on a loopback address, e.g. 127.0.0.1:1234 "
                             "(port 0 picks a free one)")
    parser.add_argument("--wait-gdb", action="store_true",
                        help="start paused (-S) until gdb attaches and continues (implies --gdb)")
    parser.add_argument("--qmp", type=Path, metavar="PATH",
                        help="QMP socket path (its directory must be private, 0700); "
                             "default: qmp.sock in the run directory")
    parser.add_argument("--log", type=Path, metavar="FILE",
                        help="write QEMU's -d int,cpu_reset log here (default: run dir)")
    parser.add_argument("--serial", type=Path, metavar="FILE",
                        help="write serial output to FILE instead of the terminal")
    parser.add_argument("--batch", action="store_true",
                        help="no interaction: exit 0 at the ready line, 3 if the guest stops, "
                             "4 on timeout; QEMU is stopped in every case")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="give up after S seconds (default: 180 with --batch, none otherwise)")
    parser.add_argument("--watch", action="store_true",
                        help="when the guest triple-faults, diagnose it live over QMP")
    parser.add_argument("--run-dir", type=Path, metavar="DIR",
                        help="use DIR as the private run directory (created 0700)")
    parser.add_argument("--no-build", action="store_true",
                        help="do not run make on the kernel first")


def _say(text: str) -> None:
    print(f"kdiag: {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from kdiag.errors import UsageError
    from qmp_tools import launcher as L

    if args.scenario == "list":
        print("\n".join(L.known_scenarios(args.kernel)))
        return 0
    gdb_port = None
    gdb_host = "127.0.0.1"
    if args.gdb:
        gdb_host, gdb_port = L.parse_gdb_address(args.gdb)
    elif args.wait_gdb:
        gdb_port = 1234
    if args.batch and args.wait_gdb:
        raise UsageError("--batch and --wait-gdb exclude each other (nobody would continue)")
    cfg = L.QemuConfig(kernel=args.kernel, scenario=args.scenario, gdb_port=gdb_port,
                       gdb_host=gdb_host, wait_gdb=args.wait_gdb, qmp_path=args.qmp,
                       log_path=args.log, serial_path=args.serial, build=not args.no_build,
                       elf=args.elf)
    timeout = args.timeout if args.timeout is not None else (180.0 if args.batch else None)
    vm = L.QemuInstance.start(cfg, run_dir=args.run_dir)
    try:
        _say(f"run directory {vm.run_dir}")
        _say(f"QMP socket {vm.qmp_path}   -d log {vm.log_path}")
        if vm.gdb_port is not None:
            _say(f"attach gdb: {vm.gdb_attach_hint()}")
        if args.wait_gdb:
            _say(f"waiting for gdb on {vm.gdb_host}:{vm.gdb_port} (QEMU is paused until gdb "
                 "continues)")
        echo = None if args.serial else (lambda line: print(line, flush=True))
        return _supervise(vm, args, timeout, echo)
    except KeyboardInterrupt:
        _say("interrupted; stopping QEMU")
        return 130
    finally:
        vm.stop()


def _supervise(vm: object, args: argparse.Namespace, timeout: float | None,
               echo: object) -> int:
    from qmp_tools import launcher as L

    assert isinstance(vm, L.QemuInstance)
    ready = L.READY_PATTERN if args.kernel == "x86_64" else r"\bready\b"
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        if args.wait_gdb:
            while vm.status() in ("prelaunch", "paused"):
                vm.check_alive()
                if deadline and time.monotonic() > deadline:
                    raise L.WaitTimeout("gdb did not attach and continue in time")
                time.sleep(0.2)
        remaining = 1e9 if deadline is None else max(0.0, deadline - time.monotonic())
        line = vm.wait_serial(ready, timeout=remaining, on_line=echo)
        _say(f"guest is ready: {line.strip()}")
        if args.batch:
            return EXIT_READY
        remaining = 1e9 if deadline is None else max(0.0, deadline - time.monotonic())
        vm.wait_serial(r"(?!)", timeout=remaining, on_line=echo)  # follow until it stops
        return EXIT_READY
    except L.GuestStopped as stop:
        _drain(vm, echo)
        _say(f"{stop}")
        if stop.reason == L.Outcome.EXITED.value:
            return EXIT_READY if vm.proc.returncode == 0 else EXIT_STOPPED
        _say(f"diagnose it: kdiag triage {vm.log_path} --elf {L.KERNELS[args.kernel]}")
        if args.watch and stop.reason == L.Outcome.TRIPLE_FAULT.value:
            return _watch(vm)
        if not args.batch and stop.reason != L.Outcome.SHUTDOWN.value:
            _say("the machine is frozen for inspection (gdb/QMP); Ctrl-C stops QEMU")
            while vm.proc.poll() is None:
                time.sleep(0.5)
        return EXIT_STOPPED
    except L.WaitTimeout as err:
        _drain(vm, echo)
        tail = vm.serial_lines()[-10:]
        _say(f"timeout: {err}; last serial lines:")
        for ln in tail:
            print(f"  | {ln}", file=sys.stderr)
        return EXIT_TIMEOUT


def _drain(vm: object, echo: object) -> None:
    """Echo the serial lines the guest wrote after the last poll (it may have just stopped)."""
    from qmp_tools import launcher as L

    if echo is not None and isinstance(vm, L.QemuInstance):
        vm.flush_echo(echo)


def _watch(vm: object) -> int:
    from qmp_tools import launcher as L

    assert isinstance(vm, L.QemuInstance)
    try:
        from qmp_tools.watch import watch_path
    except ImportError:
        _say("live watch is not available in this build")
        return EXIT_STOPPED
    return int(watch_path(str(vm.qmp_path), elfs=[str(L.KERNELS[vm.config.kernel])]))
