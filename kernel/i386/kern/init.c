/* kern/init.c - i386_init: the kernel's C entry, called from entry.S on bootstack.
 *
 * Order: clear .bss, serial, read the scenario from the multiboot command line
 * ("scenario=NAME", QEMU -append), GDT + TSS (kern/gdt.c), IDT (kern/trap.c), drop the boot
 * identity map, open the user pages (PTE_U on .utext and the user stack), report the tables
 * as KDIAG lines, run the scenario. Scenarios (kernel/i386/scenarios.list):
 *
 *   healthy         JOS test_backtrace(5); a five-function chain with arguments; an int3
 *                   inside nested calls (backtrace through the trap frame); a user-mode call
 *                   chain that asks for a backtrace with int $0x30; then idle ("ready")
 *   pagefault       a kernel call chain writes to an unmapped address: #PF from CPL0
 *   user-pagefault  a user call chain writes to address 0: #PF from CPL3
 *
 * Every mon_backtrace() call is a clean gdb stop (break mon_backtrace).
 */
#include <inc/memlayout.h>
#include <inc/mmu.h>
#include <inc/multiboot.h>
#include <inc/stdio.h>
#include <inc/string.h>
#include <inc/trap.h>
#include <inc/x86.h>
#include <kern/gdt.h>
#include <kern/monitor.h>
#include <kern/trap.h>

void serial_init(void);
void umain(int mode);

extern char edata[], end[];
extern pde_t entry_pgdir[];
extern pte_t entry_pgtable[];
extern char __utext_start[], __utext_end[];
extern uint8_t cpu_kstacks[][KSTKSIZE];

uint8_t ustack[2 * PGSIZE] __attribute__((aligned(PGSIZE)));
static char scenario[32] = "healthy";

/* ---- JOS lab 1 ------------------------------------------------------------------------ */
void
test_backtrace(int x)
{
	cprintf("entering test_backtrace %d\n", x);
	if (x > 0)
		test_backtrace(x - 1);
	else
		mon_backtrace(0, 0, 0);
	cprintf("leaving test_backtrace %d\n", x);
}

/* ---- a chain of five distinct functions with arguments --------------------------------- */
__attribute__((noinline)) int
chain_level5(int a, int b, int c, int d, int e)
{
	mon_backtrace(0, 0, 0);
	return a + b + c + d + e;
}

__attribute__((noinline)) int
chain_level4(int a, int b, int c, int d)
{
	return chain_level5(a, b, c, d, 0x55) + 1;
}

__attribute__((noinline)) int
chain_level3(int a, int b, int c)
{
	return chain_level4(a, b, c, 0x44) + 1;
}

__attribute__((noinline)) int
chain_level2(int a, int b)
{
	return chain_level3(a, b, 0x33) + 1;
}

__attribute__((noinline)) int
chain_level1(int a)
{
	return chain_level2(a, 0x22) + 1;
}

/* ---- int3 inside nested calls ---------------------------------------------------------- */
__attribute__((noinline)) int
brk_inner(int depth, int tag)
{
	asm volatile("int3");
	return depth + tag;
}

__attribute__((noinline)) int
brk_outer(int depth)
{
	return brk_inner(depth + 1, 0xb0b) + 1;
}

/* ---- a kernel page fault --------------------------------------------------------------- */
__attribute__((noinline)) void
fault_write(volatile uint32_t *p, uint32_t value)
{
	*p = value;
}

__attribute__((noinline)) int
fault_level2(uint32_t va, int tag)
{
	fault_write((volatile uint32_t *) va, 0xdead0000 | tag);
	return tag + 1;
}

__attribute__((noinline)) int
fault_level1(uint32_t va)
{
	return fault_level2(va, 0x77) + 1;
}

/* ---- user mode ------------------------------------------------------------------------- */
static void
user_pages(void)
{
	uintptr_t va;

	for (va = (uintptr_t) __utext_start; va < (uintptr_t) __utext_end; va += PGSIZE)
		entry_pgtable[PTX(va)] |= PTE_U;
	for (va = (uintptr_t) ustack; va < (uintptr_t) ustack + sizeof(ustack); va += PGSIZE)
		entry_pgtable[PTX(va)] |= PTE_U;
	entry_pgdir[PDX(KERNBASE)] |= PTE_U;
	lcr3(PADDR(entry_pgdir));
}

