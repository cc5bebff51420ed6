/*
 * idt.c - the kernel's IDT, trap dispatch, and the fatal-exception report.
 *
 * Boot chain: after the GDT and TSS.  The loader left IDTR with limit 0; idt_init fills
 * 256 gates: the 32 exceptions (interrupt gates, DPL 0; #DF, NMI and #MC on IST1-3),
 * the LAPIC timer, the spurious vectors, and int 0x80 with DPL 3 for the user task.
 * Every exception is fatal: the handler prints a report (vector, error code, RIP, CS,
 * RFLAGS, RSP, SS, CR2, registers, a frame-pointer backtrace, and a machine-readable
 * "KDIAG EXCEPTION" line) and halts with interrupts off.
 */
#include "cpu.h"
#include "gdt.h"
#include "idt.h"
#include "kernel.h"
#include "tss.h"

extern const char isr_stubs[];

static struct idt_gate idt[256] __attribute__((aligned(4096)));

static const char *const exc_names[T_EXCEPTIONS][2] = {
	[T_DE] = { "DE", "divide error" },
	[T_DB] = { "DB", "debug" },
	[T_NMI] = { "NMI", "non-maskable interrupt" },
	[T_BP] = { "BP", "breakpoint" },
	[T_OF] = { "OF", "overflow" },
	[T_BR] = { "BR", "bound range exceeded" },
	[T_UD] = { "UD", "invalid opcode" },
	[T_NM] = { "NM", "device not available" },
	[T_DF] = { "DF", "double fault" },
	[9] = { "CSO", "coprocessor segment overrun" },
	[T_TS] = { "TS", "invalid TSS" },
	[T_NP] = { "NP", "segment not present" },
	[T_SS] = { "SS", "stack-segment fault" },
	[T_GP] = { "GP", "general protection" },
	[T_PF] = { "PF", "page fault" },
	[15] = { "RES15", "reserved" },
	[T_MF] = { "MF", "x87 floating-point error" },
	[T_AC] = { "AC", "alignment check" },
	[T_MC] = { "MC", "machine check" },
	[T_XM] = { "XM", "SIMD floating-point" },
	[T_VE] = { "VE", "virtualization exception" },
	[T_CP] = { "CP", "control protection" },
};

static void set_gate(int vector, int ist, int dpl)
{
	uint64_t handler = (uint64_t)isr_stubs + (uint64_t)vector * ISR_STUB_SIZE;
	struct idt_gate *g = &idt[vector];

	g->offset_lo = handler & 0xffff;
	g->selector = SEG_KCODE;
	g->ist = (uint8_t)ist;
	g->type_attr = GATE_P | GATE_DPL(dpl) | GATE_TYPE_INT64;
	g->offset_mid = (handler >> 16) & 0xffff;
	g->offset_hi = (uint32_t)(handler >> 32);
	g->reserved = 0;
}

void idt_set_ist(int vector, int ist)
{
	idt[vector].ist = (uint8_t)ist;
}

void idt_init(void)
{
	for (int v = 0; v < T_EXCEPTIONS; v++)
		set_gate(v, v == T_DF ? IST_DF : v == T_NMI ? IST_NMI : v == T_MC ? IST_MC : IST_NONE, 0);
	set_gate(T_TIMER, IST_NONE, 0);
	set_gate(T_PIC_SPURIOUS1, IST_NONE, 0);
	set_gate(T_PIC_SPURIOUS2, IST_NONE, 0);
	set_gate(T_LAPIC_SPURIOUS, IST_NONE, 0);
	set_gate(T_SYSCALL_INT, IST_NONE, 3);

	struct desc_ptr idtr = { sizeof(idt) - 1, (uint64_t)idt };
	if (knobs.idt_limit_zero) {
		/* idt-missing: the table is built but IDTR says it is empty */
		scenario_triggering();
		idtr.limit = 0;
	}
	lidt(&idtr);
	klog("idt loaded (idt 0x%lx limit 0x%x)", (unsigned long)idtr.base, idtr.limit);
}

/* ----------------------------------------------------------------------- fatal report */

static bool on_kernel_stack(uint64_t addr, uint64_t len)
{
	for (int i = 0; i < KSTACK_COUNT; i++) {
		uint64_t lo = (uint64_t)kstacks[i].stack, hi = lo + KSTACK_SIZE;
		if (addr >= lo && addr + len <= hi)
			return true;
	}
	return false;
}

