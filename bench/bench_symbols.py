"""Symbolization of 10,000 addresses: kdiag's Symbolizer against `addr2line -f -e ELF`.

For each ELF (the bundled i386 kernel with STABS, the bundled x86-64 kernel with DWARF, and
the largest ELF with DWARF found on this machine, under /usr/lib/debug or among the system's
binaries), 10,000 random code addresses are symbolized:

- addr2line: `addr2line -f -e ELF` reading the addresses from stdin (the whole process);
- kdiag cold: no cached index (an emptied KDIAG_CACHE_DIR): read the ELF, build the index,
  write it to the cache, look the addresses up (in-process: kdiag is a library, and gdb and
  the CLI already run Python);
- kdiag warm: index from the disk cache (fresh Python objects), then the lookups;
- for reference, the end-to-end `python -m kdiag symbolize --elf ELF < addresses` process
  (interpreter start included; text and --format addr2line), next to the floor of any
  Python process on the machine (`python -c pass`, `python -S -c pass`, and `python -m` of an
  empty module: `-m` itself imports runpy and importlib.util), and the CLI minus the floor.

addr2line, cold and warm run interleaved, round after round, so that all three see the same
machine load (the machines this runs on are shared); the medians of wall time and of CPU time
(user + sys; addr2line's from the child's rusage) are printed, with their ratios.

Targets (anchors: addr2line resolves 10,000 addresses of a small kernel in about 15 ms):
warm faster than addr2line; cold within 3x of it. Printed, never asserted.
"""

from __future__ import annotations

import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, median_time, report

from kdiag.symbols import Symbolizer, symbolizer
from kdiag.symbols.elffile import SHF_EXECINSTR, ElfFile

N = 10_000


def code_addresses(path: Path, n: int = N, seed: int = 1) -> list[int]:
    with ElfFile(path) as e:
        ranges = [(s.addr, s.addr + s.size) for s in e.sections
                  if s.flags & SHF_EXECINSTR and s.size]
    total = sum(hi - lo for lo, hi in ranges)
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        k = rnd.randrange(total)
        for lo, hi in ranges:
            if k < hi - lo:
                out.append(lo + k)
                break
            k -= hi - lo
    return out


def has_dwarf(path: Path) -> bool:
    try:
        with ElfFile(path) as e:
            return e.section(".debug_info") is not None and e.section(".debug_line") is not None
    except Exception:
        return False


def largest_dwarf_elf(bases: tuple[str, ...] = ("/usr/lib/debug", "/usr/lib/x86_64-linux-gnu",
                                                 "/usr/bin", "/usr/local/bin", "/usr/libexec")
                      ) -> Path | None:
    """The largest readable ELF with .debug_info/.debug_line under ``bases``."""
    cands: list[tuple[int, Path]] = []
    for base in bases:
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                p = Path(dirpath) / f
                try:
                    if p.is_symlink() or not p.is_file() or p.stat().st_size < 64 * 1024:
                        continue
                    with open(p, "rb") as fh:
                        if fh.read(4) != b"\x7fELF":
                            continue
                except OSError:
                    continue
                cands.append((p.stat().st_size, p))
    for _size, p in sorted(cands, reverse=True):
        if has_dwarf(p):
            return p
    return None


