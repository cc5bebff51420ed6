/*
 * apic.h - local APIC registers (Intel SDM Vol. 3A 11.4-11.5) and the timer setup.
 *
 * Boot chain: with the 8259 PIC remapped and masked (pic.h), the kernel enables the LAPIC
 * (xAPIC MMIO at LAPIC_VA, or x2APIC MSRs if firmware left x2APIC on), calibrates its
 * timer against the TSC, and runs it periodic at 1 kHz on vector T_TIMER.
 */
#ifndef KDIAG_APIC_H
#define KDIAG_APIC_H

/* Register offsets in the xAPIC MMIO page; x2APIC MSR = 0x800 + offset / 16 */
#define LAPIC_ID          0x020
#define LAPIC_VERSION     0x030
#define LAPIC_TPR         0x080   /* task priority */
#define LAPIC_EOI         0x0b0
#define LAPIC_SVR         0x0f0   /* spurious-interrupt vector register */
#define   LAPIC_SVR_ENABLE  0x100 /* APIC software enable */
#define LAPIC_ESR         0x280   /* error status */
#define LAPIC_LVT_TIMER   0x320
#define LAPIC_LVT_LINT0   0x350
#define LAPIC_LVT_LINT1   0x360
#define LAPIC_LVT_ERROR   0x370
#define   LAPIC_LVT_MASKED    0x10000   /* bit 16 */
#define   LAPIC_LVT_PERIODIC  0x20000   /* timer mode bits 18:17 = 01 */
#define   LAPIC_LVT_NMI       0x400     /* delivery mode 100 */
#define LAPIC_TIMER_INIT  0x380   /* initial count */
#define LAPIC_TIMER_CUR   0x390   /* current count */
#define LAPIC_TIMER_DIV   0x3e0   /* divide configuration */
#define   LAPIC_DIV_16      0x3

#define X2APIC_MSR_BASE   0x800
#define LAPIC_DEFAULT_PHYS 0xfee00000

#define TIMER_HZ          1000

#endif
