/*
 * bootinfo.h - the hand-over record from the UEFI loader to the x86-64 kernel.
 *
 * Boot chain: OVMF -> loader -> kernel.  The loader fills one page with a struct bootinfo
 * (physical address bootinfo_phys), exits boot services, and jumps to the kernel's entry
 * with the System V ABI: RDI = PHYSMAP_BASE + bootinfo_phys.  Every address in here is
 * physical unless its name says otherwise; the kernel reads them through the physmap.
 * The UEFI memory-map copy (mmap_*) is the one whose key ExitBootServices accepted.
 */
#ifndef KDIAG_BOOTINFO_H
#define KDIAG_BOOTINFO_H

#include <stdint.h>

#define BOOTINFO_MAGIC        0x4f464e49544f4f42ULL   /* "BOOTINFO" little-endian */
#define BOOTINFO_VERSION      1
#define BOOTINFO_SCENARIO_MAX 48                      /* including the NUL */

/* fb_format: the GOP pixel format */
#define BI_FB_NONE     0   /* no GOP (e.g. QEMU -vga none): fb_phys == 0 */
#define BI_FB_RGBX     1   /* PixelRedGreenBlueReserved8BitPerColor */
#define BI_FB_BGRX     2   /* PixelBlueGreenRedReserved8BitPerColor */
#define BI_FB_BITMASK  3   /* PixelBitMask: see fb_mask_* */
#define BI_FB_BLTONLY  4   /* PixelBltOnly: no linear framebuffer */

struct bootinfo {
	uint64_t magic;              /* BOOTINFO_MAGIC */
	uint32_t version;            /* BOOTINFO_VERSION */
	uint32_t size;               /* sizeof(struct bootinfo) as the loader saw it */
	uint64_t bootinfo_phys;      /* where this record lives */

	/* kernel image: all PT_LOAD segments copied into one contiguous allocation */
	uint64_t kernel_phys;        /* physical address of kernel_virt */
	uint64_t kernel_virt;        /* lowest segment VA, page aligned (KERNEL_VBASE) */
	uint64_t kernel_size;        /* bytes, page aligned, including .bss */
	uint64_t kernel_entry;       /* e_entry */

	/* the loader's page tables (CR3 at kernel entry) */
	uint64_t loader_pml4;        /* physical address of the PML4 */
	uint64_t pt_pool_phys;       /* page-table pages the loader allocated from ... */
	uint64_t pt_pool_pages;      /* ... and how many (EfiLoaderData; keep) */
	uint64_t physmap_base;       /* VA of physical 0 (PHYSMAP_BASE) */
	uint64_t physmap_size;       /* bytes mapped there by the loader */
	uint64_t ram_end;            /* end of the highest RAM range in the memory map */

	/* UEFI memory map: EFI_MEMORY_DESCRIPTOR array, stride mmap_desc_size */
	uint64_t mmap_phys;
	uint64_t mmap_size;          /* bytes used */
	uint64_t mmap_desc_size;
	uint32_t mmap_desc_version;
	uint32_t ebs_attempts;       /* ExitBootServices calls it took (stale map keys + 1) */

	/* GOP framebuffer (fb_phys == 0: none) */
	uint64_t fb_phys;
	uint64_t fb_size;            /* bytes, as GOP reports FrameBufferSize */
	uint32_t fb_width;           /* pixels */
	uint32_t fb_height;          /* pixels */
	uint32_t fb_pitch;           /* pixels per scan line */
	uint32_t fb_format;          /* BI_FB_* */
	uint32_t fb_mask_red, fb_mask_green, fb_mask_blue, fb_mask_reserved;

	/* ACPI */
	uint64_t rsdp_phys;          /* 0 when the config table has none */
	uint32_t rsdp_revision;      /* 2 = ACPI 2.0+ table found, 0 = ACPI 1.0 */
	uint32_t reserved0;

	char scenario[BOOTINFO_SCENARIO_MAX];   /* from \kdiag.cfg; "" = healthy */
};

/*
 * The UEFI memory descriptor (UEFI 2.10, 7.2 EFI_BOOT_SERVICES.GetMemoryMap()), for the
 * kernel, which has no UEFI headers.  Walk the array with mmap_desc_size, not sizeof().
 */
struct bi_mem_desc {
	uint32_t type;               /* BI_MEM_* */
	uint32_t pad;
	uint64_t phys_start;
	uint64_t virt_start;
	uint64_t num_pages;          /* 4 KiB pages */
	uint64_t attribute;
};

#define BI_MEM_RESERVED           0
#define BI_MEM_LOADER_CODE        1
#define BI_MEM_LOADER_DATA        2
#define BI_MEM_BOOT_CODE          3
#define BI_MEM_BOOT_DATA          4
#define BI_MEM_RUNTIME_CODE       5
#define BI_MEM_RUNTIME_DATA       6
#define BI_MEM_CONVENTIONAL       7
#define BI_MEM_UNUSABLE           8
#define BI_MEM_ACPI_RECLAIM       9
#define BI_MEM_ACPI_NVS          10
#define BI_MEM_MMIO              11
#define BI_MEM_MMIO_PORT         12
#define BI_MEM_PAL_CODE          13
#define BI_MEM_PERSISTENT        14

/* Types backed by RAM (what the physmap must cover). */
static inline int bi_mem_is_ram(uint32_t type)
{
	return (type >= BI_MEM_LOADER_CODE && type <= BI_MEM_CONVENTIONAL) ||
	       type == BI_MEM_ACPI_RECLAIM || type == BI_MEM_ACPI_NVS ||
	       type == BI_MEM_PERSISTENT;
}

#endif
