/*
 * main.c - the x86-64 kernel's main line: every boot stage, in order.
 *
 * Boot chain: loader -> _start (entry.S) -> kmain(bootinfo).  kmain runs on the boot
 * stack with the loader's page tables and OVMF's GDT, then installs its own GDT, TSS,
 * IDT, page tables, PAT/framebuffer, LAPIC timer and SYSCALL MSRs, and enters the user
 * task in ring 3.  The task's SYS_BOOT_DONE call runs kmain_late() on the RSP0 stack:
 * lower half unmapped, KDIAG report, "[kernel] ready"; then the task keeps running.
 * Each stage prints one "[kernel] ..." line (kernel/STAGES.md) and gives the selected
 * fault scenario (scenarios.c) its chance to trigger.
 */
#include <stdarg.h>

#include "cpu.h"
#include "kernel.h"

struct bootinfo *bootinfo;

NORETURN void kmain(struct bootinfo *bi)
{
	console_init();
	klog("entered, bootinfo at %p", (void *)bi);
	/* With the abi-mismatch scenario bi is garbage (RDI = 0): this read faults. */
	if (bi->magic != BOOTINFO_MAGIC || bi->version != BOOTINFO_VERSION)
		panic("bad boot info at %p: magic 0x%lx version %u", (void *)bi,
		      (unsigned long)bi->magic, bi->version);
	bootinfo = bi;
	scenario_select(bi->scenario);
	cpu_detect();

	gdt_init();
	scenario_stage(STAGE_GDT);
	tss_init();
	scenario_stage(STAGE_TSS);
	idt_init();
	scenario_stage(STAGE_IDT);
	pmm_init();
	paging_init();
	scenario_stage(STAGE_PAGING);
	pat_fb_init();
	scenario_stage(STAGE_PAT);
	timer_init();
	scenario_stage(STAGE_TIMER);
	syscall_init();
	user_start();          /* ring 3; boot continues in kmain_late (SYS_BOOT_DONE) */
}

/* Called from the SYS_BOOT_DONE system call: RSP0 stack, interrupts off. */
void kmain_late(void)
{
	unmap_lower_half();
	klog("lower half unmapped");
	kdiag_report();
	scenario_stage(STAGE_LATE);
	klog("ready");
}

NORETURN void panic(const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	cli();
	va_start(ap, fmt);
	kvsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	klog("PANIC: %s", msg);
	klog("halted: panic");
	halt_forever();
}
