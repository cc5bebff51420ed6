/*
 * percpu.h - the per-CPU block and the trap frame, shared by the C kernel and its
 * assembly entry points (isr.S, syscall_entry.S).
 *
 * Boot chain: tss_init() fills the block and points GS_BASE at it; the syscall entry
 * finds its kernel stack through %gs after SWAPGS; every interrupt, exception, int 0x80
 * and SYSCALL builds one struct trapframe on its stack.
 */
#ifndef KDIAG_PERCPU_H
#define KDIAG_PERCPU_H

/* struct percpu offsets (checked by _Static_assert below) */
#define PERCPU_SELF        0
#define PERCPU_KERNEL_RSP  8    /* stack for SYSCALL (same as TSS.RSP0) */
#define PERCPU_USER_RSP    16   /* user RSP saved by the SYSCALL entry */

/* struct trapframe offsets */
#define TF_R15     0
#define TF_RBP     64
#define TF_RAX     112
#define TF_VECTOR  120
#define TF_ERROR   128
#define TF_RIP     136
#define TF_CS      144
#define TF_RFLAGS  152
#define TF_RSP     160
#define TF_SS      168
#define TF_SIZE    176

#define ISR_STUB_SIZE 16        /* bytes per vector stub in isr.S */

#ifdef __ASSEMBLER__
/*
 * DWARF CFI for the code right after isr_common/syscall_entry have built the frame
 * record (RBP -> [saved RBP, interrupted RIP], struct trapframe at RBP + 16), so that
 * gdb and kdiag unwind from a handler into the interrupted code (a signal frame):
 *   CFA = *(RBP + 16 + TF_RSP)   (the interrupted RSP)
 *   RIP at RBP + 16 + TF_RIP, RBP at RBP + 16 + TF_RBP
 * Encoded by hand (.cfi_escape): DW_CFA_def_cfa_expression / DW_CFA_expression with
 * DW_OP_breg6 (rbp) + SLEB128 offset [, DW_OP_deref]; DWARF registers rbp = 6, rip = 16.
 * Offsets: 176 = 0xb0 0x01, 152 = 0x98 0x01, 80 = 0xd0 0x00.
 */
#if TF_RSP != 160 || TF_RIP != 136 || TF_RBP != 64
#error "update TRAPFRAME_CFI's encoded offsets"
#endif
#define TRAPFRAME_CFI                                                   \
	.cfi_escape 0x0f, 0x04, 0x76, 0xb0, 0x01, 0x06;                 \
	.cfi_escape 0x10, 0x10, 0x03, 0x76, 0x98, 0x01;                 \
	.cfi_escape 0x10, 0x06, 0x03, 0x76, 0xd0, 0x00

/* The general registers of struct trapframe, in its order (RAX pushed first, R15 last at
 * the lowest address), saved and restored the same way by every entry stub. */
.macro TRAPFRAME_PUSH_GPRS
	push %rax
	push %rbx
	push %rcx
	push %rdx
	push %rsi
	push %rdi
	push %rbp
	push %r8
	push %r9
	push %r10
	push %r11
	push %r12
	push %r13
	push %r14
	push %r15
.endm

.macro TRAPFRAME_POP_GPRS
	pop %r15
	pop %r14
	pop %r13
	pop %r12
	pop %r11
	pop %r10
	pop %r9
	pop %r8
	pop %rbp
	pop %rdi
	pop %rsi
	pop %rdx
	pop %rcx
	pop %rbx
	pop %rax
.endm
#endif

#ifndef __ASSEMBLER__
#include <stddef.h>
#include <stdint.h>

#include "memlayout.h"
#include "tss.h"

struct percpu {
	struct percpu *self;
	uint64_t kernel_rsp;
	uint64_t user_rsp;
	uint64_t cpu_id;
	struct tss64 tss __attribute__((aligned(16)));
};

/* Saved by the entry stubs: GPRs (pushed rax first), then vector and error code, then
 * the frame the CPU pushed (or SYSCALL's equivalent). */
struct trapframe {
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
	uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
	uint64_t vector;     /* 0-255, or T_SYSCALL_INSN */
	uint64_t error;      /* CPU error code, or 0 */
	uint64_t rip, cs, rflags, rsp, ss;
};

/* A kernel stack and the guard page below it (unmapped in the kernel's tables). */
struct kstack {
	uint8_t guard[KSTACK_GUARD];
	uint8_t stack[KSTACK_SIZE];
};

_Static_assert(offsetof(struct percpu, kernel_rsp) == PERCPU_KERNEL_RSP, "percpu layout");
_Static_assert(offsetof(struct percpu, user_rsp) == PERCPU_USER_RSP, "percpu layout");
_Static_assert(offsetof(struct trapframe, rbp) == TF_RBP, "trapframe layout");
_Static_assert(offsetof(struct trapframe, rax) == TF_RAX, "trapframe layout");
_Static_assert(offsetof(struct trapframe, vector) == TF_VECTOR, "trapframe layout");
_Static_assert(offsetof(struct trapframe, rip) == TF_RIP, "trapframe layout");
_Static_assert(offsetof(struct trapframe, cs) == TF_CS, "trapframe layout");
_Static_assert(offsetof(struct trapframe, ss) == TF_SS, "trapframe layout");
_Static_assert(sizeof(struct trapframe) == TF_SIZE, "trapframe layout");
_Static_assert(sizeof(struct kstack) == KSTACK_STRIDE, "kstack layout");
#endif

#endif
