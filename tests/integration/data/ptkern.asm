; ptkern.asm - tiny multiboot kernels that build page tables by hand and stop, so kdiag's
; walker and dump can be compared with QEMU's own `info mem` / `info tlb` in every paging
; mode.  One source, one variant per -D flag:
;
;   -DMODE_32      32-bit paging, CR4.PSE=0 (a PDE with PS=1 is a table pointer)
;   -DMODE_32PSE   32-bit paging, CR4.PSE=1 (4 MiB pages; aliases with different types)
;   -DMODE_PAE     PAE paging, EFER.NXE=1 (2 MiB pages, XD on leaves and on a PDE)
;   -DMODE_L4      4-level paging (1 GiB/2 MiB/4 KiB, W^X kernel-like area, user pages,
;                  a WC page via PAT entry 4, a recursive self-map in PML4[510])
;   -DMODE_L5      5-level paging (CR4.LA57), the same PML4 (without the self-map) under
;                  PML5[0] and PML5[511]
;   -DMODE_B32     benchmark: JOS-like 32-bit tables, a PD and 64 PTs mapping 0xf0000000-4 GiB
;                  with 65536 4 KiB pages (plus one 4 MiB identity page for the code)
;   -DMODE_B64     benchmark: 4-level tables of 5 pages (PML4, PDPT, PD, two PTs of mixed
;                  kernel-like 4 KiB pages, one 2 MiB identity page)
;
; Build:  nasm -f elf32 -DMODE_X ptkern.asm -o x.o && ld -m elf_i386 -Ttext=0x100000 -e _start
; Boot:   qemu-system-x86_64 -accel tcg -cpu max -kernel x.elf   (multiboot, 32-bit entry)
;
; The IA-32e variants never far-jump to 64-bit code: with CR0.PG=1 and EFER.LME=1 the CPU is
; in IA-32e compatibility mode, which uses 4/5-level paging exactly like 64-bit mode.  The
; kernel prints "ptkern ready" on COM1, masks the PICs and idles in sti;hlt.
; All tables live at TABLES (physical 0x200000, one 4 KiB page per table, Tn = TABLES+n*4K),
; inside the identity map every variant keeps.

bits 32

MB_MAGIC  equ 0x1BADB002
MB_FLAGS  equ 0
TABLES    equ 0x200000
NTABLES   equ 66
%define T(n) (TABLES + (n) * 0x1000)

P   equ 1 << 0
RW  equ 1 << 1
US  equ 1 << 2
PWT equ 1 << 3
PCD equ 1 << 4
PS  equ 1 << 7
PAT equ 1 << 7          ; in a 4 KiB PTE
G   equ 1 << 8
PATL equ 1 << 12        ; in a large-page entry
NXH equ 1 << 31         ; XD, in the high dword

section .text
align 4
mb_header:
    dd MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

; E64 table, index, low dword, high dword
%macro E64 4
    mov dword [(%1) + (%2) * 8], (%3)
    mov dword [(%1) + (%2) * 8 + 4], (%4)
%endmacro
%macro E32 3
    mov dword [(%1) + (%2) * 4], (%3)
%endmacro
; FILL64 table, first index, count, first low dword, high dword, step
%macro FILL64 6
    mov edi, (%1) + (%2) * 8
    mov ecx, %3
    mov eax, %4
    mov edx, %5
    mov ebx, %6
    call fill64
%endmacro
%macro FILL32 5
    mov edi, (%1) + (%2) * 4
    mov ecx, %3
    mov eax, %4
    mov ebx, %5
    call fill32
%endmacro

global _start
_start:
    cli
    mov esp, stack_top
    mov al, 0xff                ; mask both PICs: nothing will interrupt the idle loop
    out 0x21, al
    out 0xa1, al
    mov edi, TABLES
    mov ecx, NTABLES * 1024
    xor eax, eax
    rep stosd

%ifdef MODE_32
  %define LEGACY32 1
%endif
%ifdef MODE_32PSE
  %define LEGACY32 1
%endif

