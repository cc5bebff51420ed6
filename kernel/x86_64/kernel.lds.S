/*
 * kernel.lds.S - linker script of the x86-64 kernel (run through cpp; memlayout.h).
 *
 * Boot chain: the loader copies the three PT_LOAD segments below into one allocation
 * and maps it at KERNEL_VBASE; the kernel then remaps it page by page with the
 * permissions the segments carry: text RX (including .user, the user task's code),
 * rodata R+NX, data/bss RW+NX.  Every boundary is page aligned so W^X is exact.
 * p_paddr = p_vaddr - KERNEL_VBASE (an offset; the loader ignores it).
 */
#define KDIAG_LINKER_SCRIPT
#include "memlayout.h"

OUTPUT_FORMAT("elf64-x86-64")
OUTPUT_ARCH(i386:x86-64)
ENTRY(_start)

PHDRS
{
	text   PT_LOAD FLAGS(5);   /* R X */
	user   PT_LOAD FLAGS(5);   /* R X, linked at USER_CODE_VA */
	rodata PT_LOAD FLAGS(4);   /* R   */
	data   PT_LOAD FLAGS(6);   /* R W */
}

SECTIONS
{
	. = KERNEL_VBASE;
	__kernel_start = .;

	.text : AT(ADDR(.text) - KERNEL_VBASE) {
		__text_start = .;
		*(.text.entry)
		*(.text .text.*)
	} :text

	/* The user task's code: linked at its run address USER_CODE_VA (so its symbols
	 * are the addresses ring 3 executes), loaded inside the image right after .text. */
	. = ALIGN(4096);
	__user_load = .;
	.user USER_CODE_VA : AT(__user_load - KERNEL_VBASE) {
		__user_start = .;
		*(.user)
		. = ALIGN(4096);
		__user_end = .;
	} :user
	. = __user_load + SIZEOF(.user);
	__user_load_end = .;
	__text_end = .;
	ASSERT(user_entry == USER_CODE_VA, "user_entry must open the .user section")

	. = ALIGN(4096);
	.rodata : AT(ADDR(.rodata) - KERNEL_VBASE) {
		__rodata_start = .;
		*(.rodata .rodata.*)
		. = ALIGN(4096);
		__rodata_end = .;
	} :rodata

	.data : AT(ADDR(.data) - KERNEL_VBASE) {
		__data_start = .;
		*(.data .data.*)
	} :data

	.bss : AT(ADDR(.bss) - KERNEL_VBASE) {
		__bss_start = .;
		*(.bss .bss.*)
		*(COMMON)
		. = ALIGN(4096);
		__bss_end = .;
	} :data
	__kernel_end = .;

	/DISCARD/ : {
		*(.comment)
		*(.note .note.*)
		*(.eh_frame .eh_frame_hdr)
	}
}
