/* kern/gdt.c - the GDT and per-CPU TSSs of seed 002 ("GDT and TSS" tutorial), 32-bit.
 *
 *   [0x00] null  [0x08] kernel code  [0x10] kernel data  [0x18] user code  [0x20] user data
 *   [0x28 + 8*i] CPU i's 32-bit TSS (ss0:esp0 = GD_KD : top of that CPU's kernel stack)
 *
 * Differences from the tutorial, on purpose: the null entry is all zeros, and the TSS
 * descriptors are byte-granular (G=0, limit sizeof(TSS)-1) with DPL 0 (an available 32-bit
 * TSS, type 9). Only CPU 0 runs (no -smp); its TSS is loaded with ltr.
 */
#include <inc/memlayout.h>
#include <inc/mmu.h>
#include <inc/string.h>
#include <inc/x86.h>
#include <kern/gdt.h>

static struct gdt_entry entries[NCPU + 5];
struct tss_entry tss_entries[NCPU];
struct pseudodesc gdt_ptr;
unsigned num_gdt_entries, num_tss_entries;
uint8_t cpu_kstacks[NCPU][KSTKSIZE] __attribute__((aligned(PGSIZE)));

void
set_gdt_entry(struct gdt_entry *e, uint32_t base, uint32_t limit, uint8_t type, uint8_t s,
	      uint8_t dpl, uint8_t p, uint8_t l, uint8_t d, uint8_t g)
{
	if (g)
		limit >>= 12;
	e->limit_low = limit & 0xFFFF;
	e->base_low = base & 0xFFFF;
	e->base_mid = (base >> 16) & 0xFF;
	e->type = type & 0xF;
	e->s = s & 0x1;
	e->dpl = dpl & 0x3;
	e->p = p & 0x1;
	e->limit_high = (limit >> 16) & 0xF;
	e->avail = 0;
	e->l = l & 0x1;
	e->d = d & 0x1;
	e->g = g & 0x1;
	e->base_high = (base >> 24) & 0xFF;
}

static void
set_tss_entry(struct tss_entry *e, int cpu)
{
	memset(e, 0, sizeof(*e));
	e->ss0 = e->ss = e->ds = e->es = e->fs = e->gs = GD_KD;
	e->cs = GD_KT;
	e->esp0 = (uint32_t) &cpu_kstacks[cpu][KSTKSIZE];
	e->iomap_base = sizeof(struct tss_entry);	/* no I/O permission bitmap */
}

void
gdt_init(void)
{
	int i;

	/*                   Base Limit Type                     S  Dpl P  L  D  G */
	set_gdt_entry(&entries[0], 0, 0, 0, 0, 0, 0, 0, 0, 0);
	set_gdt_entry(&entries[1], 0, ~0U, TY_CODE | TY_READABLE, 1, 0, 1, 0, 1, 1);
	set_gdt_entry(&entries[2], 0, ~0U, TY_DATA_WRITABLE, 1, 0, 1, 0, 1, 1);
	set_gdt_entry(&entries[3], 0, ~0U, TY_CODE | TY_READABLE, 1, 3, 1, 0, 1, 1);
	set_gdt_entry(&entries[4], 0, ~0U, TY_DATA_WRITABLE, 1, 3, 1, 0, 1, 1);
	for (i = 0; i < NCPU; i++) {
		set_tss_entry(&tss_entries[i], i);
		set_gdt_entry(&entries[i + 5], (uint32_t) &tss_entries[i],
			      sizeof(struct tss_entry) - 1, STS_T32A, 0, 0, 1, 0, 0, 0);
	}
	num_gdt_entries = NCPU + 5;
	num_tss_entries = NCPU;

	gdt_ptr.base = (uint32_t) &entries[0];
	gdt_ptr.limit = sizeof(struct gdt_entry) * num_gdt_entries - 1;
	asm volatile("lgdt %0\n\t"
		     "movw %w1, %%ax\n\t"
		     "movw %%ax, %%ds\n\t"
		     "movw %%ax, %%es\n\t"
		     "movw %%ax, %%fs\n\t"
		     "movw %%ax, %%gs\n\t"
		     "movw %%ax, %%ss\n\t"
		     "ljmp %2, $1f\n"
		     "1:"
		     : : "m" (gdt_ptr), "i" (GD_KD), "i" (GD_KT) : "eax");
	ltr(GD_TSS0);
}
