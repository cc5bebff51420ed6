/*
 * syscall_entry.S - the SYSCALL entry point (MSR_LSTAR) and the SYSRET exit.
 *
 * Boot chain: user.c programs STAR/LSTAR/SFMASK before the user task starts.  SYSCALL
 * arrives here in ring 0 with RCX = user RIP, R11 = user RFLAGS, IF/TF/DF cleared by
 * SFMASK, and the user's RSP and GS: SWAPGS makes %gs the per-CPU block, whose
 * kernel_rsp (= TSS.RSP0) becomes the stack.  The frame built is a struct trapframe
 * with vector T_SYSCALL_INSN, so syscall_dispatch serves int 0x80 and SYSCALL alike.
 * SYSRETQ returns with CS = STAR[63:48] + 16 and SS = STAR[63:48] + 8 (RPL 3).
 */
#include "gdt.h"
#include "idt.h"
#include "percpu.h"

	.cfi_sections .debug_frame
	.text
	.globl syscall_entry
	.type syscall_entry, @function
syscall_entry:
	.cfi_startproc simple
	.cfi_signal_frame
	.cfi_register rip, rcx                     /* at entry: user RIP in RCX, RSP unchanged */
	.cfi_def_cfa rsp, 0
	swapgs
	mov %rsp, %gs:PERCPU_USER_RSP
	mov %gs:PERCPU_KERNEL_RSP, %rsp
	pushq $USER_DS                /* SS (what SYSRET will load) */
	pushq %gs:PERCPU_USER_RSP     /* RSP */
	push %r11                     /* RFLAGS */
	pushq $USER_CS                /* CS */
	push %rcx                     /* RIP */
	pushq $0                      /* error code */
	pushq $T_SYSCALL_INSN         /* vector */
	TRAPFRAME_PUSH_GPRS
	pushq TF_RIP(%rsp)            /* frame record for backtraces */
	push %rbp
	mov %rsp, %rbp
	TRAPFRAME_CFI
	lea 16(%rsp), %rdi
	call syscall_dispatch
	add $16, %rsp
	TRAPFRAME_POP_GPRS
	add $16, %rsp                 /* vector, error code */
	pop %rcx                      /* RIP for SYSRET */
	add $8, %rsp                  /* CS */
	pop %r11                      /* RFLAGS for SYSRET */
	pop %rsp                      /* user RSP (SS slot is left behind) */
	swapgs
	.globl syscall_sysretq
syscall_sysretq:
	sysretq
	.cfi_endproc
	.size syscall_entry, . - syscall_entry

	.section .note.GNU-stack, "", @progbits
