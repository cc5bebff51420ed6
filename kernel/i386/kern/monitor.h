/* kern/monitor.h - the JOS kernel monitor's backtrace command. */
#ifndef KDIAG_I386_MONITOR_H
#define KDIAG_I386_MONITOR_H
struct Trapframe;
int mon_backtrace(int argc, char **argv, struct Trapframe *tf);
#endif
