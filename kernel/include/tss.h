/*
 * tss.h - the 64-bit Task State Segment (Intel SDM Vol. 3A 8.7, Figure 8-11).
 *
 * Boot chain: after its GDT, the kernel fills the per-CPU TSS (RSP0 for ring 3 -> ring 0
 * transitions, IST1-3 for #DF/NMI/#MC, each on its own stack over an unmapped guard page),
 * points GDT slot 0x28 at it and loads TR.  Long mode uses no hardware task switching;
 * the CPU reads only RSPn, ISTn and the I/O-permission-bitmap offset.
 */
#ifndef KDIAG_TSS_H
#define KDIAG_TSS_H

#define TSS64_SIZE     0x68           /* the architectural part */
#define TSS_IOPB_NONE  TSS64_SIZE     /* IOPB offset >= limit: no I/O bitmap */

/* IST slot numbers as written in an IDT gate's IST field (1-7; 0 = no stack switch) */
#define IST_NONE       0
#define IST_DF         1
#define IST_NMI        2
#define IST_MC         3

#ifndef __ASSEMBLER__
#include <stdint.h>

struct tss64 {
	uint32_t reserved0;
	uint64_t rsp[3];              /* RSP0-2: stack for a transition to CPL n */
	uint64_t reserved1;
	uint64_t ist[7];              /* IST1-7, at ist[0..6] */
	uint64_t reserved2;
	uint16_t reserved3;
	uint16_t iopb;                /* offset of the I/O permission bitmap */
} __attribute__((packed));

_Static_assert(sizeof(struct tss64) == TSS64_SIZE, "TSS64 layout");
#endif

#endif
