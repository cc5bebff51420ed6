/*
 * gdt.h - segment descriptors and the kernel's GDT layout (Intel SDM Vol. 3A 3.4.5, 5.8.8).
 *
 * Boot chain: the loader leaves OVMF's GDT loaded (kernel CS 0x38); the kernel's first
 * stage (gdt.c) installs this layout and reloads every segment register, CS by lretq.
 *
 * Layout, chosen for SYSCALL/SYSRET: user data must sit right before user code, because
 * SYSRET loads SS = STAR[63:48] + 8 and CS = STAR[63:48] + 16 (both with RPL 3):
 *
 *   0x00 null | 0x08 kernel code | 0x10 kernel data | 0x18 user data | 0x20 user code
 *   0x28 TSS (16-byte system descriptor, two slots)
 */
#ifndef KDIAG_GDT_H
#define KDIAG_GDT_H

#include "kconst.h"

/* Selectors: index << 3 | TI (0 = GDT) | RPL */
#define SEL_RPL_MASK   0x3
#define SEL_TI         0x4
#define SEG_NULL       0x00
#define SEG_KCODE      0x08
#define SEG_KDATA      0x10
#define SEG_UDATA      0x18
#define SEG_UCODE      0x20
#define SEG_TSS        0x28
#define GDT_ENTRIES    7              /* 5 descriptors + the TSS's two slots */
#define USER_CS        (SEG_UCODE | 3)
#define USER_DS        (SEG_UDATA | 3)

/* STAR (MSR 0xC0000081): SYSCALL loads CS = STAR[47:32], SS = STAR[47:32] + 8;
 * SYSRET (64-bit) loads CS = STAR[63:48] + 16, SS = STAR[63:48] + 8, both | 3. */
#define STAR_SYSCALL_BASE  SEG_KCODE
#define STAR_SYSRET_BASE   SEG_KDATA  /* -> CS 0x23, SS 0x1b */
#define STAR_VALUE(syscall_base, sysret_base) \
	(((uint64_t)(sysret_base) << 48) | ((uint64_t)(syscall_base) << 32))

/* Access byte, descriptor bits 47:40 */
#define SEG_ACC_A      0x01           /* accessed */
#define SEG_ACC_RW     0x02           /* code: readable; data: writable */
#define SEG_ACC_DC     0x04           /* code: conforming; data: expand-down */
#define SEG_ACC_EXEC   0x08           /* 1 = code segment */
#define SEG_ACC_S      0x10           /* 1 = code/data, 0 = system descriptor */
#define SEG_ACC_DPL(d) ((d) << 5)     /* descriptor privilege level */
#define SEG_ACC_P      0x80           /* present */

/* System descriptor types (S = 0), in the access byte's low nibble */
#define SEG_SYS_LDT        0x2
#define SEG_SYS_TSS64      0x9        /* 64-bit TSS, available */
#define SEG_SYS_TSS64_BUSY 0xb        /* 64-bit TSS, busy (set by LTR) */

/* Flags nibble, descriptor bits 55:52 */
#define SEG_FLAG_AVL   0x1
#define SEG_FLAG_L     0x2            /* 64-bit code segment */
#define SEG_FLAG_DB    0x4            /* default operand size 32 (must be 0 with L) */
#define SEG_FLAG_G     0x8            /* limit in 4 KiB units */

#define SEG_DESC(base, limit, access, flags)                                 \
	(((uint64_t)(limit) & 0xffff) |                                      \
	 (((uint64_t)(base) & 0xffffff) << 16) |                             \
	 ((uint64_t)(access) << 40) |                                        \
	 ((((uint64_t)(limit) >> 16) & 0xf) << 48) |                         \
	 ((uint64_t)(flags) << 52) |                                         \
	 ((((uint64_t)(base) >> 24) & 0xff) << 56))

#define SEG_KCODE_DESC SEG_DESC(0, 0xfffff, SEG_ACC_P | SEG_ACC_S | SEG_ACC_EXEC | SEG_ACC_RW, \
				SEG_FLAG_G | SEG_FLAG_L)                    /* 0x00af9a000000ffff */
#define SEG_KDATA_DESC SEG_DESC(0, 0xfffff, SEG_ACC_P | SEG_ACC_S | SEG_ACC_RW,                \
				SEG_FLAG_G | SEG_FLAG_DB)                   /* 0x00cf92000000ffff */
#define SEG_UDATA_DESC SEG_DESC(0, 0xfffff, SEG_ACC_P | SEG_ACC_S | SEG_ACC_RW | SEG_ACC_DPL(3), \
				SEG_FLAG_G | SEG_FLAG_DB)                   /* 0x00cff2000000ffff */
#define SEG_UCODE_DESC SEG_DESC(0, 0xfffff, SEG_ACC_P | SEG_ACC_S | SEG_ACC_EXEC | SEG_ACC_RW | \
				SEG_ACC_DPL(3), SEG_FLAG_G | SEG_FLAG_L)    /* 0x00affa000000ffff */

#endif
