/*
 * user.c - SYSCALL setup, the user task, and the system-call dispatcher.
 *
 * Boot chain: the last stage of kmain.  syscall_init sets EFER.SCE, STAR (kernel CS
 * 0x08, SYSRET base 0x10 -> user CS 0x23 / SS 0x1b), LSTAR = syscall_entry and SFMASK.
 * user_start maps the .user section (linked at USER_CODE_VA, loaded inside the kernel
 * image) at USER_CODE_VA (user, read + execute) and a stack
 * at USER_STACK_VA (user, read/write, NX) in PML4 slot PML4_INDEX(USER_BASE), which is
 * the only lower-half slot that survives unmap_lower_half, and IRETQs to ring 3.  The
 * task's SYS_BOOT_DONE call finishes the boot (kmain_late) on the RSP0 stack.
 */
#include "cpu.h"
#include "gdt.h"
#include "idt.h"
#include "kernel.h"
#include "msr.h"
#include "paging.h"
#include "syscall.h"

void syscall_init(void)
{
	wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
	wrmsr(MSR_STAR, STAR_VALUE(STAR_SYSCALL_BASE, STAR_SYSRET_BASE));
	wrmsr(MSR_LSTAR, (uint64_t)syscall_entry);
	wrmsr(MSR_SFMASK, SYSCALL_SFMASK);
}

NORETURN void user_start(void)
{
	uint64_t code_flags = PTE_P | PTE_U;              /* read + execute */

	if (knobs.user_code_nx)
		code_flags |= PTE_NX;                     /* user-nx */
	if (knobs.user_code_supervisor)
		code_flags &= ~PTE_U;                     /* user-supervisor */
	for (uint64_t va = (uint64_t)__user_load; va < (uint64_t)__user_load_end; va += PAGE_SIZE) {
		uint64_t pa = bootinfo->kernel_phys + (va - bootinfo->kernel_virt);
		map_page(USER_CODE_VA + (va - (uint64_t)__user_load), pa, PAGE_SIZE, code_flags);
	}
	for (uint64_t off = 0; off < USER_STACK_SIZE; off += PAGE_SIZE)
		map_page(USER_STACK_VA + off, pmm_alloc(), PAGE_SIZE, PTE_P | PTE_W | PTE_U | PTE_NX);

	uint64_t rip = USER_CODE_VA;                      /* user_entry */
	klog("user: entering ring 3 at 0x%lx (cs 0x%x ss 0x%x, stack top 0x%lx)",
	     (unsigned long)rip, user_cs, user_ss, (unsigned long)USER_STACK_TOP);
	if (knobs.user_code_nx || knobs.user_code_supervisor)
		scenario_triggering();
	if (knobs.tss_rsp0_null) {
		/* tss-rsp0-null: the first ring 3 -> ring 0 transition has no stack */
		scenario_triggering();
		percpu0.tss.rsp[0] = 0;
	}
	scenario_stage(STAGE_USER);
	user_enter(rip, USER_STACK_TOP, user_cs, user_ss);
}

static int64_t sys_hello(struct trapframe *tf, bool via_int)
{
	const char *how = via_int ? "int 0x80" : "syscall";

	if ((tf->cs & 3) != 3)
		return SYSCALL_EINVAL;
	switch (tf->rdi) {
	case HELLO_VIA_INT:
		if (!via_int)
			return SYSCALL_EINVAL;
		break;
	case HELLO_VIA_SYSCALL:
		if (via_int)
			return SYSCALL_EINVAL;
		break;
	case HELLO_AFTER_SYSRET:
		return via_int ? SYSCALL_OK : SYSCALL_EINVAL;
	default:
		return SYSCALL_EINVAL;
	}
	klog("user: %s ok (from rip 0x%lx, rsp 0x%lx, cpl %lu)", how, (unsigned long)tf->rip,
	     (unsigned long)tf->rsp, (unsigned long)(tf->cs & 3));
	if (!via_int && knobs.gdt_user_code_first)
		scenario_triggering();        /* sysret-gdt-order: this SYSRET loads CS 0x23 */
	return SYSCALL_OK;
}

/* Both int 0x80 (vector T_SYSCALL_INT) and SYSCALL (T_SYSCALL_INSN) come here. */
void syscall_dispatch(struct trapframe *tf)
{
	bool via_int = tf->vector == T_SYSCALL_INT;
	int64_t ret;

	switch (tf->rax) {
	case SYS_HELLO:
		ret = sys_hello(tf, via_int);
		break;
	case SYS_BOOT_DONE:
		kmain_late();
		ret = SYSCALL_OK;
		break;
	case SYS_YIELD:
		ret = (int64_t)ticks;
		break;
	default:
		ret = SYSCALL_EINVAL;
		break;
	}
	tf->rax = (uint64_t)ret;
}
