"""``kd cr``, ``kd efer``, ``kd sreg``, ``kd msr``, ``kd pat``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from gdbext.common import Context, KdCommand
from kdiag.errors import MsrUnavailable, TargetError, UsageError
from kdiag.render import reports
from kdiag.x86.msr import Msr, msr_index, msr_name

CORE_MSRS = (Msr.IA32_EFER, Msr.IA32_PAT, Msr.IA32_STAR, Msr.IA32_LSTAR, Msr.IA32_CSTAR,
             Msr.IA32_FMASK, Msr.IA32_APIC_BASE)


class KdCr(KdCommand):
    """Decode CR0, CR2, CR3, CR4, CR8, EFER and RFLAGS (Bochs `creg` style).

Usage: kd cr [--json] [-v]

Each flag register prints every defined bit by its SDM name, upper-case when set and
lower-case when clear:  CR0=0x80000011: PG cd nw am wp ne ET ts em mp PE
CR3 shows the page-table base and the PCID (CR4.PCIDE=1) or PCD/PWT. The last line gives
the CPU mode (real/protected/compat/long), CPL and whether paging is on.

Checks: NX bits (bit 63) in present page-table entries while EFER.NXE=0, where the bit is
reserved (every access through them raises #PF with RSVD set).

Examples:
  kd cr
  kd cr -v      # bit-by-bit: PG[31]=0x1 CD[30]=0x0 ..."""

    name = "cr"

    def run(self, args: argparse.Namespace, ctx: Context) -> Any:
        return reports.cr_report(ctx.target(), verbose=args.verbose)


class KdEfer(KdCommand):
    """Decode IA32_EFER (SCE, LME, LMA, NXE, ...) from gdb's $efer register.

Usage: kd efer [--json] [-v]

No code is injected: QEMU's gdbstub exposes EFER as a register. Checks NX bits used in
the page tables while NXE is off.

Examples:
  kd efer       # EFER=0x00000d01: tce ffxsr lmsle svme NXE LMA LME SCE"""

    name = "efer"

    def run(self, args: argparse.Namespace, ctx: Context) -> Any:
        return reports.efer_report(ctx.target(), verbose=args.verbose,
                                   source="gdb's $efer register")


class KdSreg(KdCommand):
    """Segment registers with their hidden descriptor caches, LDTR, TR, GDTR, IDTR.

Usage: kd sreg [--json] [-v]

For CS, SS, DS, ES, FS, GS: selector, the cached base/limit/attributes the CPU is using
(from QEMU's `info registers`), decoded like a GDT entry. Then LDTR, TR, GDTR, IDTR and
the FS/GS/KERNEL_GS bases.

Checks: each selector against the GDT: beyond the limit (the cache keeps working until
the next reload: iretq, a far return), the wrong type or DPL for its register, or a cache
that no longer matches the GDT entry (-v shows each entry as it is now).

Examples:
  kd sreg
  kd sreg -v"""

    name = "sreg"

    def run(self, args: argparse.Namespace, ctx: Context) -> Any:
        return reports.sreg_report(ctx.target(), verbose=args.verbose)


class KdMsr(KdCommand):
    """Read and decode an MSR by name or number (rdmsr injected at CPL 0).

Usage: kd msr [--json] [--force] NAME|NUMBER

Names: star, lstar, cstar, sfmask (fmask), efer, pat, apic_base, fs_base, gs_base,
kernel_gs_base, tsc, tsc_aux, sysenter_cs/esp/eip, misc_enable, mtrrcap, mtrr_def_type,
feature_control (the IA32_ prefix is optional), or a number (0xc0000081).

EFER and the FS/GS/KERNEL_GS bases come from gdb's registers. Every other MSR is read by
executing `rdmsr` in the guest: kdiag saves the two code bytes at RIP and RAX/RCX/RDX/RIP/
RFLAGS, writes 0f 32, sets ECX, single-steps this CPU with QEMU's interrupt-free step,
reads EDX:EAX, restores everything and verifies every register and byte; the output says
so. It refuses (and says why) when: the VM is in 'paused (shutdown)' after a triple fault
(a step would hang), CPL is not 0, the CPU is in v8086 mode or SMM, the CPU is halted with
IF=0, QEMU's step flags let interrupts in, a breakpoint sits on RIP (gdb always-inserted
or a guest DR0-3), or the MSR is unknown to kdiag (a missing MSR raises #GP in the guest;
--force reads it anyway). A halted CPU resumes after its hlt instead of sleeping.
A value read by injection is remembered until the guest runs again (or a register
changes): a second read at the same stop runs no code, and its note says so.

Decoding: STAR into SYSCALL/SYSRET selectors (checked against the GDT), LSTAR/CSTAR and
the bases as symbolized addresses, SFMASK as the RFLAGS bits SYSCALL clears, APIC_BASE,
EFER, PAT.

JSON: {"index","name","value","decoded":{...},"method","warnings":[...]}

Examples:
  kd msr star
  kd msr 0xc0000082
  kd msr --json sfmask"""

    name = "msr"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("msr", metavar="NAME|NUMBER")
        parser.add_argument("--force", action="store_true",
                            help="inject rdmsr even for an MSR kdiag does not know")

    def run(self, args: argparse.Namespace, ctx: Context) -> Any:
        try:
            index = msr_index(args.msr)
        except ValueError as err:
            raise UsageError(str(err)) from err
        t = ctx.target()
        value = t.read_msr(index, force=args.force)
        return reports.msr_report(t, index, method=t.msr_method, symbolize=ctx.symbolize,
                                  value=value)


class KdPat(KdCommand):
    """Decode IA32_PAT: the memory type of each PAT/PCD/PWT combination.

Usage: kd pat [--json]

Reads IA32_PAT (MSR 0x277) by rdmsr injection (see `help kd msr` for what is saved,
restored and refused) and prints PA0..PA7 with their memory types (UC, WC, WT, WP, WB,
UC-) and the page-table bits that select each (PAT*4 + PCD*2 + PWT).

Examples:
  kd pat        # PAT=0x0007010600070406: PA0=WB PA1=WT PA2=UC- PA3=UC PA4=WB PA5=WC ..."""

    name = "pat"

    def run(self, args: argparse.Namespace, ctx: Context) -> Any:
        t = ctx.target()
        value = t.read_msr(0x277)
        return reports.pat_report(t, method=t.msr_method, value=value)


class KdCore(KdCommand):
    """Save the machine for offline kdiag: a QEMU core, plus the MSRs a core lacks.

Usage: kd core [--json] [--no-msr] FILE

Runs QEMU's `dump-guest-memory FILE` through the monitor (physical memory and every CPU's
registers, GDTR/IDTR/TR included; QEMU writes the file itself, so FILE must be on the host
QEMU runs on: the path is made absolute here). A QEMU core holds no MSRs, so kd core then
reads EFER, PAT, STAR, LSTAR, CSTAR, SFMASK and APIC_BASE from the stopped CPU (rdmsr
injection: see `help kd msr` for what is saved, restored and refused) and writes them to
FILE.msrs.json. Offline, `kdiag gdt|idt|tss|cr|sreg|pat|msr --core FILE` then decodes the
same machine with the real EFER and PAT. An MSR that cannot be read now (CPL 3, after a
triple fault) is listed with the reason; the core is written anyway. --no-msr skips them.

Examples:
  kd core /tmp/crash.elf
  (shell) kdiag pat --core /tmp/crash.elf"""

    name = "core"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("file", metavar="FILE")
        parser.add_argument("--no-msr", action="store_true",
                            help="write only the core (no rdmsr injection)")

    def run(self, args: argparse.Namespace, ctx: Context) -> Any:
        from kdiag.target.core import write_sidecar

        t = ctx.target()
        if not t._local_qemu():
            raise TargetError("QEMU runs on another host: dump-guest-memory would write the file "
                              "there; run `monitor dump-guest-memory PATH` and copy it")
        path = os.path.abspath(os.path.expanduser(args.file))
        if any(c in path for c in "\"\\\n"):
            raise UsageError(f"kd core: unusable file name {path!r}")
        st = t.state()
        reply = t.monitor(f'dump-guest-memory "{path}"').strip()
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            raise TargetError(f"QEMU did not write {path}: {reply or 'no reply'}")
        msrs: dict[int, int] = {}
        unavailable: dict[int, str] = {}
        methods: list[str] = []
        if not args.no_msr:
            try:
                got = t.read_msrs([int(i) for i in CORE_MSRS])  # one injection for all
            except MsrUnavailable as err:  # nothing can be injected now: EFER still reads
                why = str(err).split("): ", 1)[-1]  # the shared reason, not the first MSR's name
                got = {int(i): why for i in CORE_MSRS if i != Msr.IA32_EFER}
                got.update(t.read_msrs([int(Msr.IA32_EFER)]))
            for index, read in got.items():
                if isinstance(read, str):
                    unavailable[index] = read
                    continue
                msrs[index] = read.value
                if "rdmsr" in read.method:
                    methods = [read.method.split("; earlier at this stop")[0]]
        method = (methods[0] if methods else "no MSR was injected") + \
            ("; EFER from gdb's $efer register" if Msr.IA32_EFER in msrs else "")
        sidecar = write_sidecar(path, st, msrs, method, unavailable) if not args.no_msr else None
        lines = [f"core: {path} ({os.path.getsize(path)} bytes, QEMU dump-guest-memory)"]
        if sidecar is not None:
            names = ", ".join(msr_name(i).removeprefix("IA32_") for i in msrs) or "none"
            lines.append(f"MSRs: {sidecar} ({names})")
            lines += [f"  not saved: {msr_name(i)}: {why}" for i, why in unavailable.items()]
            if msrs:
                lines.append(f"  ({method})")
        lines.append(f"offline: kdiag gdt --core {path}   (also idt, tss, cr, sreg, pat, msr)")
        doc = {"core": path, "size": os.path.getsize(path),
               "sidecar": str(sidecar) if sidecar else None,
               "msrs": {f"{k:#x}": f"{v:#018x}" for k, v in msrs.items()},
               "unavailable": {f"{k:#x}": v for k, v in unavailable.items()}, "method": method}
        return reports.Report("\n".join(lines), doc)


def register() -> None:
    KdCore()
    KdCr()
    KdEfer()
    KdSreg()
    KdMsr()
    KdPat()
