/* kern/trapentry.S - the IDT's entry stubs and _alltraps (JOS layout, inc/trap.h).
 *
 * Each stub pushes a 0 error code where the CPU does not push one, then its vector number,
 * and jumps to _alltraps, which saves %ds, %es and the general registers (pushal), loads the
 * kernel data segment and calls trap(tf). %ebp is left as the interrupted code had it, so a
 * frame-pointer walk from trap() continues into the interrupted code's caller chain.
 * The kdiag unwinder recognizes frames in these stubs (kdiag.unwind.stubs: "_alltraps").
 */
#include <inc/mmu.h>
#include <inc/trap.h>

#define TRAPHANDLER(name, num)		\
	.globl name;			\
	.type name, @function;		\
	.align 2;			\
	name:				\
	pushl $(num);			\
	jmp _alltraps

#define TRAPHANDLER_NOEC(name, num)	\
	.globl name;			\
	.type name, @function;		\
	.align 2;			\
	name:				\
	pushl $0;			\
	pushl $(num);			\
	jmp _alltraps

.text
TRAPHANDLER_NOEC(th_divide, T_DIVIDE)
TRAPHANDLER_NOEC(th_debug, T_DEBUG)
TRAPHANDLER_NOEC(th_nmi, T_NMI)
TRAPHANDLER_NOEC(th_brkpt, T_BRKPT)
TRAPHANDLER_NOEC(th_oflow, T_OFLOW)
TRAPHANDLER_NOEC(th_bound, T_BOUND)
TRAPHANDLER_NOEC(th_illop, T_ILLOP)
TRAPHANDLER_NOEC(th_device, T_DEVICE)
TRAPHANDLER(th_dblflt, T_DBLFLT)
TRAPHANDLER(th_tss, T_TSS)
TRAPHANDLER(th_segnp, T_SEGNP)
TRAPHANDLER(th_stack, T_STACK)
TRAPHANDLER(th_gpflt, T_GPFLT)
TRAPHANDLER(th_pgflt, T_PGFLT)
TRAPHANDLER_NOEC(th_fperr, T_FPERR)
TRAPHANDLER(th_align, T_ALIGN)
TRAPHANDLER_NOEC(th_mchk, T_MCHK)
TRAPHANDLER_NOEC(th_simderr, T_SIMDERR)
TRAPHANDLER_NOEC(th_syscall, T_SYSCALL)

.globl _alltraps
.type _alltraps, @function
_alltraps:
	pushl	%ds
	pushl	%es
	pushal
	movw	$GD_KD, %ax
	movw	%ax, %ds
	movw	%ax, %es
	pushl	%esp			# struct Trapframe *tf
	call	trap
	addl	$4, %esp
	popal
	popl	%es
	popl	%ds
	addl	$8, %esp		# trapno and error code
	iret

/* env_pop_tf(tf): restore a Trapframe and iret into it (used to enter user mode). */
.globl env_pop_tf
.type env_pop_tf, @function
env_pop_tf:
	movl	4(%esp), %esp
	popal
	popl	%es
	popl	%ds
	addl	$8, %esp
	iret
