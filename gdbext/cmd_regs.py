"""``kd cr``, ``kd efer``, ``kd sreg``, ``kd msr``, ``kd pat``."""

from __future__ import annotations

import argparse
from typing import Any

from gdbext.common import Context, KdCommand
from kdiag.errors import UsageError
from kdiag.render import reports
from kdiag.x86.msr import msr_index


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

Decoding: STAR into SYSCALL/SYSRET selectors (checked against the GDT), LSTAR/CSTAR and
the bases as symbolized addresses, SFMASK as the RFLAGS bits SYSCALL clears, APIC_BASE,
EFER, PAT.

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


def register() -> None:
    KdCr()
    KdEfer()
    KdSreg()
    KdMsr()
    KdPat()