def run_addr2line(path: Path, text: str) -> tuple[float, float]:
    """One `addr2line -f -e ELF` process reading ``text``: (wall, CPU user+sys) seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(["addr2line", "-f", "-e", str(path)], input=text, capture_output=True,
                   text=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def run_kdiag(path: Path, addrs: list[int], cache_dir: str, cold: bool) -> tuple[float, float]:
    """Symbolizer + add_elf + lookup_many in this process: (wall, CPU) seconds. ``cold``
    empties the disk cache first; the in-memory index is always dropped (a new process)."""
    os.environ["KDIAG_CACHE_DIR"] = cache_dir
    if cold:
        for f in Path(cache_dir).glob("*.idx"):
            f.unlink()
    symbolizer._memory.clear()
    c0, t0 = time.process_time(), time.perf_counter()
    sym = Symbolizer()
    sym.add_elf(path)
    locs = sym.lookup_many(addrs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(locs) == len(addrs)
    return wall, cpu


def time_cli(path: Path, text: str, cache_dir: str, fmt: str = "text") -> float:
    """Median wall time of the whole `python -m kdiag symbolize --elf ELF` process reading
    ``text`` from stdin, with a warm index cache."""
    env = dict(os.environ, KDIAG_CACHE_DIR=cache_dir)

    def run() -> None:
        subprocess.run([sys.executable, "-m", "kdiag", "symbolize", "--elf", str(path),
                        "--format", fmt], input=text, capture_output=True, text=True,
                       check=True, env=env, cwd=ROOT)
    return median_time(run, repeat=5)


def time_floors() -> dict[str, float]:
    """The start-up floor of any Python process on this machine, median wall times:
    ``python -c pass``, ``python -S -c pass`` (without site: no venv .pth files) and
    ``python -m`` of an empty module (what ``-m`` adds: runpy and importlib.util)."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="kdiag-bench-") as d:
        Path(d, "kdiag_bench_empty.py").write_text("")
        for label, cmd in (("python -c pass", [sys.executable, "-c", "pass"]),
                           ("python -S -c pass", [sys.executable, "-S", "-c", "pass"]),
                           ("python -m (empty module)",
                            [sys.executable, "-m", "kdiag_bench_empty"])):
            def start(cmd: list[str] = cmd) -> None:
                subprocess.run(cmd, check=True, cwd=d)
            out[label] = median_time(start, repeat=9)
    return out


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def bench(label: str, path: Path) -> None:
    """Rounds of (addr2line, kdiag cold, kdiag warm), interleaved so that all three see the
    same machine load; medians of wall and CPU time."""
    addrs = code_addresses(path)
    text = "\n".join(f"{a:x}" for a in addrs) + "\n"
    size = path.stat().st_size
    print(f"== {label}: {path} ({size / 1e6:.1f} MB), {len(addrs)} addresses", flush=True)
    first = run_addr2line(path, text)
    rounds = 5 if first[0] < 2.0 else 3
    res: dict[str, list[tuple[float, float]]] = {"a2l": [first], "cold": [], "warm": []}
    with tempfile.TemporaryDirectory(prefix="kdiag-bench-") as cache_dir:
        for r in range(rounds):
            if r:
                res["a2l"].append(run_addr2line(path, text))
            res["cold"].append(run_kdiag(path, addrs, cache_dir, cold=True))
            res["warm"].append(run_kdiag(path, addrs, cache_dir, cold=False))
        cli_warm = {fmt: time_cli(path, text, cache_dir, fmt) for fmt in ("text", "addr2line")}
        floors = time_floors()
    med = {k: (_median([w for w, _c in v]), _median([c for _w, c in v])) for k, v in res.items()}
    a2l_wall, a2l_cpu = med["a2l"]
    for what, target in (("cold", "<= 3x"), ("warm", "< 1x")):
        wall, cpu = med[what]
        report(f"{label} {what} (wall)", wall, "addr2line -f (wall)", a2l_wall, target=target)
        report(f"{label} {what} (CPU)", cpu, "addr2line -f (CPU)", a2l_cpu)
    floor = floors["python -c pass"]
    for fmt, wall in cli_warm.items():
        report(f"{label} warm, whole CLI ({fmt})", wall, "addr2line -f (wall)", a2l_wall)
        report("  minus the floor (python -c pass)", wall - floor, "addr2line -f (wall)",
               a2l_wall)
    for name, wall in floors.items():
        report(f"  floor: {name}", wall, "addr2line -f (wall)", a2l_wall)


def main() -> int:
    if subprocess.run(["which", "addr2line"], capture_output=True).returncode:
        print("addr2line (binutils) not installed: nothing to compare with")
        return 0
    build = ROOT / "kernel" / "build"
    for label, p in (("i386 kernel (STABS)", build / "kernel-i386.elf"),
                     ("x86-64 kernel (DWARF)", build / "kernel-x86_64.elf")):
        if p.is_file():
            bench(label, p)
        else:
            print(f"== {label}: {p} not built (make kernel); skipped")
    dbg = largest_dwarf_elf(("/usr/lib/debug",))
    if dbg is not None:  # a separate debug file: all DWARF, many units
        bench("largest /usr/lib/debug ELF", dbg)
    big = largest_dwarf_elf()
    if big is None:
        print("== no ELF with DWARF found on this machine (install a -dbg package); skipped")
    elif big != dbg:
        bench("largest DWARF ELF", big)
    return 0


if __name__ == "__main__":
    sys.exit(main())
