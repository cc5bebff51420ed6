/*
 * idt.h - 64-bit interrupt gates and the kernel's vector assignments
 * (Intel SDM Vol. 3A 6.14.1, Figure 6-8; vectors: Table 6-1).
 *
 * Boot chain: the loader enters the kernel with interrupts off and an empty IDT (limit 0),
 * so any early fault triple-faults; the kernel's idt.c installs 256 gates (exceptions
 * 0-31, the LAPIC timer, int 0x80 with DPL 3, spurious vectors) and loads IDTR.
 */
#ifndef KDIAG_IDT_H
#define KDIAG_IDT_H

/* Exceptions */
#define T_DE      0    /* divide error */
#define T_DB      1    /* debug */
#define T_NMI     2    /* non-maskable interrupt */
#define T_BP      3    /* breakpoint (int3) */
#define T_OF      4    /* overflow (into) */
#define T_BR      5    /* bound range exceeded */
#define T_UD      6    /* invalid opcode */
#define T_NM      7    /* device not available */
#define T_DF      8    /* double fault (error code 0) */
#define T_TS     10    /* invalid TSS (error code) */
#define T_NP     11    /* segment not present (error code) */
#define T_SS     12    /* stack-segment fault (error code) */
#define T_GP     13    /* general protection (error code) */
#define T_PF     14    /* page fault (error code, CR2) */
#define T_MF     16    /* x87 floating point */
#define T_AC     17    /* alignment check (error code) */
#define T_MC     18    /* machine check */
#define T_XM     19    /* SIMD floating point */
#define T_VE     20    /* virtualization exception */
#define T_CP     21    /* control protection (error code) */
#define T_EXCEPTIONS 32

/* Interrupts and software vectors used by this kernel */
#define T_TIMER          0x20   /* LAPIC timer, periodic, 1 kHz */
#define T_SYSCALL_INT    0x80   /* int 0x80 from ring 3 (gate DPL 3) */
#define T_PIC_BASE       0xe0   /* 8259 PIC remapped here, all lines masked */
#define T_PIC_SPURIOUS1  (T_PIC_BASE + 7)
#define T_PIC_SPURIOUS2  (T_PIC_BASE + 15)
#define T_LAPIC_SPURIOUS 0xff   /* LAPIC SVR vector */
#define T_SYSCALL_INSN   0x100  /* pseudo-vector in a trap frame: entered by SYSCALL */

/* Does the CPU push an error code for this vector? */
#define T_HAS_ERROR_CODE(v) ((v) == 8 || ((v) >= 10 && (v) <= 14) || (v) == 17 || \
			     (v) == 21 || (v) == 29 || (v) == 30)

/* Gate type_attr byte: P | DPL | 0 | type */
#define GATE_TYPE_INT64   0xe   /* interrupt gate: clears IF */
#define GATE_TYPE_TRAP64  0xf   /* trap gate: leaves IF */
#define GATE_DPL(d)       ((d) << 5)
#define GATE_P            0x80

/* Page-fault error code bits (SDM Vol. 3A 4.7) */
#define PF_ERR_P     0x01   /* 0 = not present, 1 = protection violation */
#define PF_ERR_W     0x02   /* write access */
#define PF_ERR_U     0x04   /* CPL 3 access */
#define PF_ERR_RSVD  0x08   /* reserved bit set in a paging entry */
#define PF_ERR_I     0x10   /* instruction fetch */
#define PF_ERR_PK    0x20   /* protection key */
#define PF_ERR_SS    0x40   /* shadow stack */

/* Selector error code bits (#GP/#NP/#SS/#TS) */
#define SELERR_EXT   0x1    /* external event */
#define SELERR_IDT   0x2    /* index refers to the IDT */
#define SELERR_TI    0x4    /* index refers to the LDT */

#ifndef __ASSEMBLER__
#include <stdint.h>

struct idt_gate {
	uint16_t offset_lo;        /* handler bits 15:0 */
	uint16_t selector;         /* code segment selector (SEG_KCODE) */
	uint8_t  ist;              /* bits 2:0: IST slot, 0 = none */
	uint8_t  type_attr;        /* GATE_P | GATE_DPL(n) | GATE_TYPE_* */
	uint16_t offset_mid;       /* handler bits 31:16 */
	uint32_t offset_hi;        /* handler bits 63:32 */
	uint32_t reserved;
} __attribute__((packed));

_Static_assert(sizeof(struct idt_gate) == 16, "64-bit gate size");
#endif

#endif
