"""Golden cases for ``kdiag triage``: expected-output file name -> CLI argv (from the root)."""

from __future__ import annotations

LOGS = "tests/golden/logs"
ELFS = "tests/golden/src/build"

_PLAIN = ["lm64-idt0-pf", "lm64-idt0-pf.int-only", "lm64-idt0-pf.reboot-loop",
          "lm64-idt0-pf.reset-only-noreboot", "lm64-idt0-pf.reset-only-reboot", "lm64-idt0-ud",
          "lm64-gdt-sel", "lm64-null", "lm64-nx", "lm64-rsvd", "lm64-timer-np",
          "lm64-user-kread", "lm64-user-rsp0", "pm32-div", "pm32-idt0-pf.reset-only-reboot",
          "i386-pagefault", "i386-user-pagefault", "i386-pagefault.smp2"]
_ELF = ["lm64-cr3-bad", "lm64-noncanon", "lm64-stack-ovf", "lm64-int80-limit",
        "lm64-ud-handled", "pm32-idt0-pf", "pm32-ud-idt0", "pm32-gdt-sel"]

CASES: dict[str, list[str]] = {}
for _n in _PLAIN:
    CASES[f"{_n}.txt"] = ["triage", f"{LOGS}/{_n}.log"]
    CASES[f"{_n}.json"] = ["triage", f"{LOGS}/{_n}.log", "--json"]
for _n in _ELF:
    CASES[f"{_n}.elf.txt"] = ["triage", f"{LOGS}/{_n}.log", "--elf", f"{ELFS}/{_n}.elf"]
    CASES[f"{_n}.elf.json"] = ["triage", f"{LOGS}/{_n}.log", "--elf", f"{ELFS}/{_n}.elf",
                               "--json"]
