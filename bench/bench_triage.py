"""``kdiag triage`` on a 1 GiB QEMU log against ``grep -c check_exception`` and ``tail -c 1M``.

The log is built in a temporary directory from real records of the golden logs (QEMU 7.2): the
64-bit timer IRQ record of ``lm64-timer-np.log`` (``Servicing hardware INT=0x20`` + ``v=20`` +
register dump, about 1.1 KB) repeated to the size asked, then the fatal chain of
``lm64-idt0-pf.log`` (#PF -> #DF -> triple fault). That is what 10-15 minutes of a 1 kHz timer
with ``-d int`` looks like before a crash. The file is deleted afterwards.

Targets: kdiag (engine) under 0.2x the grep time; kdiag's peak RSS under 100 MB. The kdiag
processes run with compiled bytecode (a private PYTHONPYCACHEPREFIX, warmed once), as an
installed kdiag does, even where the environment sets PYTHONDONTWRITEBYTECODE.
Usage: ``.venv/bin/python bench/bench_triage.py [--size-mib 1024] [--runs 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, report

LOGS = ROOT / "tests" / "golden" / "logs"
PY = sys.executable


def build_log(path: Path, size: int) -> int:
    timer = (LOGS / "lm64-timer-np.log").read_bytes()
    a = timer.index(b"Servicing hardware INT=0x20")
    b = timer.index(b"Servicing hardware INT=0x20", a + 10)
    rec = timer[a:b]
    fatal = (LOGS / "lm64-idt0-pf.log").read_bytes()
    fatal = fatal[fatal.index(b"check_exception old: 0xffffffff new 0xe"):]
    chunk = rec * max(1, (4 << 20) // len(rec))
    written = 0
    with open(path, "wb") as f:
        while written + len(chunk) <= size:
            f.write(chunk)
            written += len(chunk)
        while written + len(rec) <= size:
            f.write(rec)
            written += len(rec)
        f.write(fatal)
        written += len(fatal)
    return written


# Children run as an installed kdiag would: with compiled bytecode. This environment sets
# PYTHONDONTWRITEBYTECODE=1, which makes every process recompile the ~40 modules triage imports
# (about 0.15 s); a private PYTHONPYCACHEPREFIX keeps the .pyc files out of the tree.
ENV: dict[str, str] = {}


def timed(argv: list[str]) -> tuple[float, float, bytes]:
    """Wall time and peak RSS (MB) of one child process, and its stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=ENV or None)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, rusage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return dt, rusage.ru_maxrss / 1024.0, out


def median_run(argv: list[str], runs: int) -> tuple[float, float, bytes]:
    res = [timed(argv) for _ in range(runs)]
    return (statistics.median(r[0] for r in res), max(r[1] for r in res), res[-1][2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kdiag-bench-") as tmp:
        ENV.update(os.environ)
        ENV.pop("PYTHONDONTWRITEBYTECODE", None)
        ENV["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        log = Path(tmp) / "big.log"
        t0 = time.perf_counter()
        size = build_log(log, args.size_mib << 20)
        print(f"built {log.name}: {size / (1 << 20):.0f} MiB in {time.perf_counter() - t0:.1f} s",
              flush=True)
        code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); "
                "from kdiag.triage.engine import triage_path; t = time.perf_counter(); "
                "d = triage_path(sys.argv[1]); t = time.perf_counter() - t; "
                "print(d.outcome, d.scanned_bytes, t)")
        engine = [PY, "-c", code, str(log)]
        cli = [PY, "-m", "kdiag", "triage", str(log), "--json"]
        grep = ["grep", "-c", "check_exception", str(log)]
        tail = ["tail", "-c", "1M", str(log)]
        # warm the page cache equally for everybody, and compile kdiag's bytecode once
        subprocess.run(["cat", str(log)], stdout=subprocess.DEVNULL, check=True)
        timed(cli)
        g_t, _, g_out = median_run(grep, args.runs)
        t_t, _, _ = median_run(tail, args.runs)
        e_t, e_rss, e_out = median_run(engine, args.runs)
        c_t, c_rss, c_out = median_run(cli, args.runs)
        outcome, scanned, work = e_out.decode().split()
        print(f"grep -c check_exception: {g_out.decode().strip()}; engine: {outcome}, read "
              f"{int(scanned) >> 10} KiB of {size >> 20} MiB", flush=True)
        report("kdiag triage, in-process work", float(work), "grep -c check_exception", g_t,
               target="< 0.2x")
        report("kdiag triage engine (whole process)", e_t, "grep -c check_exception", g_t,
               target="< 0.2x")
        report("kdiag triage CLI --json", c_t, "grep -c check_exception", g_t)
        report("kdiag triage engine", e_t, "tail -c 1M", t_t)
        print(f"{'peak RSS engine / CLI':<38} {e_rss:10.1f} MB / {c_rss:.1f} MB   target: < 100 MB",
              flush=True)
        if b'"outcome": "triple-fault"' not in c_out:
            print("ERROR: the CLI did not find the triple fault", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
