/*
 * fb.c - the PAT and the write-combining framebuffer.
 *
 * Boot chain: after the kernel's page tables are live.  IA32_PAT gets PAT_VALUE (index 4
 * = write-combining, the rest the power-on default), caches and TLB are flushed as the
 * SDM asks (12.12.4), and the GOP framebuffer is mapped at FB_VA through PAT index 4:
 * 2 MiB pages (PAT bit 12) where physical and virtual addresses are 2 MiB aligned,
 * 4 KiB pages (PAT bit 7) for the rest.  Without a GOP (QEMU -vga none) a RAM stand-in
 * of FB_STANDIN_PAGES pages is mapped the same way, so the WC mapping (and its 2 MiB
 * page) always exists.
 */
#include "cpu.h"
#include "kernel.h"
#include "msr.h"
#include "paging.h"

#define FB_STANDIN_PAGES (LARGE_PAGE_SIZE / PAGE_SIZE + 16)   /* 2 MiB + 64 KiB */

uint64_t fb_pa, fb_bytes;
static uint32_t fb_width, fb_height, fb_pitch;

static void fb_draw(void)
{
	volatile uint32_t *fb = (volatile uint32_t *)FB_VA;
	uint32_t rows = fb_height < 48 ? fb_height : 48;

	/* a band of colour bars at the top: visible with a display, cheap under TCG */
	for (uint32_t y = 0; y < rows; y++)
		for (uint32_t x = 0; x < fb_width; x++)
			fb[(uint64_t)y * fb_pitch + x] = 0x00204080u + ((x * 8 / (fb_width ? fb_width : 1)) << 20);
}

void pat_fb_init(void)
{
	const struct bootinfo *bi = bootinfo;
	unsigned n2m = 0, n4k = 0;

	if (!cpu.pat)
		panic("CPU has no PAT");
	wrmsr(MSR_PAT, PAT_VALUE);
	wbinvd();
	uint64_t cr4 = read_cr4();
	write_cr4(cr4 & ~CR4_PGE);       /* flushes global entries too */
	write_cr4(cr4);

	if (bi->fb_phys) {
		fb_pa = bi->fb_phys;
		fb_bytes = ALIGN_UP(bi->fb_size, PAGE_SIZE);
		fb_width = bi->fb_width;
		fb_height = bi->fb_height;
		fb_pitch = bi->fb_pitch;
	} else {
		/* 2 MiB aligned, so the stand-in gets a 2 MiB and some 4 KiB pages, like a GOP
		 * framebuffer of 1280x800 does */
		fb_pa = pmm_alloc_contig(FB_STANDIN_PAGES, LARGE_PAGE_SIZE);
		fb_bytes = FB_STANDIN_PAGES * PAGE_SIZE;
		fb_width = fb_pitch = 1024;
		fb_height = (uint32_t)(fb_bytes / 4 / 1024);
		klog("framebuffer: no GOP (QEMU -vga none?), using a RAM stand-in at 0x%lx",
		     (unsigned long)fb_pa);
	}

	if (knobs.fb_touch_before_map) {
		/* fb-unmapped: draw first, map later */
		scenario_triggering();
		fb_draw();
	}
	for (uint64_t off = 0; off < fb_bytes;) {
		uint64_t pa = fb_pa + off, va = FB_VA + off;
		if (!(pa & (LARGE_PAGE_SIZE - 1)) && fb_bytes - off >= LARGE_PAGE_SIZE) {
			map_page(va, pa, LARGE_PAGE_SIZE, PTE_P | PTE_W | PTE_G | PTE_NX | PTE_CACHE_WC_LARGE);
			off += LARGE_PAGE_SIZE;
			n2m++;
		} else {
			map_page(va, pa, PAGE_SIZE, PTE_P | PTE_W | PTE_G | PTE_NX | PTE_CACHE_WC_4K);
			off += PAGE_SIZE;
			n4k++;
		}
	}
	fb_draw();
	klog("pat: wc for framebuffer (pat 0x%lx, fb 0x%lx -> 0x%lx, %u x 2 MiB + %u x 4 KiB pages, "
	     "%ux%u)", (unsigned long)rdmsr(MSR_PAT), (unsigned long)fb_pa, (unsigned long)FB_VA,
	     n2m, n4k, fb_width, fb_height);
}
