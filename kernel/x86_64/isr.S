/*
 * isr.S - the 256 interrupt/exception entry stubs and their common path.
 *
 * Boot chain: idt.c points each IDT gate at isr_stubs + vector * ISR_STUB_SIZE.  A stub
 * pushes a dummy error code when the CPU pushes none, then the vector, so every entry
 * builds the same struct trapframe (percpu.h); isr_common saves the GPRs, SWAPGSes when
 * the interrupted code ran in ring 3, links a frame record (saved RBP + interrupted RIP)
 * so frame-pointer backtraces continue into the interrupted code, and calls
 * trap_dispatch(frame).  Returning, it undoes all of it and IRETQs.
 */
#include "idt.h"
#include "percpu.h"

	.cfi_sections .debug_frame
	.text

	.balign ISR_STUB_SIZE
	.globl isr_stubs
	.type isr_stubs, @function
isr_stubs:
	vec = 0
	.rept 256
	.balign ISR_STUB_SIZE
	.if T_HAS_ERROR_CODE(vec) == 0
	pushq $0
	.endif
	pushq $vec
	jmp isr_common
	vec = vec + 1
	.endr
	.size isr_stubs, . - isr_stubs

	.globl isr_common
	.type isr_common, @function
isr_common:
	.cfi_startproc simple
	.cfi_signal_frame
	/* at entry: vector at (%rsp), error, RIP, CS, RFLAGS, RSP, SS above it */
	.cfi_escape 0x0f, 0x03, 0x77, 0x28, 0x06   /* CFA = *(rsp + 40) */
	.cfi_escape 0x10, 0x10, 0x02, 0x77, 0x10   /* RIP at rsp + 16 */
	testb $3, 24(%rsp)            /* CS of the interrupted code (vector, error, rip, cs) */
	jz 1f
	swapgs
1:	TRAPFRAME_PUSH_GPRS
	pushq TF_RIP(%rsp)            /* frame record: return address = interrupted RIP */
	push %rbp
	mov %rsp, %rbp
	TRAPFRAME_CFI
	lea 16(%rsp), %rdi
	cld
	call trap_dispatch
	add $16, %rsp
	TRAPFRAME_POP_GPRS
	testb $3, 24(%rsp)
	jz 2f
	swapgs
2:	add $16, %rsp                 /* vector, error code */
	.globl isr_iretq
isr_iretq:
	iretq
	.cfi_endproc
	.size isr_common, . - isr_common

	.section .note.GNU-stack, "", @progbits
