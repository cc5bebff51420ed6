"""`make demo`: build the bundled kernel, crash it, triage the crash, then decode a live machine.

1. boots a fault scenario (default ``stack-overflow``) under OVMF + TCG until the guest stops,
2. runs ``kdiag triage`` on its ``-d int,cpu_reset`` log with the kernel ELF, then attaches gdb
   to the frozen machine and runs ``kd triage`` there (the same rules, plus its memory),
3. boots the healthy kernel with a gdbstub on 127.0.0.1 and runs the kdiag gdb commands in a
   real gdb (``source gdbext/init.py``): GDT, IDT, TSS, control registers, page tables.

Every QEMU it starts is stopped before it exits. Usage: ``make demo`` or
``.venv/bin/python scripts/demo.py [--scenario NAME]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qmp_tools import launcher as L  # noqa: E402

ELF = L.KERNELS["x86_64"]


def banner(text: str) -> None:
    print(f"\n\033[1m=== {text}\033[0m" if sys.stdout.isatty() else f"\n=== {text}", flush=True)


def kdiag(*args: str) -> int:
    cmd = [sys.executable, "-m", "kdiag", *args]
    print("$ kdiag " + " ".join(args), flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode


def crash_and_triage(scenario: str, work: Path) -> None:
    banner(f"1. boot the bundled kernel with the '{scenario}' bug (QEMU -d int,cpu_reset)")
    log = work / "qemu.log"
    cfg = L.QemuConfig(scenario=scenario, log_path=log, build=False, gdb_port=0)
    with L.QemuInstance.start(cfg) as vm:
        outcome = vm.wait_stopped(timeout=180)
        for line in vm.serial_lines()[-6:]:
            print(f"  serial | {line}")
        print(f"  QEMU says: guest {outcome}; log {log.stat().st_size} bytes")
        banner("2. triage the log")
        kdiag("triage", str(log), "--elf", str(ELF))
        banner("2b. the same crash live: gdb attached to the frozen machine (-no-shutdown)")
        run_gdb(vm.gdb_port, ["kd triage --no-registers"], work)


def run_gdb(port: int | None, commands: list[str], work: Path, *, prelude: tuple[str, ...] = ()
            ) -> None:
    """Run ``commands`` in a batch gdb attached to 127.0.0.1:``port`` with gdbext loaded,
    echoing each as ``(gdb) CMD``; detach at the end (the guest is left as it was)."""
    gdb_args = ["gdb", "-q", "-batch", "-nx",
                "-ex", "set architecture i386:x86-64",
                "-ex", f"file {ELF}",
                "-ex", f"source {ROOT / 'gdbext' / 'init.py'}",
                "-ex", f"target remote 127.0.0.1:{port}"]
    for c in prelude:
        gdb_args += ["-ex", c]
    for c in commands:
        gdb_args += ["-ex", f"echo \\n(gdb) {c}\\n", "-ex", c]
    gdb_args += ["-ex", "detach"]
    subprocess.run(gdb_args, cwd=work, check=False, timeout=300)


def live_decode(work: Path) -> None:
    banner("3. boot healthy, attach gdb, decode the live machine")
    cfg = L.QemuConfig(scenario="healthy", gdb_port=0, build=False)
    with L.QemuInstance.start(cfg) as vm:
        vm.wait_serial(r"\[kernel\] ready", timeout=180)
        # Stop in kernel code (CPL0: MSRs such as IA32_PAT are readable there) on a timer tick.
        commands = ["kd gdt", "kd tss", "kd cr", "kd msr STAR", "kd pat", "kd idt 0 14",
                    "kd pt", "kd pt --check", "kd walk $rip", "kd bt"]
        run_gdb(vm.gdb_port, commands, work, prelude=("tbreak trap_dispatch", "continue"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenario", default="stack-overflow")
    args = ap.parse_args()
    if not shutil.which("gdb"):
        print("demo: gdb missing (apt-get install gdb)", file=sys.stderr)
        return 2
    L.build_kernel("x86_64")
    with tempfile.TemporaryDirectory(prefix="kdiag-demo-") as tmp:
        crash_and_triage(args.scenario, Path(tmp))
        live_decode(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
