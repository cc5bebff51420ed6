/*
 * gdt.c - the kernel's GDT, the per-CPU block with its TSS, and the kernel stacks.
 *
 * Boot chain: first stages after entry.  OVMF's GDT is still loaded (CS = 0x38); gdt_init
 * loads the layout of gdt.h (data before code, for SYSRET) and reloads every segment
 * register, CS by a far return.  tss_init fills the TSS (RSP0, IST1-3, no I/O bitmap),
 * loads TR and points GS_BASE at the per-CPU block.  The stacks are in .bss, each above
 * a guard page that paging.c leaves unmapped.
 */
#include "cpu.h"
#include "gdt.h"
#include "kernel.h"
#include "msr.h"
#include "tss.h"

struct percpu percpu0 __attribute__((aligned(64)));
struct kstack kstacks[KSTACK_COUNT] __attribute__((section(".bss.stacks"), aligned(4096)));
uint16_t user_cs = USER_CS, user_ss = USER_DS;

static uint64_t gdt[GDT_ENTRIES] __attribute__((aligned(16)));

uint64_t kstack_top(int which)
{
	return (uint64_t)&kstacks[which].stack[KSTACK_SIZE];
}

static void gdt_set_tss(struct tss64 *tss)
{
	uint64_t base = (uint64_t)tss;

	gdt[SEG_TSS >> 3] = SEG_DESC(base & 0xffffffff, sizeof(*tss) - 1,
				     SEG_ACC_P | SEG_SYS_TSS64, 0);
	gdt[(SEG_TSS >> 3) + 1] = base >> 32;
}

void gdt_init(void)
{
	struct desc_ptr gdtr = { sizeof(gdt) - 1, (uint64_t)gdt };
	uint16_t old_cs = read_cs();

	gdt[0] = 0;
	gdt[SEG_KCODE >> 3] = SEG_KCODE_DESC;
	gdt[SEG_KDATA >> 3] = SEG_KDATA_DESC;
	if (knobs.gdt_user_code_first) {
		/* sysret-gdt-order: the pre-SYSCALL layout, user code at 0x18 and data at
		 * 0x20; IRETQ works with matching selectors, SYSRET (STAR base 0x10) will
		 * load CS = 0x23 (data) and SS = 0x1b (code) without checking. */
		gdt[3] = SEG_UCODE_DESC;
		gdt[4] = SEG_UDATA_DESC;
		user_cs = 0x18 | 3;
		user_ss = 0x20 | 3;
	} else {
		gdt[SEG_UDATA >> 3] = SEG_UDATA_DESC;
		gdt[SEG_UCODE >> 3] = SEG_UCODE_DESC;
	}
	gdt_set_tss(&percpu0.tss);

	if (knobs.skip_cs_reload) {
		/* cs-not-reloaded: DS/ES/SS/FS/GS are reloaded, CS keeps OVMF's selector,
		 * which is beyond the new limit; the first IRETQ will pop it. */
		scenario_triggering();
		lgdt(&gdtr);
		segments_reload_data(SEG_KDATA);
		klog("gdt loaded, cs NOT reloaded (cs 0x%x, gdt limit 0x%x)", read_cs(), gdtr.limit);
		return;
	}
	lgdt(&gdtr);
	segments_reload(SEG_KCODE, SEG_KDATA);
	klog("gdt loaded, cs reloaded (cs 0x%x -> 0x%x, gdt 0x%lx limit 0x%x)", old_cs, read_cs(),
	     (unsigned long)gdtr.base, gdtr.limit);
}

void tss_init(void)
{
	struct tss64 *tss = &percpu0.tss;

	percpu0.self = &percpu0;
	percpu0.cpu_id = 0;
	percpu0.kernel_rsp = kstack_top(KSTACK_RSP0);
	tss->rsp[0] = kstack_top(KSTACK_RSP0);
	tss->ist[IST_DF - 1] = kstack_top(KSTACK_DF);
	tss->ist[IST_NMI - 1] = kstack_top(KSTACK_NMI);
	tss->ist[IST_MC - 1] = kstack_top(KSTACK_MC);
	tss->iopb = TSS_IOPB_NONE;
	ltr(SEG_TSS);
	/* In ring 0 GS_BASE is the per-CPU block; SWAPGS exchanges it with KERNEL_GS_BASE
	 * on every ring change (user_enter, isr_common, syscall_entry). */
	wrmsr(MSR_GS_BASE, (uint64_t)&percpu0);
	wrmsr(MSR_KERNEL_GS_BASE, 0);
	klog("tss loaded (tr 0x%x, tss 0x%lx, rsp0 0x%lx, ist1 0x%lx)", str(), (unsigned long)tss,
	     (unsigned long)tss->rsp[0], (unsigned long)tss->ist[0]);
}
