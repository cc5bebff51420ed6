"""QMP backend benchmarks: bulk physical reads, and triple fault -> printed report.

1. Bulk physical read rate of ``QmpTarget.read_phys`` (pmemsave into a private file, read back,
   deleted) against the anchor: the raw QMP ``pmemsave`` of the same range (QEMU writing the
   file, nothing read back). Target: >= 0.5x the raw rate. HMP ``xp`` (what a monitor-only
   reader would use) is shown for scale on 256 KiB.
2. Latency from QEMU's SHUTDOWN (triple fault) event to the printed ``kdiag watch`` report on
   fault scenarios, against the anchor: offline ``triage_path`` of the same run's log.

The VM is the bundled kernel (healthy, then paused through the launcher's private monitor so
memory is stable). Medians; runs are interleaved so drift affects both sides alike. Prints
only; never asserts on time.
Usage: ``.venv/bin/python bench/bench_qmp.py [--runs N] [--sizes 1,16,64] [--scenarios a,b]``
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

from _common import report

from qmp_tools import launcher as L
from qmp_tools.session import QmpSession
from qmp_tools.target import QmpTarget
from qmp_tools.watch import watch

BASE = 0x100000  # inside RAM on q35 -m 256, away from the legacy holes


def bench_reads(runs: int, sizes_mb: list[int]) -> None:
    vm = L.QemuInstance.start(L.QemuConfig(scenario="healthy", build=False, log_items=""))
    try:
        vm.wait_serial(r"\[kernel\] ready", timeout=180)
        vm.qmp("stop")  # stable memory; the launcher's own monitor, not the one measured
        with QmpSession.connect(str(vm.qmp_path)) as session, \
                tempfile.TemporaryDirectory(prefix="kdiag-bench-") as tmp:
            target = QmpTarget(session)
            raw_file = Path(tmp) / "raw.bin"
            for mb in sizes_mb:
                size = mb << 20
                ours, raw = [], []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    data = target.read_phys(BASE, size)
                    ours.append(time.perf_counter() - t0)
                    assert len(data) == size
                    del data
                    t0 = time.perf_counter()
                    session.execute("pmemsave", {"val": BASE, "size": size,
                                                 "filename": str(raw_file)}, timeout=120)
                    raw.append(time.perf_counter() - t0)
                    raw_file.unlink()
                ours_rate = mb / statistics.median(ours)
                raw_rate = mb / statistics.median(raw)
                report(f"read_phys {mb} MiB (QmpTarget)", ours_rate, "raw QMP pmemsave",
                       raw_rate, unit="MB/s", target=">= 0.5x")
            xp_target = QmpTarget(session, use_pmemsave=False)
            size = 256 << 10
            t0 = time.perf_counter()
            xp_target.read_phys(BASE, size)
            xp_rate = (size / (1 << 20)) / (time.perf_counter() - t0)
            report("HMP xp 256 KiB (for scale)", xp_rate, "raw QMP pmemsave", raw_rate,
                   unit="MB/s")
            target.close()
    finally:
        vm.stop()


def bench_watch(runs: int, scenarios: list[str]) -> None:
    from kdiag.triage.engine import triage_path

    elf = L.KERNELS["x86_64"]
    for scenario in scenarios:
        latencies, offline = [], []
        for _ in range(runs):
            vm = L.QemuInstance.start(L.QemuConfig(scenario=scenario, build=False))
            try:
                with QmpSession.connect(str(vm.qmp_path)) as session:
                    res = watch(session, elfs=[elf], timeout=180, out=io.StringIO(),
                                err=io.StringIO())
                if res.latency is None:
                    print(f"{scenario}: no triple fault ({res.outcome})")
                    break
                latencies.append(res.latency)
                t0 = time.perf_counter()
                triage_path(vm.log_path)
                offline.append(time.perf_counter() - t0)
            finally:
                vm.stop()
        if latencies:
            report(f"watch {scenario}: fault -> report", statistics.median(latencies),
                   "offline triage of its log", statistics.median(offline))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="1,16,64", help="read sizes in MiB (comma-separated)")
    ap.add_argument("--scenarios", default="idt-missing,stack-overflow")
    args = ap.parse_args()
    L.build_kernel("x86_64")
    bench_reads(args.runs, [int(s) for s in args.sizes.split(",") if s])
    bench_watch(max(1, min(args.runs, 3)), [s for s in args.scenarios.split(",") if s])


if __name__ == "__main__":
    main()
