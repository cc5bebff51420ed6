/*
 * uart.h - the 16550 UART on COM1 and QEMU's debug console port.
 *
 * Boot chain: OVMF owns COM1 (115200 8N1) and mirrors ConOut to it; the loader prints
 * through ConOut until ExitBootServices, then, like the kernel, polls LSR.THRE and writes
 * COM1 directly.  Every line also goes to port 0xE9 (QEMU -debugcon).
 */
#ifndef KDIAG_UART_H
#define KDIAG_UART_H

#define COM1_PORT      0x3f8
#define UART_THR       0          /* transmit holding (DLAB=0) */
#define UART_DLL       0          /* divisor low (DLAB=1) */
#define UART_IER       1          /* interrupt enable (DLAB=0) */
#define UART_DLM       1          /* divisor high (DLAB=1) */
#define UART_FCR       2          /* FIFO control */
#define UART_LCR       3          /* line control */
#define   UART_LCR_8N1   0x03
#define   UART_LCR_DLAB  0x80
#define UART_MCR       4          /* modem control */
#define   UART_MCR_DTR_RTS_OUT2 0x0b
#define UART_LSR       5          /* line status */
#define   UART_LSR_THRE  0x20     /* transmit holding register empty */
#define UART_BAUD_DIV_115200 1

#define DEBUGCON_PORT  0xe9

#endif
