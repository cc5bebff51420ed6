/*
 * syscall.h - the system-call interface between the user task and the kernel.
 *
 * Boot chain: the kernel's last stage enters the user task (ring 3) by IRETQ; the task
 * proves both entry paths (int 0x80 through a DPL-3 gate, SYSCALL through LSTAR), then
 * asks the kernel to finish booting (SYS_BOOT_DONE) and loops.  RAX = number, RDI = arg,
 * result in RAX (0 = ok).  SYSCALL clobbers RCX and R11.
 */
#ifndef KDIAG_SYSCALL_H
#define KDIAG_SYSCALL_H

#define SYS_HELLO       1   /* rdi = HELLO_*: the kernel checks the path it came by */
#define SYS_BOOT_DONE   2   /* kernel: unmap the lower half, report, print "ready" */
#define SYS_YIELD       3   /* nothing; returns the tick count */

#define HELLO_VIA_INT       1   /* first call, by int 0x80 */
#define HELLO_VIA_SYSCALL   2   /* second call, by SYSCALL */
#define HELLO_AFTER_SYSRET  3   /* int 0x80 again: the state SYSRET left must survive IRETQ */

#define SYSCALL_OK      0
#define SYSCALL_EINVAL  (-22)

/* SFMASK: RFLAGS bits cleared on SYSCALL: IF, TF, DF */
#define SYSCALL_SFMASK  0x700

#endif
