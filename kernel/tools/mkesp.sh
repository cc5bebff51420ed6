#!/bin/sh
# mkesp.sh ESPDIR [SCENARIO] - lay out an EFI system partition directory for QEMU's
# vvfat (-drive format=raw,file=fat:rw:ESPDIR):
#   ESPDIR/EFI/BOOT/BOOTX64.EFI   the loader
#   ESPDIR/kernel.elf             the x86-64 kernel (with DWARF)
#   ESPDIR/kdiag.cfg              "scenario=SCENARIO" (default: healthy)
# Builds nothing: run `make -C kernel` first.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
esp=${1:?usage: mkesp.sh ESPDIR [SCENARIO]}
scenario=${2:-healthy}
for f in "$here/build/BOOTX64.EFI" "$here/build/kernel-x86_64.elf"; do
	[ -f "$f" ] || { echo "mkesp.sh: $f missing: run make -C kernel" >&2; exit 1; }
done
mkdir -p "$esp/EFI/BOOT"
cp "$here/build/BOOTX64.EFI" "$esp/EFI/BOOT/BOOTX64.EFI"
cp "$here/build/kernel-x86_64.elf" "$esp/kernel.elf"
printf 'scenario=%s\n' "$scenario" > "$esp/kdiag.cfg"
