/* kern/trap.h - IDT set-up and the C side of trap handling. */
#ifndef KDIAG_I386_KERN_TRAP_H
#define KDIAG_I386_KERN_TRAP_H
#include <inc/trap.h>
#include <inc/mmu.h>

void trap_init(void);
void trap(struct Trapframe *tf);
void env_pop_tf(struct Trapframe *tf) __attribute__((noreturn));
void kernel_idle(void) __attribute__((noreturn));
extern struct pseudodesc idt_pd;
#endif
