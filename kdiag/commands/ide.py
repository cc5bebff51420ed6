"""``kdiag ide``: write VS Code / CLion / RustRover configurations that debug the kernel in QEMU."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kdiag.errors import LaunchError, UsageError

NAME = "ide"
HELP = "write IDE run configurations (VS Code, CLion, RustRover) that boot QEMU and attach gdb"
DESCRIPTION = """\
Write remote-debug run configurations into a project directory. Starting the configuration
builds and boots the kernel with `kdiag run --wait-gdb --gdb 127.0.0.1:PORT` (QEMU paused until
gdb continues), then gdb runs, in this order:

  set architecture i386:x86-64          (before connecting; QEMU's stub is always 64-bit)
  file kernel/build/kernel-<arch>.elf   (symbols)
  source <kdiag>/gdbext/init.py         (the kd ... commands)
  target remote 127.0.0.1:PORT

vscode      .vscode/launch.json (cppdbg) + .vscode/tasks.json (background task whose problem
            matcher waits for "waiting for gdb on 127.0.0.1:PORT"; a stop task after debugging)
clion       .run/kdiag-qemu.run.xml (GDB Remote Debug) + .run/kdiag-qemu-start.run.xml (the
            before-launch step, `kdiag ide start`) + a kdiag block in .gdbinit; RustRover too
start       what the CLion before-launch step runs: start `kdiag run --wait-gdb` detached and
            return once gdb may attach (an IDE waits for before-launch steps to exit)

Existing files are merged, not overwritten: configurations and tasks with other names stay,
ours are replaced by name; comments and trailing commas in VS Code's JSON are accepted (the
rewritten file is plain JSON). Every changed file is first copied to NAME.bak (or
NAME.bak-YYYYmmdd-HHMMSS when that exists). Running it twice changes nothing.

examples:
  kdiag ide vscode --project .
  kdiag ide clion --project ~/src/mykernel --scenario idt-missing --gdb 127.0.0.1:1235
"""

IDES = ("vscode", "clion", "rustrover", "start")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ide", choices=IDES, help="which IDE to configure (or `start`, see above)")
    parser.add_argument("--project", type=Path, metavar="DIR",
                        help="the project directory to write into (must exist)")
    parser.add_argument("--scenario", metavar="NAME",
                        help="fault scenario the configuration boots (default: healthy)")
    parser.add_argument("--kernel", choices=("x86_64", "i386"), default="x86_64",
                        help="which bundled kernel (default: x86_64)")
    parser.add_argument("--gdb", default="127.0.0.1:1234", metavar="HOST:PORT",
                        help="gdbstub address, loopback only (default: 127.0.0.1:1234)")
    parser.add_argument("--elf", type=Path, metavar="FILE",
                        help="symbol file (default: the bundled kernel's ELF)")
    parser.add_argument("--gdb-path", metavar="PATH",
                        help="the gdb the IDE runs (default: gdb on PATH)")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S",
                        help="`start` only: give up if gdb cannot attach within S seconds "
                             "(the kernel build counts; default 600)")
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")


def _spec(args: argparse.Namespace):  # -> IdeSpec
    from kdiag.ide.spec import IdeSpec
    from qmp_tools import launcher as L

    host, port = L.parse_gdb_address(args.gdb)
    if port == 0:
        raise UsageError("--gdb needs a fixed port for an IDE configuration (not 0)")
    if args.scenario and args.scenario != "healthy":
        listing = L.KERNEL_DIR / args.kernel / "scenarios.list"
        if listing.is_file():
            L.check_scenario(args.kernel, args.scenario)
    elf = (args.elf or L.KERNELS[args.kernel]).resolve()
    gdb = args.gdb_path or shutil.which("gdb") or "gdb"
    return IdeSpec(project_root=L.PROJECT_ROOT, elf=elf, kernel=args.kernel,
                   scenario=args.scenario, port=port, host=host,
                   python=os.path.abspath(sys.executable), gdb=gdb)


def run(args: argparse.Namespace) -> int:
    if args.ide == "start":
        return _start(args)
    if args.project is None:
        raise UsageError(f"kdiag ide {args.ide} needs --project DIR")
    project = args.project.expanduser()
    if not project.is_dir():
        raise UsageError(f"project directory {project} does not exist")
    spec = _spec(args)
    from kdiag.ide import clion, vscode

    module = vscode if args.ide == "vscode" else clion
    results = module.write(project, spec)
    notes: list[str] = []
    if not spec.elf.is_file():
        notes.append(f"{spec.elf} does not exist yet; `make kernel` (or the first start) "
                     "builds it")
    if not spec.init_py.is_file():
        notes.append(f"{spec.init_py} is missing: the kd commands will not load")
    home_lines: list[str] = []
    if module is clion:
        home_lines = clion.home_gdbinit_lines(project)
        if not clion.kdiag_script(spec).is_file():
            notes.append(f"{clion.kdiag_script(spec)} is missing (pip install -e .): the "
                         "before-launch step needs it")
    if args.json:
        print(json.dumps({
            "ide": args.ide, "project": str(project.resolve()),
            "configuration": spec.config_name, "start": spec.task_label,
            "run": spec.kdiag_argv() + spec.run_args(),
            "gdb_setup": spec.gdb_setup_commands(),
            "files": [{"path": str(r.path), "changed": r.changed, "created": r.created,
                       "backup": str(r.backup) if r.backup else None} for r in results],
            "home_gdbinit": home_lines, "notes": notes}, indent=2))
        return 0
    for r in results:
        if not r.changed:
            print(f"unchanged  {r.path}")
        elif r.created:
            print(f"created    {r.path}")
        else:
            print(f"updated    {r.path}  (previous version: {r.backup})")
    print(f"\nconfiguration \"{spec.config_name}\" starts QEMU with:\n  kdiag "
          + " ".join(spec.run_args()) + "\nthen gdb runs:")
    for cmd in spec.gdb_setup_commands():
        print(f"  {cmd}")
    if home_lines:
        print("\nCLion/RustRover read the project's .gdbinit only when gdb allows it; add once "
              "to ~/.gdbinit:")
        for line in home_lines:
            print(f"  {line}")
    for note in notes:
        print(f"note: {note}")
    return 0


def _start(args: argparse.Namespace) -> int:
    """Start ``kdiag run --wait-gdb`` detached; return when gdb may attach."""
    spec = _spec(args)
    log_dir = Path(tempfile.mkdtemp(prefix="kdiag-ide-"))  # 0700
    log_path = log_dir / "kdiag-run.log"
    argv = spec.kdiag_argv() + spec.run_args()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd=spec.project_root,
                                start_new_session=True)
    marker = f"waiting for gdb on {spec.address}"
    deadline = time.monotonic() + args.timeout
    while True:
        text = log_path.read_text(errors="replace")
        for line in text.splitlines():
            if marker in line:
                print(line, flush=True)
                print(f"kdiag: QEMU runs detached (pid {proc.pid}); its output: {log_path}",
                      flush=True)
                return 0
        if proc.poll() is not None:
            tail = "\n".join(text.strip().splitlines()[-15:])
            print(tail, file=sys.stderr)
            raise LaunchError(f"kdiag run exited with code {proc.returncode} before gdb could "
                              f"attach (log: {log_path})")
        if time.monotonic() > deadline:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise LaunchError(f"gdb stub not ready within {args.timeout:g}s (log: {log_path})")
        time.sleep(0.2)
