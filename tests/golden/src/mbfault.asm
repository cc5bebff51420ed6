; mbfault.asm - a tiny multiboot kernel that faults on purpose, one way per build variant.
;
; Where it sits: QEMU's -kernel multiboot loader enters _start in 32-bit protected mode with
; paging off. The kernel loads its own GDT, then either stays in 32-bit protected mode (PM32_*)
; or builds identity page tables (4 KiB pages for the first 2 MiB with page 0 and a stack guard
; page unmapped, 2 MiB pages up to 1 GiB) and enters long mode (LM64_*). Each variant then
; faults in one documented way so kdiag's tests have real `-d int,cpu_reset` logs.
; Handled variants exit QEMU through isa-debug-exit (port 0xf4) from their exception handler.
;
; Build: nasm -f elf32 -g -F dwarf -DVARIANT mbfault.asm && ld -m elf_i386 -T mb.ld
; (see gen_logs.sh). Only 32-bit relocations are used, so 64-bit code lives in an ELF32 file.


%ifdef LM64_IDT0_PF
%define LONG
%elifdef LM64_IDT0_UD
%define LONG
%elifdef LM64_STACK_OVF
%define LONG
%elifdef LM64_NULL
%define LONG
%elifdef LM64_UD_HANDLED
%define LONG
%elifdef LM64_NX
%define LONG
%define NXE
%elifdef LM64_RSVD
%define LONG
%elifdef LM64_USER_RSP0
%define LONG
%elifdef LM64_USER_KREAD
%define LONG
%elifdef LM64_INT80_LIMIT
%define LONG
%define LM64_USER_RSP0
%define NO_IDT_EXTEND
%elifdef LM64_TIMER_NP
%define LONG
%elifdef LM64_CR3_BAD
%define LONG
%elifdef LM64_GDT_SEL
%define LONG
%elifdef LM64_NONCANON
%define LONG
%endif

section .multiboot
align 4
    dd 0x1BADB002
    dd 0
    dd -(0x1BADB002)

section .bss
align 4096
pml4:       resb 4096
pdpt:       resb 4096
pd:         resb 4096
pt:         resb 4096
empty_pml4: resb 4096
pd32:       resb 4096
idt:        resb 4096               ; 256 x 16-byte gates (64-bit) or 8-byte gates (32-bit)
guard:      resb 4096               ; unmapped in long mode: catches a kernel stack overflow
stack:      resb 8192
stack_top:
ustack:     resb 4096               ; user stack page (U=1)
ustack_top:
tss:        resb 104
tick:       resd 1

section .data
align 8
gdt:
    dq 0
    dq 0x00cf9a000000ffff           ; 0x08 ring-0 code, 32-bit
    dq 0x00cf92000000ffff           ; 0x10 ring-0 data
    dq 0x00209a0000000000           ; 0x18 ring-0 code, 64-bit
    dq 0x0020fa0000000000           ; 0x20 ring-3 code, 64-bit
    dq 0x0000f20000000000           ; 0x28 ring-3 data
gdt_tss:
    dq 0, 0                         ; 0x30 TSS64 descriptor, filled at run time
gdt_end:
gdt_ptr:
    dw gdt_end - gdt - 1
    dd gdt
    dd 0
idt_ptr:                            ; limit 0 unless a variant builds gates
    dw 0
    dd idt
    dd 0

section .text
bits 32
global _start
_start:
    cli
    lgdt [gdt_ptr]
    jmp 0x08:pm32
pm32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    mov esp, stack_top
%ifdef LONG
    jmp setup_long
%endif

main32:
%ifdef PM32_IDT0_PF
    mov dword [pd32], 0x83          ; one 4 MiB PSE page: 0..4 MiB identity
    mov eax, cr4
    or eax, 0x10                    ; CR4.PSE
    mov cr4, eax
    mov eax, pd32
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000              ; CR0.PG
    mov cr0, eax
    lidt [idt_ptr]                  ; IDT limit 0
    mov eax, 0xdeadbeef
    mov ebx, 0x800000
    mov ecx, [ebx]                  ; unmapped: #PF, no IDT -> #DF -> triple fault
%endif
%ifdef PM32_UD_IDT0
    lidt [idt_ptr]
    ud2                             ; #UD -> #GP(6*8+2) -> #DF -> triple fault
%endif
%ifdef PM32_GDT_SEL
    lidt [idt_ptr]
    jmp 0x48:pm32                   ; selector 0x48 beyond the GDT limit 0x3f: #GP(0x48)
