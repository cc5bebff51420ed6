#!/bin/sh
# Regenerate kdiag's golden QEMU logs from mbfault.asm (QEMU 7.2, TCG). Each run takes < 1 s.
# Usage: tests/golden/src/gen_logs.sh [VARIANT...]     (writes tests/golden/logs/*.log)
# Logs are real QEMU output; only the paths in the ELF names differ between machines.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../logs"
build="$here/build"
mkdir -p "$out" "$build"
cd "$here"   # relative source path: the DWARF line table names "mbfault.asm", not a full path

ALL="PM32_IDT0_PF PM32_UD_IDT0 PM32_GDT_SEL PM32_DIV LM64_IDT0_PF LM64_IDT0_UD LM64_STACK_OVF
LM64_NULL LM64_UD_HANDLED LM64_NX LM64_RSVD LM64_USER_RSP0 LM64_USER_KREAD LM64_TIMER_NP
LM64_CR3_BAD LM64_GDT_SEL LM64_NONCANON LM64_INT80_LIMIT"

qemu() {  # $1 = elf, $2 = log, rest = extra options
    elf=$1; log=$2; shift 2
    rm -f "$log"
    timeout "${KDIAG_QEMU_TIMEOUT:-3}" qemu-system-x86_64 -accel tcg -m 256 -kernel "$elf" \
        -display none -serial none -monitor none -device isa-debug-exit,iobase=0xf4,iosize=4 \
        -D "$log" "$@" || true
}

for v in ${*:-$ALL}; do
    name=$(echo "$v" | tr 'A-Z_' 'a-z-')
    nasm -f elf32 -g -F dwarf -D"$v" -o "build/$name.o" mbfault.asm
    ld -m elf_i386 -T mb.ld -nostdlib -o "build/$name.elf" "build/$name.o"
    rm -f "build/$name.o"
    qemu "$build/$name.elf" "$out/$name.log" -no-reboot -d int,cpu_reset
done

if [ -z "${*:-}" ]; then
    e="$build/lm64-idt0-pf.elf"
    # Only -d cpu_reset, with -no-reboot: no fault state at all in the log.
    qemu "$e" "$out/lm64-idt0-pf.reset-only-noreboot.log" -no-reboot -d cpu_reset
    # Only -d cpu_reset, rebooting: the dump after "Triple fault" is the faulting state.
    KDIAG_QEMU_TIMEOUT=0.4 qemu "$e" "$out/lm64-idt0-pf.reset-only-reboot.log" -d cpu_reset
    # int,cpu_reset without -no-reboot: a reboot loop (several triple faults).
    KDIAG_QEMU_TIMEOUT=0.6 qemu "$e" "$out/lm64-idt0-pf.reboot-loop.log" -d int,cpu_reset
    # -d int only: no "Triple fault" line (that one is logged under cpu_reset).
    qemu "$e" "$out/lm64-idt0-pf.int-only.log" -no-reboot -d int
    # 32-bit, cpu_reset only, rebooting.
    KDIAG_QEMU_TIMEOUT=0.4 qemu "$build/pm32-idt0-pf.elf" "$out/pm32-idt0-pf.reset-only-reboot.log" -d cpu_reset
fi
