/* kern/console.c - the console is COM1 (16550 UART at 0x3F8), polled, 115200 8N1.
 * Every line the kernel prints goes to serial; QEMU writes it to -serial file:... */
#include <inc/x86.h>
#include <inc/stdio.h>

#define COM1		0x3F8
#define COM_RX		0	/* receive buffer (DLAB=0) */
#define COM_DLL		0	/* divisor latch low (DLAB=1) */
#define COM_IER		1	/* interrupt enable (DLAB=0) */
#define COM_DLM		1	/* divisor latch high (DLAB=1) */
#define COM_FCR		2
#define COM_LCR		3
#define COM_LCR_DLAB	0x80
#define COM_LCR_WLEN8	0x03
#define COM_MCR		4
#define COM_LSR		5
#define COM_LSR_TXRDY	0x20

void
serial_init(void)
{
	outb(COM1 + COM_FCR, 0);
	outb(COM1 + COM_LCR, COM_LCR_DLAB);
	outb(COM1 + COM_DLL, 1);		/* 115200 baud */
	outb(COM1 + COM_DLM, 0);
	outb(COM1 + COM_LCR, COM_LCR_WLEN8);
	outb(COM1 + COM_MCR, 0);
	outb(COM1 + COM_IER, 0);
}

static void
serial_putc(int c)
{
	int i;

	for (i = 0; !(inb(COM1 + COM_LSR) & COM_LSR_TXRDY) && i < 12800; i++)
		;
	outb(COM1 + COM_RX, c);
}

void
cputchar(int c)
{
	serial_putc(c);
}
