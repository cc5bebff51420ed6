/*
 * kconst.h - helpers that let one header serve C, assembly and the linker script.
 *
 * Headers under include/ are read by three consumers: the gnu-efi loader (C), the kernel
 * (C and GNU as) and the kernel's linker script (run through cpp).  Numeric constants that
 * need a C suffix are written with _UL()/_ULL() so the same line works for all of them.
 */
#ifndef KDIAG_KCONST_H
#define KDIAG_KCONST_H

#if defined(__ASSEMBLER__) || defined(KDIAG_LINKER_SCRIPT)
#define _UL(x) x
#define _ULL(x) x
#else
#define _UL(x) x##UL
#define _ULL(x) x##ULL
#endif

#define BIT(n) (_ULL(1) << (n))

#endif
