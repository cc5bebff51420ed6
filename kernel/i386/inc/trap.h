/* inc/trap.h - trap numbers and the trap frame _alltraps builds (kern/trapentry.S).
 *
 * Stack at `call trap` (lowest address first): the Trapframe pointer, then PushRegs (pushal),
 * es, ds, trapno, err (the CPU's or a pushed 0), then the hardware frame eip, cs, eflags
 * and - only on a privilege change (CPL3 -> CPL0) - esp, ss (SDM Vol. 3A 6.12.1).
 */
#ifndef KDIAG_I386_TRAP_H
#define KDIAG_I386_TRAP_H

#define T_DIVIDE	0
#define T_DEBUG		1
#define T_NMI		2
#define T_BRKPT		3
#define T_OFLOW		4
#define T_BOUND		5
#define T_ILLOP		6
#define T_DEVICE	7
#define T_DBLFLT	8
#define T_TSS		10
#define T_SEGNP		11
#define T_STACK		12
#define T_GPFLT		13
#define T_PGFLT		14
#define T_FPERR		16
#define T_ALIGN		17
#define T_MCHK		18
#define T_SIMDERR	19
#define T_SYSCALL	48	/* int $0x30 */

#define SYS_backtrace	1
#define SYS_exit	2

#ifndef __ASSEMBLER__
#include <inc/types.h>

struct PushRegs {
	uint32_t reg_edi;
	uint32_t reg_esi;
	uint32_t reg_ebp;
	uint32_t reg_oesp;	/* useless */
	uint32_t reg_ebx;
	uint32_t reg_edx;
	uint32_t reg_ecx;
	uint32_t reg_eax;
} __attribute__((packed));

struct Trapframe {
	struct PushRegs tf_regs;
	uint16_t tf_es;
	uint16_t tf_padding1;
	uint16_t tf_ds;
	uint16_t tf_padding2;
	uint32_t tf_trapno;
	/* below here defined by x86 hardware */
	uint32_t tf_err;
	uintptr_t tf_eip;
	uint16_t tf_cs;
	uint16_t tf_padding3;
	uint32_t tf_eflags;
	/* below here only when crossing rings */
	uintptr_t tf_esp;
	uint16_t tf_ss;
	uint16_t tf_padding4;
} __attribute__((packed));
#endif

#endif
