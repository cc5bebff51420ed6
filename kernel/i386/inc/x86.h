/* inc/x86.h - inline wrappers for the privileged x86 instructions the kernel uses. */
#ifndef KDIAG_I386_X86_H
#define KDIAG_I386_X86_H
#include <inc/types.h>

static inline uint8_t inb(int port)
{
	uint8_t data;
	asm volatile("inb %w1,%0" : "=a" (data) : "d" (port));
	return data;
}

static inline void outb(int port, uint8_t data)
{
	asm volatile("outb %0,%w1" : : "a" (data), "d" (port));
}

static inline void lidt(void *p) { asm volatile("lidt (%0)" : : "r" (p)); }
static inline void lgdt(void *p) { asm volatile("lgdt (%0)" : : "r" (p)); }
static inline void ltr(uint16_t sel) { asm volatile("ltr %0" : : "r" (sel)); }
static inline void lcr3(uint32_t val) { asm volatile("movl %0,%%cr3" : : "r" (val)); }

static inline uint32_t rcr2(void)
{
	uint32_t val;
	asm volatile("movl %%cr2,%0" : "=r" (val));
	return val;
}

static inline uint32_t rcr3(void)
{
	uint32_t val;
	asm volatile("movl %%cr3,%0" : "=r" (val));
	return val;
}

static inline uint32_t read_ebp(void)
{
	uint32_t ebp;
	asm volatile("movl %%ebp,%0" : "=r" (ebp));
	return ebp;
}

static inline void sti_hlt(void) { asm volatile("sti; hlt"); }
static inline void cli(void) { asm volatile("cli"); }

#endif
