#!/bin/sh
# boot.sh RUNDIR [SCENARIO] [SECONDS] - boot the kernel once under QEMU (TCG) the way the
# launcher does, without gdb/QMP, and leave RUNDIR/{serial,debug,qemu}.log behind.
# QEMU stops itself on a triple fault (-no-reboot -no-shutdown keeps it paused), so the
# run always ends by timeout (default 40 s).  For hand testing; tests use the launcher.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
run=${1:?usage: boot.sh RUNDIR [SCENARIO] [SECONDS]}
scenario=${2:-healthy}
secs=${3:-40}
rm -rf "$run"
mkdir -p "$run"
"$here/tools/mkesp.sh" "$run/esp" "$scenario"
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$run/vars.fd"
timeout "$secs" qemu-system-x86_64 -accel tcg -machine q35 -cpu max -m 256 -net none \
	-no-reboot -no-shutdown -display none -vga std \
	-drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
	-drive if=pflash,format=raw,file="$run/vars.fd" \
	-drive format=raw,file=fat:rw:"$run/esp" \
	-serial file:"$run/serial.log" -debugcon file:"$run/debug.log" \
	-global isa-debugcon.iobase=0xe9 -d int,cpu_reset -D "$run/qemu.log" || true
