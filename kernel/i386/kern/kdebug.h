/* kern/kdebug.h - what debuginfo_eip() finds out about a code address (JOS names). */
#ifndef KDIAG_I386_KDEBUG_H
#define KDIAG_I386_KDEBUG_H
#include <inc/types.h>

struct Eipdebuginfo {
	const char *eip_file;		/* source file name for eip */
	int eip_line;			/* source line number for eip */
	const char *eip_fn_name;	/* name of the function holding eip (not NUL-terminated) */
	int eip_fn_namelen;		/* length of eip_fn_name */
	uintptr_t eip_fn_addr;		/* start address of that function */
	int eip_fn_narg;		/* number of its arguments */
};

int debuginfo_eip(uintptr_t eip, struct Eipdebuginfo *info);
#endif
