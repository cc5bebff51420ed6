/*
 * pmm.c - the physical page allocator: a bump allocator over the largest free range.
 *
 * Boot chain: right before paging.c builds the kernel's tables.  The UEFI memory map
 * the loader saved lists EfiConventionalMemory as free after ExitBootServices; everything
 * else (the kernel image, boot info, the loader's page tables, firmware runtime data)
 * is left alone.  Pages are zeroed through the physmap; nothing is ever freed.
 */
#include "kernel.h"

static uint64_t region_start, region_end, next_free;

void pmm_init(void)
{
	const struct bootinfo *bi = bootinfo;
	const uint8_t *map = p2v(bi->mmap_phys);
	uint64_t free_bytes = 0;

	for (uint64_t off = 0; off + bi->mmap_desc_size <= bi->mmap_size; off += bi->mmap_desc_size) {
		const struct bi_mem_desc *d = (const struct bi_mem_desc *)(map + off);
		if (d->type != BI_MEM_CONVENTIONAL)
			continue;
		uint64_t start = d->phys_start, end = start + d->num_pages * PAGE_SIZE;
		free_bytes += end - start;
		if (start < 0x100000)
			continue;              /* keep low memory out of it */
		if (end - start > region_end - region_start) {
			region_start = start;
			region_end = end;
		}
	}
	if (!region_end)
		panic("no free memory in the UEFI memory map");
	next_free = region_start;
	klog("memory: %lu map entries, %lu KiB free, allocating from 0x%lx-0x%lx",
	     (unsigned long)(bi->mmap_size / bi->mmap_desc_size), (unsigned long)(free_bytes >> 10),
	     (unsigned long)region_start, (unsigned long)region_end);
}

uint64_t pmm_alloc(void)
{
	if (next_free + PAGE_SIZE > region_end)
		panic("out of physical memory");
	uint64_t pa = next_free;
	next_free += PAGE_SIZE;
	uint64_t *p = p2v(pa);
	for (unsigned i = 0; i < PAGE_SIZE / 8; i++)
		p[i] = 0;
	return pa;
}

/* pages consecutive zeroed pages, the first aligned to align (a power of two); the
 * pages skipped to reach the alignment are lost (nothing is ever freed anyway). */
uint64_t pmm_alloc_contig(uint64_t pages, uint64_t align)
{
	next_free = ALIGN_UP(next_free, align);
	uint64_t first = pmm_alloc();
	for (uint64_t i = 1; i < pages; i++)
		pmm_alloc();
	return first;
}

uint64_t pmm_used_pages(void)
{
	return (next_free - region_start) / PAGE_SIZE;
}
