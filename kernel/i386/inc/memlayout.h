/* inc/memlayout.h - the kernel's virtual memory map (JOS layout, higher half at 0xF0000000).
 *
 *   0xF0000000 + 128 MiB   KERNBASE: all of physical memory (first 4 MiB in 4 KiB pages,
 *                          the rest in 4 MiB PSE pages); the kernel is linked at 0xF0100000
 *                          and loaded at physical 0x100000 (ELF p_paddr, multiboot)
 *   0x00000000 - 4 MiB     identity map during boot only (entry.S); removed in i386_init
 */
#ifndef KDIAG_I386_MEMLAYOUT_H
#define KDIAG_I386_MEMLAYOUT_H

#define KERNBASE	0xF0000000
#define PHYSMAP_SIZE	(128 * 1024 * 1024)
#define KSTKSIZE	(8 * 4096)	/* boot and per-CPU kernel stacks */
#define NCPU		2		/* one TSS per CPU (seed 002); CPU 0 runs */

#ifndef __ASSEMBLER__
#include <inc/types.h>
#define KADDR(pa) ((void *) ((physaddr_t) (pa) + KERNBASE))
#define PADDR(kva) ((physaddr_t) (kva) - KERNBASE)
#endif

#endif