static void __attribute__((noreturn))
run_user(int mode)
{
	static struct Trapframe tf;
	uint32_t *sp = (uint32_t *) (ustack + sizeof(ustack));

	*--sp = mode;		/* umain's argument */
	*--sp = 0;		/* no return address: the end of the user's call chain */
	memset(&tf, 0, sizeof(tf));
	tf.tf_regs.reg_ebp = 0;
	tf.tf_es = tf.tf_ds = GD_UD | 3;
	tf.tf_ss = GD_UD | 3;
	tf.tf_esp = (uintptr_t) sp;
	tf.tf_cs = GD_UT | 3;
	tf.tf_eip = (uintptr_t) umain;
	tf.tf_eflags = 0x2;
	cprintf("[kernel] entering user mode at %08x (mode %d)\n", tf.tf_eip, mode);
	env_pop_tf(&tf);
}

/* ---- boot ------------------------------------------------------------------------------ */
static void
read_cmdline(uint32_t mbinfo_pa)
{
	struct multiboot_info *mbi = KADDR(mbinfo_pa);
	const char *cmd, *p;
	int n;

	if (!mbinfo_pa || !(mbi->flags & MULTIBOOT_INFO_CMDLINE) || !mbi->cmdline)
		return;
	cmd = KADDR(mbi->cmdline);
	cprintf("[kernel] command line: %s\n", cmd);
	for (p = cmd; *p; p++) {
		if ((p == cmd || p[-1] == ' ') && strncmp(p, "scenario=", 9) == 0) {
			p += 9;
			for (n = 0; p[n] && p[n] != ' ' && n < (int) sizeof(scenario) - 1; n++)
				scenario[n] = p[n];
			scenario[n] = '\0';
			return;
		}
	}
}

static void
report_tables(void)
{
	cprintf("KDIAG arch=i386 gdtr.base=%08x gdtr.limit=%x idtr.base=%08x idtr.limit=%x\n",
		gdt_ptr.base, gdt_ptr.limit, idt_pd.base, idt_pd.limit);
	cprintf("KDIAG tr=%x tss0=%08x tss0.esp0=%08x tss0.ss0=%x tss1=%08x ncpu=%d\n",
		GD_TSS0, (uint32_t) &tss_entries[0], tss_entries[0].esp0, tss_entries[0].ss0,
		(uint32_t) &tss_entries[1], num_tss_entries);
	cprintf("KDIAG cr3=%08x entry_pgdir=%08x utext=%08x ustack=%08x\n", rcr3(),
		(uint32_t) entry_pgdir, (uint32_t) __utext_start, (uint32_t) ustack);
}

void
i386_init(uint32_t mbinfo_pa)
{
	memset(edata, 0, end - edata);
	serial_init();
	outb(0x21, 0xFF);	/* mask every 8259 line: no IRQ ever arrives */
	outb(0xA1, 0xFF);
	cprintf("[kernel] kdiag i386 JOS-style kernel\n");
	read_cmdline(mbinfo_pa);
	cprintf("[kernel] scenario %s\n", scenario);

	gdt_init();
	trap_init();
	entry_pgdir[0] = 0;	/* the boot identity map is no longer needed */
	user_pages();
	report_tables();

	if (strncmp(scenario, "healthy", 8) == 0) {
		test_backtrace(5);
		cprintf("[kernel] chain result %x\n", chain_level1(0x11));
		cprintf("[kernel] breakpoint returned %x\n", brk_outer(1));
		run_user(0);
	} else if (strncmp(scenario, "pagefault", 10) == 0) {
		fault_level1(0xE0000000);
	} else if (strncmp(scenario, "user-pagefault", 15) == 0) {
		run_user(1);
	} else {
		cprintf("[kernel] unknown scenario %s\n", scenario);
	}
	kernel_idle();
}
