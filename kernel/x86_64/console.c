/*
 * console.c - kernel output: COM1 (16550, polled) and QEMU's 0xE9 debug console.
 *
 * Boot chain: the first thing kmain does; OVMF configured COM1 at 115200 8N1 and the
 * loader wrote it directly after ExitBootServices, so re-initializing it is only a
 * safety net.  Lines are "[kernel] ..." (klog) or "KDIAG ..." (kdiag_line); "\n"
 * becomes "\r\n" on COM1 only.
 */
#include <stdarg.h>

#include "cpu.h"
#include "kernel.h"
#include "uart.h"

void console_init(void)
{
	outb(COM1_PORT + UART_IER, 0);                       /* no UART interrupts */
	outb(COM1_PORT + UART_LCR, UART_LCR_DLAB);
	outb(COM1_PORT + UART_DLL, UART_BAUD_DIV_115200);
	outb(COM1_PORT + UART_DLM, 0);
	outb(COM1_PORT + UART_LCR, UART_LCR_8N1);
	outb(COM1_PORT + UART_FCR, 0xc7);                    /* FIFO on, cleared, 14-byte */
	outb(COM1_PORT + UART_MCR, UART_MCR_DTR_RTS_OUT2);
}

static void com1_putc(char c)
{
	for (int spin = 0; spin < 100000 && !(inb(COM1_PORT + UART_LSR) & UART_LSR_THRE); spin++)
		cpu_pause();
	outb(COM1_PORT + UART_THR, (uint8_t)c);
}

void console_write(const char *s)
{
	for (; *s; s++) {
		if (*s == '\n')
			com1_putc('\r');
		com1_putc(*s);
		outb(DEBUGCON_PORT, (uint8_t)*s);
	}
}

static void vline(const char *prefix, const char *fmt, va_list ap)
{
	char line[320];
	size_t n = (size_t)ksnprintf(line, sizeof(line), "%s", prefix);

	kvsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	n = kstrlen(line);
	line[n] = '\n';
	line[n + 1] = '\0';
	console_write(line);
}

void klog(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vline("[kernel] ", fmt, ap);
	va_end(ap);
}

void kdiag_line(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vline("KDIAG ", fmt, ap);
	va_end(ap);
}
