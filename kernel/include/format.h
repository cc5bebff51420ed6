/*
 * format.h - a small printf-style formatter shared by the loader and the kernel.
 *
 * Neither stage has a libc.  Supported: %d %i %u %x %X %p %s %c %%, flags '-' and '0',
 * a field width, length modifiers hh h l ll z.  %p prints 0x and lower-case hex.
 */
#ifndef KDIAG_FORMAT_H
#define KDIAG_FORMAT_H

#include <stdarg.h>
#include <stddef.h>

int kvsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
int ksnprintf(char *buf, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Tiny string helpers (no libc) */
size_t kstrlen(const char *s);
int kstrcmp(const char *a, const char *b);
int kstrncmp(const char *a, const char *b, size_t n);
void *kmemset(void *d, int c, size_t n);
void *kmemcpy(void *d, const void *s, size_t n);

#endif
