/*
 * pic.h - the legacy 8259A interrupt controllers and the 8254 PIT channel 2.
 *
 * Boot chain: the kernel never uses them for interrupts: it remaps the PIC pair to
 * T_PIC_BASE (so a spurious IRQ 7/15 cannot look like an exception) and masks every
 * line, then uses PIT channel 2 (gated through port 0x61, no interrupt) as the reference
 * clock that calibrates the TSC.
 */
#ifndef KDIAG_PIC_H
#define KDIAG_PIC_H

#define PIC1_CMD      0x20
#define PIC1_DATA     0x21
#define PIC2_CMD      0xa0
#define PIC2_DATA     0xa1
#define PIC_ICW1_INIT 0x10        /* start initialization */
#define PIC_ICW1_ICW4 0x01        /* ICW4 follows */
#define PIC_ICW4_8086 0x01        /* 8086 mode */
#define PIC_EOI       0x20

#define PIT_HZ        1193182     /* input clock */
#define PIT_CH2       0x42
#define PIT_CMD       0x43
#define   PIT_CMD_CH2_LOHI_MODE0 0xb0   /* channel 2, lo/hi byte, mode 0, binary */
#define PORT_NMI_SC   0x61        /* system control port B */
#define   NMI_SC_GATE2  0x01      /* PIT channel 2 gate */
#define   NMI_SC_SPKR   0x02      /* speaker data enable */
#define   NMI_SC_OUT2   0x20      /* PIT channel 2 output (read-only) */

#endif
