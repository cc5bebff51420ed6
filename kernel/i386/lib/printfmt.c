/* lib/printfmt.c - printf-style formatting: %d %u %x %o %p %s %c %%, widths, '0' padding,
 * precision for strings (%.*s), 'l' accepted and ignored (32-bit). */
#include <inc/types.h>
#include <inc/stdarg.h>
#include <inc/stdio.h>
#include <inc/string.h>

static void
printnum(void (*putch)(int, void *), void *putdat, unsigned long num, unsigned base,
	 int width, int padc)
{
	char buf[12];
	int n = 0;

	do {
		buf[n++] = "0123456789abcdef"[num % base];
		num /= base;
	} while (num != 0);
	while (width-- > n)
		putch(padc, putdat);
	while (n > 0)
		putch(buf[--n], putdat);
}

void
vprintfmt(void (*putch)(int, void *), void *putdat, const char *fmt, va_list ap)
{
	const char *p;
	int ch, width, precision, padc;
	long num;

	for (;;) {
		while ((ch = *(unsigned char *) fmt++) != '%') {
			if (ch == '\0')
				return;
			putch(ch, putdat);
		}
		padc = ' ';
		width = -1;
		precision = -1;
	reswitch:
		switch (ch = *(unsigned char *) fmt++) {
		case '0':
			padc = '0';
			goto reswitch;
		case '1': case '2': case '3': case '4': case '5':
		case '6': case '7': case '8': case '9':
			for (width = 0;; ++fmt) {
				width = width * 10 + ch - '0';
				ch = *fmt;
				if (ch < '0' || ch > '9')
					break;
			}
			goto reswitch;
		case '.':
			if (*fmt == '*') {
				precision = va_arg(ap, int);
				fmt++;
			} else {
				for (precision = 0; *fmt >= '0' && *fmt <= '9'; fmt++)
					precision = precision * 10 + *fmt - '0';
			}
			goto reswitch;
		case 'l':
			goto reswitch;
		case 'c':
			putch(va_arg(ap, int), putdat);
			break;
		case 's':
			if ((p = va_arg(ap, char *)) == NULL)
				p = "(null)";
			for (; (ch = *p) != '\0' && (precision < 0 || precision-- > 0); p++) {
				putch(ch, putdat);
				width--;
			}
			for (; width > 0; width--)
				putch(' ', putdat);
			break;
		case 'd':
			num = va_arg(ap, int);
			if (num < 0) {
				putch('-', putdat);
				num = -num;
			}
			printnum(putch, putdat, (unsigned long) num, 10, width, padc);
			break;
		case 'u':
			printnum(putch, putdat, va_arg(ap, unsigned), 10, width, padc);
			break;
		case 'o':
			printnum(putch, putdat, va_arg(ap, unsigned), 8, width, padc);
			break;
		case 'p':
			putch('0', putdat);
			putch('x', putdat);
			printnum(putch, putdat, (unsigned long) va_arg(ap, void *), 16, 8, '0');
			break;
		case 'x':
			printnum(putch, putdat, va_arg(ap, unsigned), 16, width, padc);
			break;
		case '%':
			putch(ch, putdat);
			break;
		default:
			putch('%', putdat);
			for (fmt--; fmt[-1] != '%'; fmt--)
				;
			break;
		}
	}
}

void
printfmt(void (*putch)(int, void *), void *putdat, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintfmt(putch, putdat, fmt, ap);
	va_end(ap);
}
