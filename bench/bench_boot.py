"""Boot-to-ready time of the bundled kernel against a minimal UEFI app, both under TCG + OVMF.

Anchor: ``bench/hello_efi`` (prints one line and powers off), built with gnu-efi here, booted
with the same QEMU options by the same launcher. Prints medians of 3 boots each and the ratio.
Usage: ``.venv/bin/python bench/bench_boot.py [--runs N]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import ROOT, report

from qmp_tools import launcher as L

EFI_INC = ["-I/usr/include/efi", "-I/usr/include/efi/x86_64"]


def build_hello(out: Path) -> Path:
    """Build the anchor app with the same gnu-efi recipe as the loader; return the .efi path."""
    src = ROOT / "bench" / "hello_efi" / "hello.c"
    obj, so, efi = out / "hello.o", out / "hello.so", out / "hello.efi"
    subprocess.run(["gcc", *EFI_INC, "-DEFI_FUNCTION_WRAPPER", "-ffreestanding", "-fno-stack-protector",
                    "-fpic", "-fshort-wchar", "-mno-red-zone", "-O2", "-c", str(src), "-o", str(obj)],
                   check=True)
    subprocess.run(["ld", "-shared", "-Bsymbolic", "-nostdlib", "-znocombreloc", "-T",
                    "/usr/lib/elf_x86_64_efi.lds", "/usr/lib/crt0-efi-x86_64.o", str(obj), "-o",
                    str(so), "-L/usr/lib", "-lefi", "-lgnuefi"], check=True)
    subprocess.run(["objcopy", "-j", ".text", "-j", ".sdata", "-j", ".data", "-j", ".dynamic",
                    "-j", ".dynsym", "-j", ".rel", "-j", ".rela", "-j", ".rel.*", "-j", ".rela.*",
                    "-j", ".reloc", "--target=efi-app-x86_64", "--subsystem=10", str(so), str(efi)],
                   check=True)
    return efi


def time_boot(pattern: str, loader: Path | None) -> float:
    """Seconds from QEMU start to the first serial line matching ``pattern``."""
    saved = L.LOADER_EFI
    try:
        if loader is not None:
            L.LOADER_EFI = loader
        cfg = L.QemuConfig(scenario="healthy", log_items="", build=False)
        t0 = time.perf_counter()
        vm = L.QemuInstance.start(cfg)
        try:
            try:
                vm.wait_serial(pattern, timeout=180, halt_check=False)
            except L.GuestStopped:
                if not any(p in vm.serial_text() for p in ("HELLO",)):
                    raise
            return time.perf_counter() - t0
        finally:
            vm.stop()
    finally:
        L.LOADER_EFI = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    L.build_kernel("x86_64")
    with tempfile.TemporaryDirectory() as tmp:
        hello = build_hello(Path(tmp))
        anchor, ours = [], []
        for _ in range(args.runs):  # interleaved, so drift affects both alike
            anchor.append(time_boot("HELLO", hello))
            ours.append(time_boot(r"\[kernel\] ready", None))
    report("healthy boot to ready (median)", statistics.median(ours),
           "minimal UEFI app to its line", statistics.median(anchor))


if __name__ == "__main__":
    main()
