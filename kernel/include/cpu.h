/*
 * cpu.h - control registers, RFLAGS, CPUID feature bits, and the instruction wrappers
 * (port I/O, MSRs, descriptor-table registers, TSC) used by the loader and the kernel.
 * Intel SDM Vol. 3A 2.5 (CR0/CR4), 2.3 (RFLAGS); CPUID: Vol. 2A.
 *
 * Boot chain: OVMF hands over in long mode with CR0.PG/WP, CR4.PAE and its own GDT/IDT;
 * each stage reads and writes these registers only through the helpers below.
 */
#ifndef KDIAG_CPU_H
#define KDIAG_CPU_H

#include "kconst.h"

#define CR0_PE   BIT(0)    /* protection enable */
#define CR0_MP   BIT(1)
#define CR0_EM   BIT(2)
#define CR0_TS   BIT(3)
#define CR0_ET   BIT(4)
#define CR0_NE   BIT(5)
#define CR0_WP   BIT(16)   /* supervisor writes honour R/W=0 */
#define CR0_AM   BIT(18)
#define CR0_NW   BIT(29)
#define CR0_CD   BIT(30)
#define CR0_PG   BIT(31)

#define CR4_DE         BIT(3)
#define CR4_PSE        BIT(4)
#define CR4_PAE        BIT(5)
#define CR4_MCE        BIT(6)
#define CR4_PGE        BIT(7)    /* global pages */
#define CR4_PCE        BIT(8)
#define CR4_OSFXSR     BIT(9)
#define CR4_OSXMMEXCPT BIT(10)
#define CR4_UMIP       BIT(11)
#define CR4_LA57       BIT(12)
#define CR4_FSGSBASE   BIT(16)
#define CR4_PCIDE      BIT(17)
#define CR4_OSXSAVE    BIT(18)
#define CR4_SMEP       BIT(20)   /* no supervisor fetch from user pages */
#define CR4_SMAP       BIT(21)   /* no supervisor data access to user pages */

#define RFLAGS_CF   BIT(0)
#define RFLAGS_RSVD1 BIT(1)      /* always 1 */
#define RFLAGS_ZF   BIT(6)
#define RFLAGS_TF   BIT(8)
#define RFLAGS_IF   BIT(9)
#define RFLAGS_DF   BIT(10)
#define RFLAGS_NT   BIT(14)
#define RFLAGS_AC   BIT(18)

/* CPUID feature bits: leaf.register bit */
#define CPUID_1_EDX_PGE        BIT(13)
#define CPUID_1_EDX_PAT        BIT(16)
#define CPUID_1_ECX_X2APIC     BIT(21)
#define CPUID_7_EBX_SMEP       BIT(7)
#define CPUID_7_EBX_SMAP       BIT(20)
#define CPUID_80000001_EDX_NX  BIT(20)
#define CPUID_80000001_EDX_1GB BIT(26)   /* pdpe1gb: 1 GiB pages */
#define CPUID_80000001_EDX_LM  BIT(29)

#ifndef __ASSEMBLER__
#include <stdint.h>

struct desc_ptr {
	uint16_t limit;
	uint64_t base;
} __attribute__((packed));

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint64_t rdmsr(uint32_t msr)
{
	uint32_t lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((uint64_t)hi << 32) | lo;
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32))
			 : "memory");
}

#define DEFINE_CR_ACCESSORS(n)                                                   \
	static inline uint64_t read_cr##n(void)                                  \
	{                                                                        \
		uint64_t v;                                                      \
		__asm__ volatile("mov %%cr" #n ", %0" : "=r"(v));                \
		return v;                                                        \
	}                                                                        \
	static inline void write_cr##n(uint64_t v)                               \
	{                                                                        \
		__asm__ volatile("mov %0, %%cr" #n : : "r"(v) : "memory");       \
	}
DEFINE_CR_ACCESSORS(0)
DEFINE_CR_ACCESSORS(3)
DEFINE_CR_ACCESSORS(4)
#undef DEFINE_CR_ACCESSORS

static inline uint64_t read_cr2(void)
{
	uint64_t v;
	__asm__ volatile("mov %%cr2, %0" : "=r"(v));
	return v;
}

static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t *a, uint32_t *b,
			 uint32_t *c, uint32_t *d)
{
	__asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d)
			 : "a"(leaf), "c"(sub));
}

/* RDTSC ordered after earlier instructions (LFENCE is dispatch-serializing on Intel). */
static inline uint64_t rdtsc_ordered(void)
{
	uint32_t lo, hi;
	__asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
	return ((uint64_t)hi << 32) | lo;
}

static inline void lgdt(const struct desc_ptr *p)
{
	__asm__ volatile("lgdt %0" : : "m"(*p) : "memory");
}

static inline void lidt(const struct desc_ptr *p)
{
	__asm__ volatile("lidt %0" : : "m"(*p) : "memory");
}

static inline struct desc_ptr sgdt(void)
{
	struct desc_ptr p;
	__asm__ volatile("sgdt %0" : "=m"(p));
	return p;
}

static inline struct desc_ptr sidt(void)
{
	struct desc_ptr p;
	__asm__ volatile("sidt %0" : "=m"(p));
	return p;
}

static inline void ltr(uint16_t sel)
{
	__asm__ volatile("ltr %0" : : "r"(sel) : "memory");
}

static inline uint16_t str(void)
{
	uint16_t sel;
	__asm__ volatile("str %0" : "=r"(sel));
	return sel;
}

static inline uint16_t read_cs(void)
{
	uint16_t sel;
	__asm__ volatile("mov %%cs, %0" : "=r"(sel));
	return sel;
}

static inline void invlpg(uint64_t va)
{
	__asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
}

static inline void cli(void) { __asm__ volatile("cli" : : : "memory"); }
static inline void sti(void) { __asm__ volatile("sti" : : : "memory"); }
static inline void cpu_pause(void) { __asm__ volatile("pause"); }
static inline void wbinvd(void) { __asm__ volatile("wbinvd" : : : "memory"); }

static inline __attribute__((noreturn)) void halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}
#endif

#endif