static void report_backtrace(const struct trapframe *tf)
{
	char line[240];
	size_t n = (size_t)ksnprintf(line, sizeof(line), "BACKTRACE 0x%lx", (unsigned long)tf->rip);
	uint64_t rbp = tf->rbp;

	/* Only kernel frames on our own stacks: never fault while reporting a fault. */
	for (int depth = 0; depth < 12 && (tf->cs & 3) == 0; depth++) {
		if ((rbp & 7) || !on_kernel_stack(rbp, 16))
			break;
		uint64_t ret = ((uint64_t *)rbp)[1];
		if (ret < KERNEL_VBASE)
			break;
		n += (size_t)ksnprintf(line + n, sizeof(line) - n, " 0x%lx", (unsigned long)ret);
		rbp = ((uint64_t *)rbp)[0];
	}
	kdiag_line("%s", line);
}

static NORETURN void fatal_exception(struct trapframe *tf)
{
	uint64_t v = tf->vector;
	const char *mn = v < T_EXCEPTIONS && exc_names[v][0] ? exc_names[v][0] : "INT";
	const char *what = v < T_EXCEPTIONS && exc_names[v][1] ? exc_names[v][1] : "unexpected interrupt";
	uint64_t cr2 = read_cr2();

	klog("EXCEPTION #%s (vector 0x%lx, %s) at cpl %lu", mn, (unsigned long)v, what,
	     (unsigned long)(tf->cs & 3));
	if (v == T_PF)
		klog("  err=0x%lx [%s %s %s%s%s] cr2=0x%lx", (unsigned long)tf->error,
		     tf->error & PF_ERR_P ? "protection" : "not-present",
		     tf->error & PF_ERR_W ? "write" : "read",
		     tf->error & PF_ERR_U ? "user" : "supervisor",
		     tf->error & PF_ERR_I ? " fetch" : "", tf->error & PF_ERR_RSVD ? " rsvd" : "",
		     (unsigned long)cr2);
	else if (T_HAS_ERROR_CODE(v) && v != T_DF)
		klog("  err=0x%lx [selector index 0x%lx%s%s]", (unsigned long)tf->error,
		     (unsigned long)(tf->error & ~7ULL), tf->error & SELERR_IDT ? " idt" : "",
		     tf->error & SELERR_EXT ? " ext" : "");
	else
		klog("  err=0x%lx", (unsigned long)tf->error);
	klog("  rip=0x%lx cs=0x%lx rflags=0x%lx rsp=0x%lx ss=0x%lx", (unsigned long)tf->rip,
	     (unsigned long)tf->cs, (unsigned long)tf->rflags, (unsigned long)tf->rsp,
	     (unsigned long)tf->ss);
	klog("  cr2=0x%lx cr3=0x%lx", (unsigned long)cr2, (unsigned long)read_cr3());
	klog("  rax=0x%lx rbx=0x%lx rcx=0x%lx rdx=0x%lx", (unsigned long)tf->rax,
	     (unsigned long)tf->rbx, (unsigned long)tf->rcx, (unsigned long)tf->rdx);
	klog("  rsi=0x%lx rdi=0x%lx rbp=0x%lx", (unsigned long)tf->rsi, (unsigned long)tf->rdi,
	     (unsigned long)tf->rbp);
	kdiag_line("EXCEPTION vector=0x%lx name=%s err=0x%lx rip=0x%lx cs=0x%lx rflags=0x%lx "
		   "rsp=0x%lx ss=0x%lx cr2=0x%lx", (unsigned long)v, mn, (unsigned long)tf->error,
		   (unsigned long)tf->rip, (unsigned long)tf->cs, (unsigned long)tf->rflags,
		   (unsigned long)tf->rsp, (unsigned long)tf->ss, (unsigned long)cr2);
	report_backtrace(tf);
	klog("halted: fatal exception #%s", mn);
	halt_forever();
}

void trap_dispatch(struct trapframe *tf)
{
	switch (tf->vector) {
	case T_TIMER:
		ticks++;
		lapic_eoi();
		return;
	case T_SYSCALL_INT:
		syscall_dispatch(tf);
		return;
	case T_PIC_SPURIOUS1:
	case T_LAPIC_SPURIOUS:
		return;                       /* spurious: no EOI */
	case T_PIC_SPURIOUS2:
		outb(0x20, 0x20);             /* a spurious IRQ 15 still needs the master's EOI */
		return;
	default:
		fatal_exception(tf);
	}
}
