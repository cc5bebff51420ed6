/*
 * apic.c - the interrupt controllers and the 1 kHz LAPIC timer.
 *
 * Boot chain: after paging (the LAPIC page is mapped uncached at LAPIC_VA) and the PAT.
 * The 8259 pair is remapped to T_PIC_BASE and fully masked.  The LAPIC is enabled
 * (xAPIC MMIO, or the x2APIC MSRs if the firmware switched to x2APIC).  Calibration:
 * the TSC against PIT channel 2 (50 ms, polled through port 0x61), then the LAPIC timer
 * (divide by 16, one-shot) against the TSC (50 ms).  The timer then runs periodic at
 * TIMER_HZ on T_TIMER; interrupts are enabled and 100 ms of ticks measure the rate.
 */
#include "apic.h"
#include "cpu.h"
#include "idt.h"
#include "kernel.h"
#include "msr.h"
#include "pic.h"

volatile uint64_t ticks;
uint64_t lapic_phys, tsc_hz, lapic_hz;
uint32_t timer_initial_count, timer_measured_hz;
bool lapic_x2apic;

static uint32_t lapic_read(uint32_t reg)
{
	if (lapic_x2apic)
		return (uint32_t)rdmsr(X2APIC_MSR_BASE + reg / 16);
	return *(volatile uint32_t *)(LAPIC_VA + reg);
}

static void lapic_write(uint32_t reg, uint32_t v)
{
	if (lapic_x2apic)
		wrmsr(X2APIC_MSR_BASE + reg / 16, v);
	else
		*(volatile uint32_t *)(LAPIC_VA + reg) = v;
}

void lapic_eoi(void)
{
	lapic_write(LAPIC_EOI, 0);
}

static void pic_remap_and_mask(void)
{
	outb(PIC1_CMD, PIC_ICW1_INIT | PIC_ICW1_ICW4);
	outb(PIC2_CMD, PIC_ICW1_INIT | PIC_ICW1_ICW4);
	outb(PIC1_DATA, T_PIC_BASE);          /* ICW2: vector base */
	outb(PIC2_DATA, T_PIC_BASE + 8);
	outb(PIC1_DATA, 4);                   /* ICW3: slave on IRQ 2 */
	outb(PIC2_DATA, 2);
	outb(PIC1_DATA, PIC_ICW4_8086);
	outb(PIC2_DATA, PIC_ICW4_8086);
	outb(PIC1_DATA, 0xff);                /* mask everything */
	outb(PIC2_DATA, 0xff);
}

/* TSC ticks in 1/20 s, measured with PIT channel 2 in mode 0 (no interrupt). */
static uint64_t tsc_per_50ms(void)
{
	const uint16_t count = PIT_HZ / 20;

	outb(PORT_NMI_SC, (inb(PORT_NMI_SC) & ~NMI_SC_SPKR) & ~NMI_SC_GATE2);
	outb(PIT_CMD, PIT_CMD_CH2_LOHI_MODE0);
	outb(PIT_CH2, count & 0xff);
	outb(PIT_CH2, count >> 8);
	outb(PORT_NMI_SC, inb(PORT_NMI_SC) | NMI_SC_GATE2);      /* gate high: count down */
	uint64_t t0 = rdtsc_ordered();
	while (!(inb(PORT_NMI_SC) & NMI_SC_OUT2))
		cpu_pause();
	uint64_t t1 = rdtsc_ordered();
	outb(PORT_NMI_SC, inb(PORT_NMI_SC) & ~NMI_SC_GATE2);
	return t1 - t0;
}

static void tsc_wait(uint64_t cycles)
{
	uint64_t t0 = rdtsc_ordered();

	while (rdtsc_ordered() - t0 < cycles)
		cpu_pause();
}

void timer_init(void)
{
	uint64_t base = rdmsr(MSR_APIC_BASE);

	pic_remap_and_mask();
	lapic_x2apic = base & APIC_BASE_EXTD;
	if (!(base & APIC_BASE_EN))
		wrmsr(MSR_APIC_BASE, base | APIC_BASE_EN);
	lapic_write(LAPIC_TPR, 0);
	lapic_write(LAPIC_LVT_LINT0, LAPIC_LVT_MASKED);
	lapic_write(LAPIC_LVT_LINT1, LAPIC_LVT_NMI);
	lapic_write(LAPIC_LVT_ERROR, LAPIC_LVT_MASKED);
	lapic_write(LAPIC_SVR, LAPIC_SVR_ENABLE | T_LAPIC_SPURIOUS);

	tsc_hz = tsc_per_50ms() * 20;

	lapic_write(LAPIC_TIMER_DIV, LAPIC_DIV_16);
	lapic_write(LAPIC_LVT_TIMER, LAPIC_LVT_MASKED | T_TIMER);   /* one-shot, masked */
	lapic_write(LAPIC_TIMER_INIT, 0xffffffff);
	tsc_wait(tsc_hz / 20);
	uint32_t left = lapic_read(LAPIC_TIMER_CUR);
	lapic_write(LAPIC_TIMER_INIT, 0);
	lapic_hz = (uint64_t)(0xffffffffu - left) * 20;

	timer_initial_count = (uint32_t)(lapic_hz / TIMER_HZ);
	lapic_write(LAPIC_LVT_TIMER, LAPIC_LVT_PERIODIC | T_TIMER);
	lapic_write(LAPIC_TIMER_INIT, timer_initial_count);
	sti();

	uint64_t t0 = ticks;
	tsc_wait(tsc_hz / 10);
	timer_measured_hz = (uint32_t)((ticks - t0) * 10);
	klog("timer: %u Hz (measured %u Hz; tsc %lu kHz, lapic %lu kHz /16, initial count %u, %s)",
	     TIMER_HZ, timer_measured_hz, (unsigned long)(tsc_hz / 1000),
	     (unsigned long)(lapic_hz / 1000), timer_initial_count, lapic_x2apic ? "x2apic" : "xapic");
}
