/*
 * kernel.h - what the x86-64 kernel's C files share: the stage functions kmain calls in
 * order, the console, memory management, and the scenario framework.
 *
 * Boot chain (kmain in main.c): entry -> scenario -> gdt -> tss -> idt -> paging -> pat
 * -> timer -> user (ring 3) -> [SYS_BOOT_DONE] lower half unmapped -> KDIAG report -> ready.
 */
#ifndef KDIAG_KERNEL_H
#define KDIAG_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bootinfo.h"
#include "format.h"
#include "memlayout.h"
#include "percpu.h"

#define NORETURN __attribute__((noreturn))
#define ALIGN_UP(x, a) (((x) + (a) - 1) & ~((uint64_t)(a) - 1))

/* linker-script symbols */
extern char __kernel_start[], __text_start[], __text_end[], __user_load[], __user_load_end[];
extern char __rodata_start[], __rodata_end[], __data_start[], __bss_start[], __kernel_end[];

/* main.c */
extern struct bootinfo *bootinfo;
NORETURN void kmain(struct bootinfo *bi);
void kmain_late(void);
NORETURN void panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* console.c: every line goes to COM1 and to the 0xE9 debug console */
void console_init(void);
void console_write(const char *s);
void klog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));       /* "[kernel] ..." */
void kdiag_line(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* "KDIAG ..." */

/* cpu features (paging.c) */
struct cpu_features {
	bool nx, pdpe1gb, pge, pat, smep, smap, x2apic;
};
extern struct cpu_features cpu;
void cpu_detect(void);

/* gdt.c: GDT, TSS, per-CPU block, kernel stacks */
extern struct percpu percpu0;
extern struct kstack kstacks[KSTACK_COUNT];
extern uint16_t user_cs, user_ss;
uint64_t kstack_top(int which);
void gdt_init(void);
void tss_init(void);
void segments_reload(uint16_t cs, uint16_t ds);       /* entry.S */
void segments_reload_data(uint16_t ds);               /* entry.S */

/* idt.c */
void idt_init(void);
void idt_set_ist(int vector, int ist);
void trap_dispatch(struct trapframe *tf);

/* pmm.c: physical pages, from the largest free range of the UEFI memory map */
void pmm_init(void);
uint64_t pmm_alloc(void);                /* one zeroed 4 KiB page; panics when out */
uint64_t pmm_alloc_contig(uint64_t pages, uint64_t align);
uint64_t pmm_used_pages(void);
static inline void *p2v(uint64_t pa) { return (void *)(PHYSMAP_BASE + pa); }

/* paging.c */
extern uint64_t kpml4_phys;
extern uint64_t physmap_end;
void paging_init(void);
void map_page(uint64_t va, uint64_t pa, uint64_t size, uint64_t flags);
uint64_t *pte_lookup(uint64_t va, uint64_t *page_size);
bool kstack_guard_page(uint64_t va);
void unmap_lower_half(void);

/* fb.c: PAT and the write-combining framebuffer */
extern uint64_t fb_pa, fb_bytes;
void pat_fb_init(void);

/* apic.c: PIC off, LAPIC timer at 1 kHz */
extern volatile uint64_t ticks;
extern uint64_t lapic_phys, tsc_hz, lapic_hz;
extern uint32_t timer_initial_count, timer_measured_hz;
extern bool lapic_x2apic;
void timer_init(void);
void lapic_eoi(void);

/* user.c */
void syscall_init(void);
NORETURN void user_start(void);
void syscall_dispatch(struct trapframe *tf);
NORETURN void user_enter(uint64_t rip, uint64_t rsp, uint64_t cs, uint64_t ss); /* entry.S */
void syscall_entry(void);                                                       /* syscall_entry.S */
/* user.S's user_entry is linked at USER_CODE_VA (lower half: not addressable from
 * -mcmodel=kernel C); kernel.lds.S asserts it. */

/* report.c */
void kdiag_report(void);

/* scenarios.c */
enum stage {
	STAGE_NONE,      /* healthy */
	STAGE_LOADER,    /* the loader acts (abi-mismatch); the kernel never sees it */
	STAGE_CONFIG,    /* fn sets knobs right after selection; the stage code triggers */
	STAGE_GDT,
	STAGE_TSS,
	STAGE_IDT,
	STAGE_PAGING,
	STAGE_PAT,
	STAGE_TIMER,
	STAGE_USER,
	STAGE_LATE,      /* after the KDIAG report, before "ready" */
};

/* Switches the stage code consults (set by STAGE_CONFIG scenarios). */
struct knobs {
	bool skip_cs_reload;          /* cs-not-reloaded */
	bool gdt_user_code_first;     /* sysret-gdt-order */
	bool idt_limit_zero;          /* idt-missing */
	bool skip_kernel_image_map;   /* cr3-unmapped-rip */
	bool fb_touch_before_map;     /* fb-unmapped */
	bool user_code_nx;            /* user-nx */
	bool user_code_supervisor;    /* user-supervisor */
	bool tss_rsp0_null;           /* tss-rsp0-null */
};
extern struct knobs knobs;
void scenario_select(const char *name);
void scenario_stage(enum stage s);
void scenario_triggering(void);
const char *scenario_name(void);

#endif
