/*
 * scenarios.c - fault scenarios: small, plausible bugs reproduced on demand.
 *
 * Boot chain: the loader copies "scenario=NAME" from \kdiag.cfg into the boot info;
 * kmain calls scenario_select right after entry, then scenario_stage(STAGE_x) after
 * each stage.  A scenario is one function and one table entry:
 *   - stage STAGE_CONFIG: the function only sets knobs (kernel.h); the stage code that
 *     contains the bug consults them and calls scenario_triggering() right before it;
 *   - any other stage: scenario_stage prints "[kernel] scenario NAME: triggering" and
 *     calls the function once that stage is done.
 * scenarios.list (the launcher's list) must name exactly the entries of this table;
 * the build checks it (tools/check-scenarios.sh).  Expected outcomes: SCENARIOS.md.
 */
#include "cpu.h"
#include "idt.h"
#include "kernel.h"
#include "paging.h"
#include "tss.h"

struct knobs knobs;

struct scenario {
	const char *name;
	enum stage stage;
	void (*fn)(void);
	const char *what;
};

static void sc_cs_not_reloaded(void) { knobs.skip_cs_reload = true; }
static void sc_sysret_gdt_order(void) { knobs.gdt_user_code_first = true; }
static void sc_idt_missing(void) { knobs.idt_limit_zero = true; }
static void sc_cr3_unmapped_rip(void) { knobs.skip_kernel_image_map = true; }
static void sc_fb_unmapped(void) { knobs.fb_touch_before_map = true; }
static void sc_user_nx(void) { knobs.user_code_nx = true; }
static void sc_user_supervisor(void) { knobs.user_code_supervisor = true; }
static void sc_tss_rsp0_null(void) { knobs.tss_rsp0_null = true; }

struct device {
	const char *name;
	void (*handler)(void);
};

static void sc_null_deref(void)
{
	/* a lookup that failed and nobody checked: read dev->handler, offset 8 */
	struct device *volatile dev = NULL;
	void (*volatile h)(void) = dev->handler;
	(void)h;
}

static void sc_noncanonical(void)
{
	/* the first address past the lower half: bits 63:47 not a sign extension */
	volatile uint64_t *p = (volatile uint64_t *)0x0000800000000000ULL;
	(void)*p;
}

static void sc_ud(void)
{
	__asm__ volatile("ud2");
}

static void sc_div0(void)
{
	volatile uint32_t divisor = 0, dividend = 1000;
	volatile uint32_t quotient = dividend / divisor;
	(void)quotient;
}

static volatile uint64_t recursion_limit = ~0ULL;

static __attribute__((noinline)) uint64_t recurse(uint64_t depth)
{
	volatile uint8_t frame[512];

	frame[0] = (uint8_t)depth;
	if (depth >= recursion_limit)
		return frame[0];
	return recurse(depth + 1) + frame[0];
}

static void sc_stack_overflow(void)
{
	/* #DF without an IST: a #PF on the guard page cannot be delivered on the same stack,
	 * nor can the #DF, so the CPU shuts down (triple fault). */
	idt_set_ist(T_DF, IST_NONE);
	recurse(0);
}

static void sc_pt_stress(void)
{
	uint64_t frames[16];

	for (int i = 0; i < 16; i++)
		frames[i] = pmm_alloc();
	for (uint64_t off = 0; off < PTSTRESS_SIZE; off += PAGE_SIZE)
		map_page(PTSTRESS_BASE + off, frames[(off / PAGE_SIZE) % 16], PAGE_SIZE,
			 PTE_P | PTE_G | PTE_NX);
	kdiag_line("PTSTRESS base=0x%lx size=0x%lx ptes=%lu frames=16",
		   (unsigned long)PTSTRESS_BASE, (unsigned long)PTSTRESS_SIZE,
		   (unsigned long)(PTSTRESS_SIZE / PAGE_SIZE));
}

static const struct scenario scenarios[] = {
	{ "healthy", STAGE_NONE, NULL, "no fault: boots to ready and keeps running" },
	{ "cs-not-reloaded", STAGE_CONFIG, sc_cs_not_reloaded,
	  "new GDT loaded without reloading CS (stale 0x38); the first IRETQ faults" },
	{ "sysret-gdt-order", STAGE_CONFIG, sc_sysret_gdt_order,
	  "GDT has user code before user data; SYSRET loads CS=0x23 (a data segment)" },
	{ "idt-missing", STAGE_CONFIG, sc_idt_missing,
	  "IDTR limit 0; the first timer interrupt triple-faults" },
	{ "cr3-unmapped-rip", STAGE_CONFIG, sc_cr3_unmapped_rip,
	  "new CR3 whose tables do not map the running kernel code" },
	{ "fb-unmapped", STAGE_CONFIG, sc_fb_unmapped,
	  "framebuffer written before it is mapped" },
	{ "user-nx", STAGE_CONFIG, sc_user_nx, "user code page mapped NX" },
	{ "user-supervisor", STAGE_CONFIG, sc_user_supervisor,
	  "user code page left supervisor-only" },
	{ "tss-rsp0-null", STAGE_CONFIG, sc_tss_rsp0_null,
	  "TSS.RSP0 = 0 when ring 3 first enters the kernel" },
	{ "abi-mismatch", STAGE_LOADER, NULL,
	  "loader passes boot info in RCX (ms_abi); the kernel reads RDI = 0" },
	{ "ebs-retry", STAGE_LOADER, NULL,
	  "loader makes its first ExitBootServices key stale; the retry recovers (no fault)" },
	{ "null-deref", STAGE_LATE, sc_null_deref, "kernel reads a NULL struct's field (0x8)" },
	{ "noncanonical", STAGE_LATE, sc_noncanonical,
	  "kernel reads the non-canonical address 0x0000800000000000" },
	{ "ud", STAGE_LATE, sc_ud, "kernel executes ud2" },
	{ "div0", STAGE_LATE, sc_div0, "kernel divides by zero" },
	{ "stack-overflow", STAGE_LATE, sc_stack_overflow,
	  "recursion overruns the 16 KiB RSP0 stack into its guard page; #DF has no IST" },
	{ "pt-stress", STAGE_PAGING, sc_pt_stress,
	  "maps 1 GiB at PTSTRESS_BASE with 262144 4 KiB PTEs, then boots to ready" },
};

static const struct scenario *active = &scenarios[0];

void scenario_select(const char *requested)
{
	char name[BOOTINFO_SCENARIO_MAX];
	size_t n = 0;

	while (n + 1 < sizeof(name) && requested[n]) {
		name[n] = requested[n];
		n++;
	}
	name[n] = '\0';
	active = &scenarios[0];
	if (n) {
		const struct scenario *found = NULL;
		for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
			if (!kstrcmp(scenarios[i].name, name))
				found = &scenarios[i];
		if (found) {
			active = found;
		} else {
			char list[400];
			size_t len = 0;
			for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
				len += (size_t)ksnprintf(list + len, len < sizeof(list) ? sizeof(list) - len : 0,
							 "%s%s", i ? " " : "", scenarios[i].name);
			klog("unknown scenario %s", name);
			klog("known scenarios: %s", list);
		}
	}
	klog("scenario: %s", active->name);
	if (active->stage == STAGE_CONFIG && active->fn)
		active->fn();
}

void scenario_triggering(void)
{
	klog("scenario %s: triggering (%s)", active->name, active->what);
}

void scenario_stage(enum stage s)
{
	if (active->stage != s || !active->fn || s == STAGE_CONFIG)
		return;
	scenario_triggering();
	active->fn();
}

const char *scenario_name(void)
{
	return active->name;
}