%endif
%ifdef PM32_DIV
    call build_idt32
    xor edx, edx
    mov eax, 1
    xor ecx, ecx
    div ecx                         ; #DE, handled: the handler exits QEMU
%endif
.halt:
    hlt
    jmp .halt

build_idt32:                        ; vectors 0-31 -> exit_handler32, 32-bit interrupt gates
    xor ecx, ecx
.loop:
    mov eax, exit_handler32
    and eax, 0xffff
    or eax, 0x00080000
    mov [idt + ecx*8], eax
    mov eax, exit_handler32
    and eax, 0xffff0000
    or eax, 0x8e00
    mov [idt + ecx*8 + 4], eax
    inc ecx
    cmp ecx, 32
    jb .loop
    mov word [idt_ptr], 32*8 - 1
    lidt [idt_ptr]
    ret

exit_handler32:
    mov al, 'E'
    out 0xe9, al
    mov al, 1
    out 0xf4, al                    ; isa-debug-exit
.h: hlt
    jmp .h

setup_long:
    mov dword [pml4], pdpt + 7
    mov dword [pdpt], pd + 7
    mov dword [pd], pt + 7
    mov ecx, 1
.pdl:                               ; PD[1..511]: 2 MiB pages
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov [pd + ecx*8], eax
    inc ecx
    cmp ecx, 512
    jb .pdl
    mov ecx, 1                      ; PT[0] stays 0: the null page is unmapped
.ptl:
    mov eax, ecx
    shl eax, 12
    or eax, 0x3
    mov [pt + ecx*8], eax
    inc ecx
    cmp ecx, 512
    jb .ptl
    mov eax, guard
    shr eax, 12
    mov dword [pt + eax*8], 0       ; stack guard page
    mov eax, user_code
    shr eax, 12
    or dword [pt + eax*8], 4        ; user code page: U=1
    mov eax, ustack
    shr eax, 12
    or dword [pt + eax*8], 4        ; user stack page: U=1
    mov eax, nx_code
    shr eax, 12
    or dword [pt + eax*8 + 4], 0x80000000   ; XD (bit 63); reserved when EFER.NXE=0
    mov eax, cr4
    or eax, 0x20                    ; CR4.PAE
    mov cr4, eax
    mov eax, pml4
    mov cr3, eax
    mov ecx, 0xc0000080
    rdmsr
%ifdef NXE
    or eax, 0x900                   ; EFER.LME | EFER.NXE
%else
    or eax, 0x100                   ; EFER.LME
%endif
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax
    jmp 0x18:long_entry

bits 64
long_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov esp, stack_top
    call build_tss

%ifdef LM64_IDT0_PF
    lidt [idt_ptr]
    mov rax, 0x1122334455667788
    mov ebx, 0x40000000
    mov rcx, [rbx]                  ; unmapped: #PF -> (#GP folded) #DF -> triple fault
%endif
%ifdef LM64_IDT0_UD
    lidt [idt_ptr]
    mov eax, 10
    ud2                             ; #UD -> #GP(QEMU: 6*16+2) -> #DF -> triple fault
%endif
%ifdef LM64_STACK_OVF
    call build_idt64
recurse:
    push rax
    call recurse                    ; runs into the guard page: #PF -> #DF -> triple fault
%endif
%ifdef LM64_NULL
    lidt [idt_ptr]
    xor ebx, ebx
    mov rax, [rbx + 8]              ; null page: #PF CR2=8, no IDT -> triple fault
%endif
%ifdef LM64_UD_HANDLED
    call build_idt64
    ud2                             ; #UD, handled: the handler exits QEMU
%endif
%ifdef LM64_NX
    lidt [idt_ptr]
    call nx_code                    ; XD page: #PF (I/D) -> triple fault
%endif
%ifdef LM64_RSVD
    lidt [idt_ptr]
    call nx_code                    ; XD set without EFER.NXE: #PF RSVD -> triple fault
%endif
%ifdef LM64_USER_RSP0
    call build_idt64
    mov edi, 0x80
    mov esi, exit_handler64
    mov edx, 0xee                   ; DPL3 interrupt gate
    call set_gate
    mov qword [tss + 4], 0          ; TSS.RSP0 = 0
%ifndef NO_IDT_EXTEND
    mov word [idt_ptr], 256*16 - 1  ; gate 0x80 inside the limit (LM64_INT80_LIMIT leaves it out)
    lidt [idt_ptr]
%endif
    jmp to_user
