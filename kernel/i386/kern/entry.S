/* kern/entry.S - first kernel code: multiboot header, paging on, jump to the higher half.
 *
 * Boot chain: QEMU's -kernel multiboot loader (or GRUB) reads this ELF, copies each PT_LOAD
 * to its p_paddr (0x100000 up) and jumps to e_entry = _start, a physical address, in 32-bit
 * protected mode with paging off, %eax = 0x2BADB002 and %ebx = the multiboot information.
 * Here: build entry_pgtable (4 KiB pages over physical 0-4 MiB), map it both at 0 (so this
 * code keeps running) and at KERNBASE, map the rest of the physmap with 4 MiB pages, turn on
 * PSE + paging, jump to `relocated` at 0xF01xxxxx, clear %ebp (the end of every frame-pointer
 * chain) and call i386_init(mbinfo) on bootstack. i386_init never returns.
 */
#include <inc/mmu.h>
#include <inc/memlayout.h>
#include <inc/multiboot.h>

#define RELOC(x) ((x) - KERNBASE)
#define MB_FLAGS (MULTIBOOT_PAGE_ALIGN | MULTIBOOT_MEMORY_INFO)

.section .multiboot, "a"
.p2align 2
multiboot_header:
	.long MULTIBOOT_HEADER_MAGIC
	.long MB_FLAGS
	.long -(MULTIBOOT_HEADER_MAGIC + MB_FLAGS)

.text
.globl _start
_start = RELOC(entry)

.globl entry
entry:
	movw	$0x1234,0x472			# warm boot (JOS habit)

	# entry_pgtable[i] = i * PGSIZE | PTE_P | PTE_W, for i in 0..1023
	movl	$RELOC(entry_pgtable), %edi
	movl	$(PTE_P | PTE_W), %eax
	movl	$NPTENTRIES, %ecx
1:	movl	%eax, (%edi)
	addl	$PGSIZE, %eax
	addl	$4, %edi
	loop	1b

	# entry_pgdir[0] = entry_pgdir[PDX(KERNBASE)] = entry_pgtable
	movl	$RELOC(entry_pgtable), %eax
	orl	$(PTE_P | PTE_W), %eax
	movl	%eax, RELOC(entry_pgdir)
	movl	%eax, RELOC(entry_pgdir) + (KERNBASE >> PDXSHIFT) * 4

	# the rest of the physmap: 4 MiB pages, KERNBASE + 4 MiB .. KERNBASE + PHYSMAP_SIZE
	movl	$RELOC(entry_pgdir) + (KERNBASE >> PDXSHIFT) * 4 + 4, %edi
	movl	$(PTSIZE | PTE_P | PTE_W | PTE_PS), %eax
	movl	$(PHYSMAP_SIZE / PTSIZE - 1), %ecx
2:	movl	%eax, (%edi)
	addl	$PTSIZE, %eax
	addl	$4, %edi
	loop	2b

	movl	%cr4, %eax
	orl	$CR4_PSE, %eax
	movl	%eax, %cr4
	movl	$(RELOC(entry_pgdir)), %eax
	movl	%eax, %cr3
	movl	%cr0, %eax
	orl	$(CR0_PE | CR0_PG | CR0_WP), %eax
	movl	%eax, %cr0

	# still at low EIP; jump up
	mov	$relocated, %eax
	jmp	*%eax
relocated:
	movl	$0x0, %ebp			# nuke frame pointer: the backtrace stops here
	movl	$(bootstacktop), %esp
	pushl	%ebx				# multiboot info (physical)
	call	i386_init

spin:	jmp	spin

.data
	.p2align PGSHIFT
	.globl entry_pgdir
entry_pgdir:
	.space PGSIZE
	.globl entry_pgtable
entry_pgtable:
	.space PGSIZE
	.globl bootstack
bootstack:
	.space KSTKSIZE
	.globl bootstacktop
bootstacktop:
	.long 0, 0, 0, 0, 0, 0, 0, 0			# what a JOS backtrace reads above the top frame
