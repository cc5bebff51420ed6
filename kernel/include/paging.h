/*
 * paging.h - 4-level paging entries and the PAT (Intel SDM Vol. 3A 4.5, Tables 4-14..4-20;
 * PAT: 12.12).
 *
 * Boot chain: the loader builds the first tables (identity map of RAM, physmap, kernel
 * image; no NX, no PAT bits) in pages it keeps as EfiLoaderData; the kernel's paging.c
 * builds its own with 4 KiB/2 MiB/1 GiB pages, NX on all data, W^X for its image, and a
 * write-combining framebuffer through PAT index 4.
 */
#ifndef KDIAG_PAGING_H
#define KDIAG_PAGING_H

#include "kconst.h"

/* Entry bits common to every level */
#define PTE_P        BIT(0)    /* present */
#define PTE_W        BIT(1)    /* writable */
#define PTE_U        BIT(2)    /* user (CPL 3) accessible */
#define PTE_PWT      BIT(3)    /* page write-through: PAT index bit 0 */
#define PTE_PCD      BIT(4)    /* page cache disable: PAT index bit 1 */
#define PTE_A        BIT(5)    /* accessed */
#define PTE_D        BIT(6)    /* dirty (leaf only) */
#define PTE_PS       BIT(7)    /* PDPTE/PDE: page size, 1 = 1 GiB / 2 MiB leaf */
#define PTE_PAT      BIT(7)    /* 4 KiB PTE: PAT index bit 2 */
#define PTE_G        BIT(8)    /* global (leaf only, CR4.PGE) */
#define PTE_PAT_LARGE BIT(12)  /* 2 MiB / 1 GiB leaf: PAT index bit 2 */
#define PTE_NX       BIT(63)   /* execute disable (EFER.NXE) */

#define PTE_ADDR_MASK       _ULL(0x000ffffffffff000)   /* 4 KiB frame or next table */
#define PTE_ADDR_MASK_2M    _ULL(0x000fffffffe00000)
#define PTE_ADDR_MASK_1G    _ULL(0x000fffffc0000000)

#define PT_ENTRIES   512
#define PML4_SHIFT   39
#define PDPT_SHIFT   30
#define PD_SHIFT     21
#define PT_SHIFT     12
#define PX_INDEX(va, shift) (((va) >> (shift)) & 0x1ff)
#define PML4_INDEX(va)      PX_INDEX(va, PML4_SHIFT)
#define PDPT_INDEX(va)      PX_INDEX(va, PDPT_SHIFT)
#define PD_INDEX(va)        PX_INDEX(va, PD_SHIFT)
#define PT_INDEX(va)        PX_INDEX(va, PT_SHIFT)
#define PML4_USER_SLOTS     256     /* entries 0-255 map the lower (user) half */

/* PAT memory types (one byte per index in IA32_PAT) */
#define PAT_UC       0x00
#define PAT_WC       0x01
#define PAT_WT       0x04
#define PAT_WP       0x05
#define PAT_WB       0x06
#define PAT_UCMINUS  0x07

/*
 * The kernel's IA32_PAT: the power-on default except index 4, which becomes WC.
 * Index = PAT:PCD:PWT (PAT is bit 7 in a 4 KiB PTE, bit 12 in a large leaf).
 *   0 WB (no bits)  1 WT (PWT)  2 UC- (PCD)  3 UC (PCD|PWT)  4 WC (PAT)  5 WT  6 UC-  7 UC
 */
#define PAT_VALUE    _ULL(0x0007040100070406)
#define PAT_INDEX_WC 4
#define PTE_CACHE_UC       (PTE_PCD | PTE_PWT)  /* index 3, either entry size */
#define PTE_CACHE_WC_4K    PTE_PAT              /* index 4 in a 4 KiB PTE */
#define PTE_CACHE_WC_LARGE PTE_PAT_LARGE        /* index 4 in a 2 MiB / 1 GiB leaf */

#endif
