"""The cause-id vocabulary of ``kdiag triage`` (fixed; tests and tools match on these ids).

Each id names one kind of kernel bug. A diagnosis lists causes ranked by ``confidence`` (0..1),
each with a one-line ``summary``, the ``evidence`` (log facts with their line numbers, dump
fields, ELF facts, memory reads) and ``advice``. ``role`` says whether a cause explains the first
fault (``root``) or why it escalated into a double/triple fault (``escalation``).

=============================  =====================================================================
id                             meaning
=============================  =====================================================================
``idt-missing``                no usable IDT: IDTR limit 0, or still the real-mode IVT (base 0,
                               limit 0x3ff/0xffff) in protected/long mode, or the CPU faulted
                               reading the gate (CR2 inside the IDT/IVT)
``idt-gate-invalid``           the IDT exists but the gate for the vector is beyond the limit, not
                               present, of the wrong type, has a bad selector/offset, or its DPL
                               forbids ``INT n`` from the current CPL
``gdt-selector-invalid``       a selector (in the error code, CS/SS/TR or a gate) is beyond the GDT
                               limit, null where it must not be, or names a not-present descriptor
``descriptor-type-invalid``    the selector points at a descriptor of the wrong kind (data for CS,
                               read-only data for SS, a non-TSS for TR, L and D both set...)
``tss-invalid``                no valid TSS (TR selector 0, wrong type, limit too small) when the
                               CPU needs one (privilege change, IST), or an #TS
``kernel-stack-invalid``       entering ring 0 from ring 3 (or through an IST) the CPU switched to
                               TSS.RSP0/ISTn and could not push the frame there (RSP0=0, unmapped)
``stack-invalid``              the current stack is unusable: overflow into an unmapped guard page
                               (CR2 just below RSP), RSP zero/non-canonical/unmapped, #SS
``paging-setup``               the page tables themselves are wrong: a CR3 load left the running
                               code/IDT/stack unmapped, inconsistent CR0/CR4/EFER (LME without PAE)
``code-unmapped``              an instruction fetch from a non-present page (CR2 == RIP, or live:
                               the walk of RIP stops at a non-present entry, which is named); right
                               after a CR3 load ``paging-setup`` follows it, naming the tables
``data-unmapped``              a data read/write to a non-present page
``null-pointer``               an access (or a call) within the first page (CR2 < 0x1000)
``nx-violation``               an instruction fetch from a page marked execute-disable
``user-supervisor-violation``  ring 3 touched a supervisor page (or SMEP/SMAP in ring 0)
``write-protect-violation``    a write to a read-only page
``reserved-bit``               a paging entry has reserved bits set (XD without EFER.NXE, physical
                               address beyond MAXPHYADDR, PS in a PML4E)
``non-canonical-address``      #GP/#SS(0) in 64-bit mode from a non-canonical address
``invalid-opcode``             #UD: ``ud2``/BUG(), SSE/AVX before enabling them, ``syscall`` with
                               EFER.SCE=0, jumping into data
``divide-error``               #DE: division by zero or quotient overflow
``general-protection``         a #GP no more specific rule explains (privileged instruction at CPL3,
                               bad MSR, segment limit, bad ``iretq`` frame)
=============================  =====================================================================
"""

from __future__ import annotations

CAUSE_IDS: tuple[str, ...] = (
    "idt-missing", "idt-gate-invalid", "gdt-selector-invalid", "descriptor-type-invalid",
    "tss-invalid", "kernel-stack-invalid", "stack-invalid", "paging-setup", "code-unmapped",
    "data-unmapped", "null-pointer", "nx-violation", "user-supervisor-violation",
    "write-protect-violation", "reserved-bit", "non-canonical-address", "invalid-opcode",
    "divide-error", "general-protection",
)

TITLES: dict[str, str] = {
    "idt-missing": "no usable IDT",
    "idt-gate-invalid": "bad IDT gate",
    "gdt-selector-invalid": "bad segment selector",
    "descriptor-type-invalid": "wrong descriptor type",
    "tss-invalid": "bad or missing TSS",
    "kernel-stack-invalid": "bad kernel stack (TSS.RSP0/IST)",
    "stack-invalid": "bad stack",
    "paging-setup": "page tables set up wrong",
    "code-unmapped": "code not mapped",
    "data-unmapped": "data not mapped",
    "null-pointer": "null pointer",
    "nx-violation": "execute-disable violation",
    "user-supervisor-violation": "user/supervisor violation",
    "write-protect-violation": "write to read-only page",
    "reserved-bit": "reserved bit in a page-table entry",
    "non-canonical-address": "non-canonical address",
    "invalid-opcode": "invalid opcode",
    "divide-error": "divide error",
    "general-protection": "general protection fault",
}
