/*
 * user.S - the user task: ring-3 code that the kernel maps at USER_CODE_VA.
 *
 * Boot chain: section .user is linked at USER_CODE_VA but loaded inside the kernel image
 * (kernel.lds.S); the last kernel stage (user.c) maps its pages a second time, at
 * USER_CODE_VA with PTE_U and without PTE_W, gives the task a stack at
 * USER_STACK_VA (PTE_U | PTE_W | PTE_NX), and IRETQs to user_entry.  The task proves
 * int 0x80, then SYSCALL, then int 0x80 again (the state SYSRET left must survive an
 * IRETQ), asks the kernel to finish booting (SYS_BOOT_DONE), and spins forever with a
 * SYS_YIELD now and then.  Position independent: only relative jumps.
 */
#include "syscall.h"

	.section .user, "ax"
	.globl user_entry
	.type user_entry, @function
user_entry:
	pushq $0x5a                   /* touch the user stack */
	pop %rax
	mov $SYS_HELLO, %eax
	mov $HELLO_VIA_INT, %edi
	int $0x80
	test %rax, %rax
	jnz user_fail
	mov $SYS_HELLO, %eax
	mov $HELLO_VIA_SYSCALL, %edi
	syscall
	test %rax, %rax
	jnz user_fail
	mov $SYS_HELLO, %eax
	mov $HELLO_AFTER_SYSRET, %edi
	int $0x80
	test %rax, %rax
	jnz user_fail
	mov $SYS_BOOT_DONE, %eax
	syscall
	jmp user_loop
user_fail:
	ud2                           /* a system call returned an error */
	.size user_entry, . - user_entry

	.globl user_loop
	.type user_loop, @function
user_loop:
	mov $0x40000, %ebx
1:	pause
	dec %ebx
	jnz 1b
	mov $SYS_YIELD, %eax
	syscall                       /* clobbers RCX and R11 only */
	jmp user_loop
	.size user_loop, . - user_loop

	.section .note.GNU-stack, "", @progbits
