/* kern/user.c - the user program: runs at CPL3 on ustack (kern/init.c run_user).
 *
 * The Makefile moves this file's .text into .utext, which the linker script places on its
 * own pages; i386_init marks them (and ustack) PTE_U. Nothing here may call kernel code or
 * touch kernel data: the only way out is int $0x30 (inc/trap.h SYS_*).
 */
#include <inc/trap.h>
#include <inc/types.h>

#define SYSCALL(num)							\
	({								\
		int ret_;						\
		asm volatile("int $0x30" : "=a" (ret_) : "a" (num) : "memory"); \
		ret_;							\
	})

__attribute__((noinline)) int
ulevel3(int mode, int a, int b)
{
	if (mode == 1)
		*(volatile int *) 0 = a + b;	/* #PF from CPL3: nothing is mapped at 0 */
	return SYSCALL(SYS_backtrace) + a + b;
}

__attribute__((noinline)) int
ulevel2(int mode, int a)
{
	return ulevel3(mode, a, 0x2222) + 1;
}

__attribute__((noinline)) int
ulevel1(int mode)
{
	return ulevel2(mode, 0x1111) + 1;
}

void
umain(int mode)
{
	ulevel1(mode);
	SYSCALL(SYS_exit);
	for (;;)
		;
}
