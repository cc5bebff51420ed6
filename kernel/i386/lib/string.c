/* lib/string.c - minimal string routines (no libc in the kernel). */
#include <inc/string.h>

int
strlen(const char *s)
{
	int n;

	for (n = 0; *s != '\0'; s++)
		n++;
	return n;
}

int
strncmp(const char *p, const char *q, size_t n)
{
	while (n > 0 && *p && *p == *q)
		n--, p++, q++;
	if (n == 0)
		return 0;
	return (int) ((unsigned char) *p - (unsigned char) *q);
}

/* the first c in s, or the terminating NUL */
char *
strfind(const char *s, char c)
{
	for (; *s; s++)
		if (*s == c)
			break;
	return (char *) s;
}

void *
memset(void *v, int c, size_t n)
{
	char *p = v;

	while (n-- > 0)
		*p++ = c;
	return v;
}

void *
memcpy(void *dst, const void *src, size_t n)
{
	const char *s = src;
	char *d = dst;

	while (n-- > 0)
		*d++ = *s++;
	return dst;
}
