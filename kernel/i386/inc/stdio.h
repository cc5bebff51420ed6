/* inc/stdio.h - formatted output (lib/printfmt.c) and the kernel console (kern/printf.c). */
#ifndef KDIAG_I386_STDIO_H
#define KDIAG_I386_STDIO_H
#include <inc/stdarg.h>

void printfmt(void (*putch)(int, void *), void *putdat, const char *fmt, ...);
void vprintfmt(void (*putch)(int, void *), void *putdat, const char *fmt, va_list ap);
int cprintf(const char *fmt, ...);
int vcprintf(const char *fmt, va_list ap);
void cputchar(int c);
#endif
