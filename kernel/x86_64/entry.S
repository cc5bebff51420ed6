/*
 * entry.S - the kernel's entry point and the few transitions C cannot express.
 *
 * Boot chain: loader_enter_kernel (loader) jumps to _start on the loader's page tables,
 * with RDI = boot info (physmap address), IF = 0, IDT limit 0, OVMF's GDT (CS 0x38) and
 * the loader's stack.  _start moves to the kernel's boot stack (in .bss, over a guard
 * page) and calls kmain(bootinfo).  gdt.c reloads the segment registers here, and the
 * user stage leaves ring 0 through user_enter.
 */
#include "gdt.h"
#include "memlayout.h"

	.cfi_sections .debug_frame

	.section .text.entry, "ax"
	.globl _start
	.type _start, @function
_start:
	cli
	lea kstacks + KSTACK_BOOT * KSTACK_STRIDE + KSTACK_STRIDE(%rip), %rsp
	xor %ebp, %ebp
	call kmain                    /* never returns */
1:	cli
	hlt
	jmp 1b
	.size _start, . - _start

	.text
/* void segments_reload(uint16_t cs, uint16_t ds): data/stack segments, FS/GS null,
 * then CS through a far return (the only way to load CS in long mode besides far
 * jumps/calls through memory and IRETQ). */
	.globl segments_reload
	.type segments_reload, @function
segments_reload:
	.cfi_startproc
	mov %si, %ds
	mov %si, %es
	mov %si, %ss
	xor %eax, %eax
	mov %ax, %fs
	mov %ax, %gs
	movzwq %di, %rdi
	push %rdi
	.cfi_adjust_cfa_offset 8
	lea 1f(%rip), %rax
	push %rax
	.cfi_adjust_cfa_offset 8
	lretq
	.cfi_adjust_cfa_offset -16
1:	ret
	.cfi_endproc
	.size segments_reload, . - segments_reload

/* void segments_reload_data(uint16_t ds): the same without CS (cs-not-reloaded) */
	.globl segments_reload_data
	.type segments_reload_data, @function
segments_reload_data:
	.cfi_startproc
	mov %di, %ds
	mov %di, %es
	mov %di, %ss
	xor %eax, %eax
	mov %ax, %fs
	mov %ax, %gs
	ret
	.cfi_endproc
	.size segments_reload_data, . - segments_reload_data

/* void user_enter(u64 rip, u64 rsp, u64 cs, u64 ss): IRETQ to ring 3 with IF = 1.
 * SWAPGS first: in ring 3 GS_BASE is the user's (0), KERNEL_GS_BASE the per-CPU block. */
	.globl user_enter
	.type user_enter, @function
user_enter:
	cli
	swapgs
	push %rcx                     /* SS */
	push %rsi                     /* RSP */
	pushq $0x202                  /* RFLAGS: IF | reserved bit 1 */
	push %rdx                     /* CS */
	push %rdi                     /* RIP */
	mov %ecx, %eax
	mov %ax, %ds
	mov %ax, %es
	xor %eax, %eax
	xor %ebx, %ebx
	xor %ecx, %ecx
	xor %edx, %edx
	xor %esi, %esi
	xor %edi, %edi
	xor %ebp, %ebp
	xor %r8d, %r8d
	xor %r9d, %r9d
	xor %r10d, %r10d
	xor %r11d, %r11d
	xor %r12d, %r12d
	xor %r13d, %r13d
	xor %r14d, %r14d
	xor %r15d, %r15d
	iretq
	.size user_enter, . - user_enter

	.section .note.GNU-stack, "", @progbits
