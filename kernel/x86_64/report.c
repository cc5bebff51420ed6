/*
 * report.c - the "KDIAG ..." lines: the machine state as the kernel itself reads it.
 *
 * Boot chain: printed by kmain_late after the lower half is unmapped, right before
 * "[kernel] ready", on COM1 and debugcon.  Values come from the hardware (SGDT, SIDT,
 * STR, RDMSR, control registers, the TSS through the GDT descriptor) so that tests can
 * compare kdiag's decoding against them.  Format: kernel/STAGES.md.
 */
#include "apic.h"
#include "idt.h"
#include "cpu.h"
#include "gdt.h"
#include "kernel.h"
#include "msr.h"
#include "tss.h"

static uint16_t read_seg(int which)
{
	uint16_t v = 0;

	switch (which) {
	case 0: __asm__ volatile("mov %%ds, %0" : "=r"(v)); break;
	case 1: __asm__ volatile("mov %%es, %0" : "=r"(v)); break;
	case 2: __asm__ volatile("mov %%ss, %0" : "=r"(v)); break;
	case 3: __asm__ volatile("mov %%fs, %0" : "=r"(v)); break;
	default: __asm__ volatile("mov %%gs, %0" : "=r"(v)); break;
	}
	return v;
}

void kdiag_report(void)
{
	struct desc_ptr gdtr = sgdt(), idtr = sidt();
	uint16_t tr = str();
	const uint64_t *gdt = (const uint64_t *)gdtr.base;
	uint64_t lo = gdt[tr >> 3], hi = gdt[(tr >> 3) + 1];
	uint64_t tss_base = ((lo >> 16) & 0xffffff) | (((lo >> 56) & 0xff) << 24) | (hi << 32);
	const struct tss64 *tss = (const struct tss64 *)tss_base;
	static const char *const stack_names[KSTACK_COUNT] = { "boot", "rsp0", "df", "nmi", "mc" };

	kdiag_line("GDTR base=0x%lx limit=0x%x", (unsigned long)gdtr.base, gdtr.limit);
	kdiag_line("IDTR base=0x%lx limit=0x%x", (unsigned long)idtr.base, idtr.limit);
	kdiag_line("TR sel=0x%x", tr);
	kdiag_line("TSS base=0x%lx rsp0=0x%lx ist1=0x%lx ist2=0x%lx ist3=0x%lx iopb=0x%x",
		   (unsigned long)tss_base, (unsigned long)tss->rsp[0], (unsigned long)tss->ist[0],
		   (unsigned long)tss->ist[1], (unsigned long)tss->ist[2], tss->iopb);
	kdiag_line("MSR STAR=0x%lx LSTAR=0x%lx SFMASK=0x%lx PAT=0x%lx EFER=0x%lx APIC_BASE=0x%lx",
		   (unsigned long)rdmsr(MSR_STAR), (unsigned long)rdmsr(MSR_LSTAR),
		   (unsigned long)rdmsr(MSR_SFMASK), (unsigned long)rdmsr(MSR_PAT),
		   (unsigned long)rdmsr(MSR_EFER), (unsigned long)rdmsr(MSR_APIC_BASE));
	kdiag_line("CR cr0=0x%lx cr3=0x%lx cr4=0x%lx", (unsigned long)read_cr0(),
		   (unsigned long)read_cr3(), (unsigned long)read_cr4());
	kdiag_line("FB pa=0x%lx va=0x%lx size=0x%lx", (unsigned long)fb_pa, (unsigned long)FB_VA,
		   (unsigned long)fb_bytes);
	kdiag_line("USER code=0x%lx stack=0x%lx entry=0x%lx stack_base=0x%lx load=0x%lx",
		   (unsigned long)USER_CODE_VA, (unsigned long)USER_STACK_TOP,
		   (unsigned long)USER_CODE_VA,
		   (unsigned long)USER_STACK_VA, (unsigned long)__user_load);
	kdiag_line("KERNEL text=0x%lx-0x%lx physmap=0x%lx ram=0x%lx physmap_end=0x%lx phys=0x%lx "
		   "rodata=0x%lx-0x%lx data=0x%lx-0x%lx entry=0x%lx",
		   (unsigned long)__text_start, (unsigned long)__text_end, (unsigned long)PHYSMAP_BASE,
		   (unsigned long)bootinfo->ram_end, (unsigned long)physmap_end,
		   (unsigned long)bootinfo->kernel_phys, (unsigned long)__rodata_start,
		   (unsigned long)__rodata_end, (unsigned long)__data_start,
		   (unsigned long)__kernel_end, (unsigned long)bootinfo->kernel_entry);
	kdiag_line("SEG cs=0x%x ds=0x%x es=0x%x ss=0x%x fs=0x%x gs=0x%x", read_cs(), read_seg(0),
		   read_seg(1), read_seg(2), read_seg(3), read_seg(4));
	kdiag_line("PERCPU base=0x%lx kernel_rsp=0x%lx", (unsigned long)&percpu0,
		   (unsigned long)percpu0.kernel_rsp);
	for (int i = 0; i < KSTACK_COUNT; i++)
		kdiag_line("STACK name=%s base=0x%lx top=0x%lx guard=0x%lx", stack_names[i],
			   (unsigned long)kstacks[i].stack, (unsigned long)kstack_top(i),
			   (unsigned long)kstacks[i].guard);
	kdiag_line("LAPIC pa=0x%lx va=0x%lx mode=%s timer_vector=0x%x timer_hz=%u measured_hz=%u "
		   "initial_count=%u", (unsigned long)lapic_phys, (unsigned long)LAPIC_VA,
		   lapic_x2apic ? "x2apic" : "xapic", T_TIMER, TIMER_HZ, timer_measured_hz,
		   timer_initial_count);
	kdiag_line("BOOTINFO va=0x%lx pa=0x%lx mmap=0x%lx entries=%lu rsdp=0x%lx ebs_attempts=%u "
		   "scenario=%s", (unsigned long)bootinfo, (unsigned long)bootinfo->bootinfo_phys,
		   (unsigned long)bootinfo->mmap_phys,
		   (unsigned long)(bootinfo->mmap_size / bootinfo->mmap_desc_size),
		   (unsigned long)bootinfo->rsdp_phys, bootinfo->ebs_attempts, scenario_name());
}