%endif
%ifdef LM64_USER_KREAD
    call build_idt64
    jmp to_user
%endif
%ifdef LM64_TIMER_NP
    call build_idt64
    mov edi, 0x20
    mov esi, timer_handler
    mov edx, 0x8e
    call set_gate
    mov word [idt_ptr], 256*16 - 1
    lidt [idt_ptr]
    call start_timer
    sti
.idle:
    hlt
    jmp .idle
%endif
%ifdef LM64_CR3_BAD
    call build_idt64
    mov eax, empty_pml4
    mov cr3, rax                    ; nothing mapped any more: the next fetch faults
    nop
%endif
%ifdef LM64_GDT_SEL
    lidt [idt_ptr]
    mov eax, long_entry
    push 0x48
    push rax
    retfq                           ; selector 0x48 beyond the GDT limit: #GP(0x48)
%endif
%ifdef LM64_NONCANON
    lidt [idt_ptr]
    mov rax, 0x8000000000000000
    mov rbx, [rax]                  ; non-canonical: #GP(0)
%endif
.halt:
    hlt
    jmp .halt

to_user:                            ; iretq to ring 3 at user_code
    push 0x2b
    push ustack_top
    push 0x002
    push 0x23
    mov eax, user_code
    push rax
    iretq

build_tss:
    mov eax, tss
    mov rbx, rax
    and ebx, 0xffff
    shl rbx, 16
    or rbx, 103                     ; limit
    mov rcx, rax
    shr rcx, 16
    and ecx, 0xff
    shl rcx, 32
    or rbx, rcx                     ; base 23:16
    mov rcx, 0x89
    shl rcx, 40
    or rbx, rcx                     ; present, type 9 (available 64-bit TSS)
    mov rcx, rax
    shr rcx, 24
    and ecx, 0xff
    shl rcx, 56
    or rbx, rcx                     ; base 31:24
    mov [gdt_tss], rbx
    mov qword [gdt_tss + 8], 0
    mov dword [tss + 4], stack_top  ; RSP0
    mov dword [tss + 8], 0
    mov ax, 0x30
    ltr ax
    ret

; edi = vector, esi = handler, edx = type/attribute byte
set_gate:
    mov eax, esi
    and eax, 0xffff
    mov rcx, 0x18
    shl rcx, 16
    or rax, rcx
    mov rcx, rdx
    shl rcx, 40
    or rax, rcx
    mov ecx, esi
    shr ecx, 16
    shl rcx, 48
    or rax, rcx
    shl edi, 4
    mov [idt + rdi], rax
    mov qword [idt + rdi + 8], 0
    ret

build_idt64:                        ; vectors 0-31 -> exit_handler64
    xor ebx, ebx
.loop:
    mov edi, ebx
    mov esi, exit_handler64
    mov edx, 0x8e
    call set_gate
    inc ebx
    cmp ebx, 32
    jb .loop
    mov word [idt_ptr], 32*16 - 1
    lidt [idt_ptr]
    ret

exit_handler64:
    mov al, 'E'
    out 0xe9, al
    mov al, 1
    out 0xf4, al                    ; isa-debug-exit
.h: hlt
    jmp .h

start_timer:                        ; PIC remapped to 0x20/0x28, only IRQ0; PIT ~1 kHz
    mov al, 0x11
    out 0x20, al
    out 0xa0, al
    mov al, 0x20
    out 0x21, al
    mov al, 0x28
    out 0xa1, al
    mov al, 4
    out 0x21, al
    mov al, 2
    out 0xa1, al
    mov al, 1
    out 0x21, al
    out 0xa1, al
    mov al, 0xfe
    out 0x21, al
    mov al, 0xff
    out 0xa1, al
    mov al, 0x34
    out 0x43, al
    mov ax, 1193
    out 0x40, al
    mov al, ah
    out 0x40, al
    ret

timer_handler:                      ; the 20th tick clears the present bit of its own gate
    push rax
    inc dword [tick]
    cmp dword [tick], 20
    jne .eoi
    and byte [idt + 0x20*16 + 5], 0x7f
.eoi:
    mov al, 0x20
    out 0x20, al
    pop rax
    iretq

section .utext progbits alloc exec nowrite align=4096
user_code:
%ifdef LM64_USER_KREAD
    mov eax, stack_top
    mov rax, [rax - 8]              ; kernel page (U=0) from ring 3: #PF U/S
%endif
    int 0x80
.spin:
    jmp .spin

section .nxtext progbits alloc exec nowrite align=4096
nx_code:
    ret
