/* inc/mmu.h - 32-bit x86 paging and segmentation (Intel SDM Vol. 3A 3.4-3.5, 4.3).
 *
 * Paging: two-level, 4 KiB pages, or 4 MiB pages with CR4.PSE and PTE_PS in the directory.
 * Segmentation: the seed 002 GDT - null, kernel code, kernel data, user code, user data,
 * then one 32-bit TSS per CPU.
 */
#ifndef KDIAG_I386_MMU_H
#define KDIAG_I386_MMU_H

/* --- paging ------------------------------------------------------------------------- */
#define PGSIZE		4096
#define PGSHIFT		12
#define PTSIZE		(4096 * 1024)	/* bytes mapped by one page directory entry */
#define PDXSHIFT	22
#define NPDENTRIES	1024
#define NPTENTRIES	1024
#define PDX(la)		((((uint32_t) (la)) >> PDXSHIFT) & 0x3FF)
#define PTX(la)		((((uint32_t) (la)) >> PGSHIFT) & 0x3FF)

#define PTE_P		0x001	/* present */
#define PTE_W		0x002	/* writable */
#define PTE_U		0x004	/* user (CPL3) may access */
#define PTE_PWT		0x008
#define PTE_PCD		0x010
#define PTE_A		0x020
#define PTE_D		0x040
#define PTE_PS		0x080	/* 4 MiB page (in a directory entry, with CR4.PSE) */
#define PTE_G		0x100

#define CR0_PE		0x00000001
#define CR0_WP		0x00010000
#define CR0_PG		0x80000000
#define CR4_PSE		0x00000010

/* #PF error code (SDM 4.7) */
#define FEC_PR		0x1	/* protection violation (else not present) */
#define FEC_WR		0x2	/* write */
#define FEC_U		0x4	/* from CPL3 */

/* --- segmentation ------------------------------------------------------------------- */
#define GD_KT		0x08	/* kernel code */
#define GD_KD		0x10	/* kernel data */
#define GD_UT		0x18	/* user code (RPL 3 when loaded: 0x1b) */
#define GD_UD		0x20	/* user data (0x23) */
#define GD_TSS0		0x28	/* CPU i's TSS is GD_TSS0 + 8 * i */

/* descriptor type field (S=1 code/data) */
#define TY_DATA_WRITABLE	0x2
#define TY_CODE			0x8
#define TY_READABLE		0x2
#define TY_ACCESSED		0x1
/* system types (S=0) */
#define STS_T32A	0x9	/* available 32-bit TSS */
#define STS_IG32	0xE	/* 32-bit interrupt gate */
#define STS_TG32	0xF	/* 32-bit trap gate */

#ifndef __ASSEMBLER__
#include <inc/types.h>

typedef uint32_t pte_t;
typedef uint32_t pde_t;

/* one GDT entry, the seed 002 bit-field layout (SDM Vol. 3A 3.4.5) */
struct gdt_entry {
	uint16_t limit_low;
	uint16_t base_low;
	uint8_t base_mid;
	uint8_t type : 4;
	uint8_t s : 1;		/* 1 code/data, 0 system */
	uint8_t dpl : 2;
	uint8_t p : 1;
	uint8_t limit_high : 4;
	uint8_t avail : 1;
	uint8_t l : 1;
	uint8_t d : 1;
	uint8_t g : 1;
	uint8_t base_high;
} __attribute__((packed));

struct pseudodesc {
	uint16_t limit;
	uint32_t base;
} __attribute__((packed));

/* 32-bit TSS (SDM Vol. 3A 7.2.1); only ss0:esp0 matter without hardware task switching */
struct tss_entry {
	uint32_t prev_tss;
	uint32_t esp0, ss0, esp1, ss1, esp2, ss2;
	uint32_t cr3, eip, eflags;
	uint32_t eax, ecx, edx, ebx, esp, ebp, esi, edi;
	uint32_t es, cs, ss, ds, fs, gs;
	uint32_t ldt;
	uint16_t trap, iomap_base;
} __attribute__((packed));

/* 32-bit interrupt/trap gate (SDM Vol. 3A 6.11) */
struct gatedesc {
	unsigned off_15_0 : 16;
	unsigned sel : 16;
	unsigned args : 5;
	unsigned rsv1 : 3;
	unsigned type : 4;
	unsigned s : 1;
	unsigned dpl : 2;
	unsigned p : 1;
	unsigned off_31_16 : 16;
};

#define SETGATE(gate, istrap, sel_, off, dpl_)			\
	{							\
		(gate).off_15_0 = (uint32_t) (off) & 0xffff;	\
		(gate).sel = (sel_);				\
		(gate).args = 0;				\
		(gate).rsv1 = 0;				\
		(gate).type = (istrap) ? STS_TG32 : STS_IG32;	\
		(gate).s = 0;					\
		(gate).dpl = (dpl_);				\
		(gate).p = 1;					\
		(gate).off_31_16 = (uint32_t) (off) >> 16;	\
	}
#endif /* !__ASSEMBLER__ */

#endif
