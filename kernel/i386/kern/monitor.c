/* kern/monitor.c - mon_backtrace: the JOS lab 1 frame-pointer backtrace, on serial.
 *
 * Format (one pair of lines per frame, from this function's own frame outwards):
 *   Stack backtrace:
 *     ebp f010ff78  eip f01008ae  args 00000001 f010ff8c 00000000 f0110580 00000000
 *            kern/monitor.c:143: monitor+106
 * "eip" is the frame's return address and the second line symbolizes it with
 * debuginfo_eip(); "args" are the five words above the saved eip, whatever the real
 * argument count. The walk ends at %ebp == 0 (set in entry.S before i386_init).
 *
 * kdiag's `kd bt --format jos` reproduces this output from outside the guest; the
 * integration test stops here with a gdb breakpoint and compares line by line.
 */
#include <inc/stdio.h>
#include <inc/types.h>
#include <inc/x86.h>
#include <kern/kdebug.h>
#include <kern/monitor.h>

int
mon_backtrace(int argc, char **argv, struct Trapframe *tf)
{
	uint32_t *ebp = (uint32_t *) read_ebp();
	struct Eipdebuginfo info;

	cprintf("Stack backtrace:\n");
	while (ebp != NULL) {
		uintptr_t eip = ebp[1];

		cprintf("  ebp %08x  eip %08x  args %08x %08x %08x %08x %08x\n",
			(uint32_t) ebp, eip, ebp[2], ebp[3], ebp[4], ebp[5], ebp[6]);
		debuginfo_eip(eip, &info);
		cprintf("         %s:%d: %.*s+%d\n", info.eip_file, info.eip_line,
			info.eip_fn_namelen, info.eip_fn_name, eip - info.eip_fn_addr);
		ebp = (uint32_t *) ebp[0];
	}
	return 0;
}
