/*
 * msr.h - model-specific registers the kernel programs (Intel SDM Vol. 4; AMD APM Vol. 2).
 *
 * Boot chain: OVMF leaves EFER.LME/LMA (and usually NXE) set; the kernel adds EFER.NXE and
 * EFER.SCE, programs STAR/LSTAR/SFMASK for SYSCALL, GS_BASE/KERNEL_GS_BASE for its per-CPU
 * block, IA32_PAT for the write-combining framebuffer, and reads IA32_APIC_BASE.
 */
#ifndef KDIAG_MSR_H
#define KDIAG_MSR_H

#include "kconst.h"

#define MSR_APIC_BASE       0x0000001b
#define   APIC_BASE_BSP     BIT(8)     /* this is the bootstrap processor */
#define   APIC_BASE_EXTD    BIT(10)    /* x2APIC mode */
#define   APIC_BASE_EN      BIT(11)    /* APIC global enable */
#define   APIC_BASE_ADDR_MASK _ULL(0x000ffffffffff000)
#define MSR_PAT             0x00000277
#define MSR_EFER            0xc0000080
#define   EFER_SCE          BIT(0)     /* SYSCALL/SYSRET enable */
#define   EFER_LME          BIT(8)     /* long mode enable */
#define   EFER_LMA          BIT(10)    /* long mode active (read-only) */
#define   EFER_NXE          BIT(11)    /* no-execute enable */
#define MSR_STAR            0xc0000081 /* see gdt.h STAR_VALUE */
#define MSR_LSTAR           0xc0000082 /* 64-bit SYSCALL entry RIP */
#define MSR_CSTAR           0xc0000083 /* compat-mode SYSCALL entry (unused) */
#define MSR_SFMASK          0xc0000084 /* RFLAGS bits SYSCALL clears */
#define MSR_FS_BASE         0xc0000100
#define MSR_GS_BASE         0xc0000101
#define MSR_KERNEL_GS_BASE  0xc0000102 /* swapped with GS_BASE by SWAPGS */

#endif
