/*
 * loader_enter.S - the loader's last instructions: switch to the kernel's first page
 * tables and jump to the kernel entry.
 *
 * Boot chain: called by loader.c after ExitBootServices, still on OVMF's stack and GDT,
 * running from the identity map (which the new tables also contain).  Interrupts go off
 * and the IDT becomes empty (limit 0): the firmware's handlers are no longer ours to use,
 * so a fault before the kernel loads its own IDT triple-faults visibly instead of hanging
 * in OVMF's exception loop.  Every general register except the argument is zeroed.
 *
 * void loader_enter_kernel(u64 cr3, u64 entry, u64 bootinfo, u64 pass_in_rcx)  [SysV]
 *   pass_in_rcx == 0: bootinfo in RDI (System V, what the kernel expects)
 *   pass_in_rcx != 0: bootinfo in RCX (ms_abi; the abi-mismatch scenario), RDI = 0
 */
	.text
	.globl loader_enter_kernel
	.type loader_enter_kernel, @function
loader_enter_kernel:
	cli
	lidt null_idtr(%rip)
	mov %rdi, %cr3
	mov %rsi, %rax
	mov %rdx, %r8
	test %rcx, %rcx
	jnz 1f
	mov %r8, %rdi
	xor %ecx, %ecx
	jmp 2f
1:	mov %r8, %rcx
	xor %edi, %edi
2:	xor %ebx, %ebx
	xor %edx, %edx
	xor %esi, %esi
	xor %ebp, %ebp
	xor %r8d, %r8d
	xor %r9d, %r9d
	xor %r10d, %r10d
	xor %r11d, %r11d
	xor %r12d, %r12d
	xor %r13d, %r13d
	xor %r14d, %r14d
	xor %r15d, %r15d
	jmp *%rax
	.size loader_enter_kernel, . - loader_enter_kernel

	.data
	.balign 16
null_idtr:
	.word 0
	.quad 0

	.section .note.GNU-stack, "", @progbits
