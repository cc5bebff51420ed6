/*
 * memlayout.h - the virtual address map shared by the UEFI loader and the x86-64 kernel.
 *
 * Boot chain: OVMF -> loader (BOOTX64.EFI) -> kernel.  The loader builds the first page
 * tables with the regions marked (L) below and jumps to the kernel at its link address;
 * the kernel then builds its own tables with every region below, and finally unmaps the
 * lower half except the user-task slot.
 *
 *   0x0000000000000000 .. 0x00007fffffffffff   lower half
 *       identity map of RAM (L), 4 KiB pages for the first 2 MiB with page 0 left
 *       unmapped as a NULL guard, 2 MiB pages above; removed once the kernel is up
 *     0x0000400000000000  USER_BASE (PML4 slot 128): the user task's code and stack
 *   0xffff800000000000  PHYSMAP_BASE (L): all RAM, phys 0 at this address
 *   0xffffc00000000000  PTSTRESS_BASE: the pt-stress scenario's 1 GiB of 4 KiB pages
 *   0xfffffe8000000000  LAPIC_VA: local APIC registers, uncached
 *   0xffffff0000000000  FB_VA: the GOP framebuffer, write-combining through the PAT
 *   0xffffffff80000000  KERNEL_VBASE (L): the kernel image (-mcmodel=kernel)
 */
#ifndef KDIAG_MEMLAYOUT_H
#define KDIAG_MEMLAYOUT_H

#include "kconst.h"

#define PAGE_SIZE        _UL(0x1000)
#define LARGE_PAGE_SIZE  _UL(0x200000)        /* 2 MiB: a PD entry with PS=1 */
#define HUGE_PAGE_SIZE   _UL(0x40000000)      /* 1 GiB: a PDPT entry with PS=1 */

#define KERNEL_VBASE     _UL(0xffffffff80000000)
#define PHYSMAP_BASE     _UL(0xffff800000000000)
#define PTSTRESS_BASE    _UL(0xffffc00000000000)
#define PTSTRESS_SIZE    _UL(0x40000000)      /* 1 GiB = 262144 PTEs */
#define LAPIC_VA         _UL(0xfffffe8000000000)
#define FB_VA            _UL(0xffffff0000000000)

#define USER_BASE        _UL(0x0000400000000000)
#define USER_CODE_VA     USER_BASE
#define USER_STACK_VA    (USER_BASE + _UL(0x100000))
#define USER_STACK_SIZE  _UL(0x4000)
#define USER_STACK_TOP   (USER_STACK_VA + USER_STACK_SIZE)

/* Kernel stacks live in .bss, each preceded by a guard page the kernel leaves unmapped. */
#define KSTACK_SIZE      _UL(0x4000)          /* 16 KiB */
#define KSTACK_GUARD     PAGE_SIZE
#define KSTACK_STRIDE    (KSTACK_GUARD + KSTACK_SIZE)
#define KSTACK_BOOT      0                    /* kmain's stack, from _start on */
#define KSTACK_RSP0      1                    /* TSS.RSP0: ring 3 -> ring 0, and syscall */
#define KSTACK_DF        2                    /* IST1: #DF */
#define KSTACK_NMI       3                    /* IST2: NMI */
#define KSTACK_MC        4                    /* IST3: #MC */
#define KSTACK_COUNT     5

#endif
