/* kern/gdt.h - the seed 002 GDT: null, kernel code/data, user code/data, one TSS per CPU. */
#ifndef KDIAG_I386_GDT_H
#define KDIAG_I386_GDT_H
#include <inc/mmu.h>

void gdt_init(void);
void set_gdt_entry(struct gdt_entry *e, uint32_t base, uint32_t limit, uint8_t type,
		   uint8_t s, uint8_t dpl, uint8_t p, uint8_t l, uint8_t d, uint8_t g);
extern struct pseudodesc gdt_ptr;
extern struct tss_entry tss_entries[];
extern unsigned num_gdt_entries, num_tss_entries;
#endif
