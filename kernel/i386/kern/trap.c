/* kern/trap.c - the IDT and the C trap handlers.
 *
 * Vectors 0-19 use interrupt gates (DPL 0) except #BP (3) and the system call int $0x30
 * (48), which are DPL 3 so user code may raise them. trap() dispatches:
 *   #BP      print, mon_backtrace through the trap frame, return to the code after int3
 *   #PF      print CR2 and the error code, mon_backtrace, then idle (no return)
 *   int 0x30 SYS_backtrace: mon_backtrace from the user's call chain; SYS_exit: idle
 */
#include <inc/memlayout.h>
#include <inc/mmu.h>
#include <inc/stdio.h>
#include <inc/x86.h>
#include <kern/monitor.h>
#include <kern/trap.h>

static struct gatedesc idt[256];
struct pseudodesc idt_pd = { sizeof(idt) - 1, (uint32_t) idt };

extern void th_divide(void), th_debug(void), th_nmi(void), th_brkpt(void), th_oflow(void);
extern void th_bound(void), th_illop(void), th_device(void), th_dblflt(void), th_tss(void);
extern void th_segnp(void), th_stack(void), th_gpflt(void), th_pgflt(void), th_fperr(void);
extern void th_align(void), th_mchk(void), th_simderr(void), th_syscall(void);

void
trap_init(void)
{
	SETGATE(idt[T_DIVIDE], 0, GD_KT, th_divide, 0);
	SETGATE(idt[T_DEBUG], 0, GD_KT, th_debug, 0);
	SETGATE(idt[T_NMI], 0, GD_KT, th_nmi, 0);
	SETGATE(idt[T_BRKPT], 0, GD_KT, th_brkpt, 3);
	SETGATE(idt[T_OFLOW], 0, GD_KT, th_oflow, 0);
	SETGATE(idt[T_BOUND], 0, GD_KT, th_bound, 0);
	SETGATE(idt[T_ILLOP], 0, GD_KT, th_illop, 0);
	SETGATE(idt[T_DEVICE], 0, GD_KT, th_device, 0);
	SETGATE(idt[T_DBLFLT], 0, GD_KT, th_dblflt, 0);
	SETGATE(idt[T_TSS], 0, GD_KT, th_tss, 0);
	SETGATE(idt[T_SEGNP], 0, GD_KT, th_segnp, 0);
	SETGATE(idt[T_STACK], 0, GD_KT, th_stack, 0);
	SETGATE(idt[T_GPFLT], 0, GD_KT, th_gpflt, 0);
	SETGATE(idt[T_PGFLT], 0, GD_KT, th_pgflt, 0);
	SETGATE(idt[T_FPERR], 0, GD_KT, th_fperr, 0);
	SETGATE(idt[T_ALIGN], 0, GD_KT, th_align, 0);
	SETGATE(idt[T_MCHK], 0, GD_KT, th_mchk, 0);
	SETGATE(idt[T_SIMDERR], 0, GD_KT, th_simderr, 0);
	SETGATE(idt[T_SYSCALL], 0, GD_KT, th_syscall, 3);
	lidt(&idt_pd);
}

void
kernel_idle(void)
{
	cprintf("[kernel] ready\n");
	for (;;)
		sti_hlt();	/* every PIC line is masked: nothing wakes us but gdb */
}

static void
print_trapframe(struct Trapframe *tf)
{
	cprintf("[kernel] trap %d err %x eip %08x cs %04x eflags %08x", tf->tf_trapno,
		tf->tf_err, tf->tf_eip, tf->tf_cs, tf->tf_eflags);
	if (tf->tf_cs & 3)
		cprintf(" esp %08x ss %04x", tf->tf_esp, tf->tf_ss);
	cprintf("\n");
}

__attribute__((noinline)) static void
breakpoint_handler(struct Trapframe *tf)
{
	cprintf("[kernel] breakpoint at %08x\n", tf->tf_eip);
	mon_backtrace(0, 0, tf);
}

__attribute__((noinline)) static void
page_fault_handler(struct Trapframe *tf)
{
	uint32_t va = rcr2();

	cprintf("[kernel] page fault va %08x eip %08x err %x from CPL%d\n", va, tf->tf_eip,
		tf->tf_err, tf->tf_cs & 3);
	mon_backtrace(0, 0, tf);
	cprintf("[kernel] page fault handled: not returning\n");
	kernel_idle();
}

__attribute__((noinline)) static void
syscall_handler(struct Trapframe *tf)
{
	switch (tf->tf_regs.reg_eax) {
	case SYS_backtrace:
		cprintf("[kernel] syscall backtrace from user eip %08x\n", tf->tf_eip);
		mon_backtrace(0, 0, tf);
		tf->tf_regs.reg_eax = 0;
		return;
	case SYS_exit:
		cprintf("[kernel] user program exited\n");
		kernel_idle();
	default:
		tf->tf_regs.reg_eax = -1;
	}
}

__attribute__((noinline)) static void
trap_dispatch(struct Trapframe *tf)
{
	switch (tf->tf_trapno) {
	case T_BRKPT:
		breakpoint_handler(tf);
		return;
	case T_PGFLT:
		page_fault_handler(tf);
		return;
	case T_SYSCALL:
		syscall_handler(tf);
		return;
	default:
		print_trapframe(tf);
		cprintf("[kernel] unexpected trap: halting\n");
		for (;;)
			asm volatile("cli; hlt");
	}
}

void
trap(struct Trapframe *tf)
{
	trap_dispatch(tf);
}