%ifdef LEGACY32
    ; PD = T0.  PD[0] -> T1: identity map of 0-4 MiB (code, tables, stack)
    E32 T(0), 0, T(1) | P | RW
    FILL32 T(1), 0, 1024, 0 | P | RW, 0x1000
    ; PD[0x300] (0xc0000000) -> T2: a mix of rights and cache types
    E32 T(0), 0x300, T(2) | P | RW | US
    FILL32 T(2), 0, 16, 0x400000 | P | RW, 0x1000
    FILL32 T(2), 16, 16, 0x410000 | P, 0x1000
    FILL32 T(2), 32, 16, 0x420000 | P | RW | US, 0x1000
    FILL32 T(2), 48, 8, 0x430000 | P | RW | PCD | PWT, 0x1000
    FILL32 T(2), 56, 8, 0x438000 | P | RW | PAT, 0x1000
    E32 T(2), 100, 0x123000 | P | US
    E32 T(2), 101, 0x400000 | P
    FILL32 T(2), 200, 64, 0x500000 | P | RW, -0x1000     ; descending frames: scattered
    ; PD[0x302]: a supervisor read-only PDE over user-writable PTEs: effective S, R
    E32 T(0), 0x302, T(4) | P
    FILL32 T(4), 0, 4, 0x700000 | P | RW | US, 0x1000
    ; PD[0x3c0] (0xf0000000) -> T5: 1024 contiguous 4 KiB pages (one range, fast path)
    E32 T(0), 0x3c0, T(5) | P | RW
    FILL32 T(5), 0, 1024, 0x1000000 | P | RW | G, 0x1000
  %ifdef MODE_32
    ; PD[0x301] has PS=1, which CR4.PSE=0 ignores: still a pointer to the PT T3
    E32 T(0), 0x301, T(3) | P | RW | US | PS
    E32 T(3), 0, 0x600000 | P | RW | US
    E32 T(3), 1, 0x601000 | P | RW | US
  %else
    E32 T(0), 0x301, T(3) | P | RW | US
    E32 T(3), 0, 0x600000 | P | RW | US
    E32 T(3), 1, 0x601000 | P | RW | US
    ; 4 MiB pages: one WB, an alias of it WT (a memory-type conflict), one global
    E32 T(0), 0x310, 0x800000 | P | RW | PS
    E32 T(0), 0x311, 0x800000 | P | US | PS | PWT
    E32 T(0), 0x312, 0xc00000 | P | RW | PS | G
    mov eax, cr4
    or eax, 1 << 4              ; CR4.PSE
    mov cr4, eax
  %endif
    mov eax, T(0)
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80010000          ; PG | WP
    mov cr0, eax
%endif

%ifdef MODE_B32
    E32 T(0), 0, 0 | P | RW | PS                      ; identity 0-4 MiB (4 MiB page)
    mov edi, T(0) + 0x3c0 * 4                         ; PD[0x3c0..0x3ff] -> T1..T64
    mov eax, T(1) | P | RW
    mov ecx, 64
.pdes:
    mov [edi], eax
    add eax, 0x1000
    add edi, 4
    loop .pdes
    FILL32 T(1), 0, 65536, 0 | P | RW, 0x1000         ; 64 PTs back to back: 256 MiB
    mov eax, cr4
    or eax, 1 << 4
    mov cr4, eax
    mov eax, T(0)
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80010000
    mov cr0, eax
%endif

%ifdef MODE_B64
    mov ecx, 0xc0000080
    rdmsr
    or eax, (1 << 8) | (1 << 11)
    wrmsr
    E64 T(0), 0, T(1) | P | RW, 0                     ; PML4 -> PDPT
    E64 T(0), 511, T(1) | P | RW, 0                   ; and again for the kernel half
    E64 T(1), 0, T(2) | P | RW, 0                     ; PDPT -> PD
    E64 T(1), 510, T(2) | P | RW, 0
    E64 T(2), 0, 0 | P | RW | PS, 0                   ; identity 0-2 MiB
    E64 T(2), 1, T(3) | P | RW, 0
    E64 T(2), 2, T(4) | P | RW, 0
    FILL64 T(3), 0, 128, 0x400000 | P | G, 0, 0x1000               ; text
    FILL64 T(3), 128, 64, 0x480000 | P | G, NXH, 0x1000            ; rodata
    FILL64 T(3), 192, 320, 0x4c0000 | P | RW | G, NXH, 0x1000      ; data
    FILL64 T(4), 0, 256, 0x800000 | P | RW, NXH, 0x2000            ; every other frame
    FILL64 T(4), 256, 256, 0xa00000 | P | RW | US, NXH, 0x1000     ; user
    mov eax, cr4
    or eax, 1 << 5
    mov cr4, eax
    mov eax, T(0)
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80010000
    mov cr0, eax
%endif

%ifdef MODE_PAE
    mov ecx, 0xc0000080         ; EFER.NXE
    rdmsr
    or eax, 1 << 11
    wrmsr
    ; PDPT = first 32 bytes of T0
    E64 T(0), 0, T(1) | P, 0
    E64 T(1), 0, T(2) | P | RW, 0                     ; 0-2 MiB in 4 KiB pages
    FILL64 T(2), 0, 512, 0 | P | RW, 0, 0x1000
    FILL64 T(1), 1, 3, 0x200000 | P | RW | PS, 0, 0x200000   ; 2-8 MiB in 2 MiB pages
    E64 T(0), 3, T(3) | P | PWT, 0                    ; 0xc0000000: PD T3
    E64 T(3), 0, T(4) | P | RW | US, 0
    FILL64 T(4), 0, 8, 0x400000 | P | RW, NXH, 0x1000
    FILL64 T(4), 8, 8, 0x408000 | P, 0, 0x1000
    E64 T(4), 16, 0x410000 | P | RW | US, 0
    E64 T(4), 17, 0x123000 | P | US, NXH
    E64 T(3), 1, 0x600000 | P | RW | PS, NXH
    E64 T(3), 2, 0x800000 | P | RW | PS | PATL, NXH
    E64 T(3), 3, T(5) | P | RW | US, NXH              ; XD above: all below non-executable
    E64 T(5), 0, 0xa00000 | P | RW | US, 0
    E64 T(5), 1, 0xa01000 | P | RW | US, 0
    mov eax, cr4
    or eax, 1 << 5              ; CR4.PAE
    mov cr4, eax
    mov eax, T(0)
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80010000
    mov cr0, eax
