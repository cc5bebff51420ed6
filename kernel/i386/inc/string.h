/* inc/string.h - the few string routines the kernel needs (lib/string.c). */
#ifndef KDIAG_I386_STRING_H
#define KDIAG_I386_STRING_H
#include <inc/types.h>
int strlen(const char *s);
int strncmp(const char *p, const char *q, size_t n);
char *strfind(const char *s, char c);
void *memset(void *dst, int c, size_t len);
void *memcpy(void *dst, const void *src, size_t len);
#endif
