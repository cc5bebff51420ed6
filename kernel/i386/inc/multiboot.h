/* inc/multiboot.h - the Multiboot 0.6.96 header and information structure (what QEMU's
 * -kernel loader and GRUB legacy pass in %ebx). */
#ifndef KDIAG_I386_MULTIBOOT_H
#define KDIAG_I386_MULTIBOOT_H

#define MULTIBOOT_HEADER_MAGIC		0x1BADB002
#define MULTIBOOT_BOOTLOADER_MAGIC	0x2BADB002
#define MULTIBOOT_PAGE_ALIGN		0x00000001
#define MULTIBOOT_MEMORY_INFO		0x00000002
#define MULTIBOOT_INFO_CMDLINE		0x00000004

#ifndef __ASSEMBLER__
#include <inc/types.h>
struct multiboot_info {
	uint32_t flags;
	uint32_t mem_lower;
	uint32_t mem_upper;
	uint32_t boot_device;
	uint32_t cmdline;	/* physical address of a NUL-terminated string */
	uint32_t mods_count;
	uint32_t mods_addr;
};
#endif
#endif