%endif

%ifdef MODE_L4
  %define IA32E 1
  %define PML4 T(1)
%endif
%ifdef MODE_L5
  %define IA32E 1
  %define PML4 T(1)
%endif

%ifdef IA32E
    mov ecx, 0x277              ; IA32_PAT: PA4 = WC (the probe kernel's value)
    mov eax, 0x00070406
    mov edx, 0x00070501
    wrmsr
    mov ecx, 0xc0000080         ; EFER.LME | NXE
    rdmsr
    or eax, (1 << 8) | (1 << 11)
    wrmsr
    ; PML4[0] -> T2 -> T3: identity 0-2 MiB in 4 KiB pages (T4), 2 MiB-1 GiB in 2 MiB pages
    E64 PML4, 0, T(2) | P | RW | US, 0
    E64 T(2), 0, T(3) | P | RW | US, 0
    E64 T(3), 0, T(4) | P | RW, 0
    FILL64 T(4), 0, 512, 0 | P | RW, 0, 0x1000
    FILL64 T(3), 1, 511, 0x200000 | P | RW | PS, 0, 0x200000
    ; PML4[128] (0x400000000000) -> T9 -> T10 -> T11: user code and data
    E64 PML4, 128, T(9) | P | RW | US, 0
    E64 T(9), 0, T(10) | P | RW | US, 0
    E64 T(10), 0, T(11) | P | RW | US, 0
    E64 T(11), 0, 0x900000 | P | US, 0
    E64 T(11), 1, 0x901000 | P | RW | US, NXH
    ; PML4[256] (0xffff800000000000) -> T5: physmap, 4 x 1 GiB, global, XD
    E64 PML4, 256, T(5) | P | RW, 0
    FILL64 T(5), 0, 4, 0 | P | RW | PS | G, NXH, 0x40000000
  %ifdef MODE_L4
    ; PML4[510]: the PML4 itself (recursive self-map).  Not in L5: QEMU's `info tlb` follows
    ; recursion, and under two PML5 slots its output takes longer than a monitor timeout.
    E64 PML4, 510, PML4 | P | RW, 0
  %endif
    ; PML4[511] -> T6, PDPT[510] -> T7 (0xffffffff80000000), PD[0] -> T8: W^X kernel image
    ; (upper entries allow U/S: only the leaves decide, so one stray U leaf is user-visible)
    E64 PML4, 511, T(6) | P | RW | US, 0
    E64 T(6), 510, T(7) | P | RW | US, 0
    E64 T(7), 0, T(8) | P | RW | US, 0
    FILL64 T(8), 0, 16, 0x100000 | P | G, 0, 0x1000            ; text: RX
    FILL64 T(8), 16, 8, 0x110000 | P | G, NXH, 0x1000          ; rodata: R
    FILL64 T(8), 24, 16, 0x118000 | P | RW | G, NXH, 0x1000    ; data: RW
    E64 T(8), 40, 0x300000 | P | RW, 0                           ; W+X
    E64 T(8), 41, 0x301000 | P | US, 0                           ; user page in kernel half
    ; PD[1] (0xffffffff80200000): a 2 MiB WC page (PAT=1 -> PA4) aliasing the identity map
    E64 T(7), 1, 0x4000000 | P | RW | PS | PATL, NXH
  %ifdef MODE_L5
    E64 T(0), 0, PML4 | P | RW | US, 0       ; PML5[0]
    E64 T(0), 511, PML4 | P | RW | US, 0     ; PML5[511]: the same PML4 again (shared)
    mov eax, cr4
    or eax, (1 << 5) | (1 << 12)             ; PAE | LA57
    mov cr4, eax
    mov eax, T(0)
  %else
    mov eax, cr4
    or eax, 1 << 5
    mov cr4, eax
    mov eax, PML4
  %endif
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80010000          ; PG | WP: now in IA-32e compatibility mode
    mov cr0, eax
%endif

    mov esi, msg
.puts:
    lodsb
    test al, al
    jz .idle
    mov dx, 0x3f8
    out dx, al
    mov dx, 0xe9
    out dx, al
    jmp .puts
.idle:
    sti
    hlt
    jmp .idle

; fill64: edi = first entry, ecx = count, edx:eax = first value, ebx = step (added to eax)
fill64:
    mov [edi], eax
    mov [edi + 4], edx
    add eax, ebx
    add edi, 8
    loop fill64
    ret

; fill32: edi = first entry, ecx = count, eax = first value, ebx = step
fill32:
    mov [edi], eax
    add eax, ebx
    add edi, 4
    loop fill32
    ret

msg: db "ptkern ready", 13, 10, 0

section .bss
align 16
stack: resb 4096
stack_top:
