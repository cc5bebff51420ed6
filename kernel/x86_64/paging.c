/*
 * paging.c - the kernel's own 4-level page tables.
 *
 * Boot chain: after the IDT.  Until here the loader's tables are live (identity map of
 * RAM, physmap in 2 MiB pages, the kernel image RWX).  paging_init enables EFER.NXE and
 * CR0.WP and builds a new PML4:
 *   - lower half: the loader's identity-map entries, kept until the kernel is up;
 *   - physmap: 1 GiB pages (2 MiB without pdpe1gb) from physical 0 to ram_end rounded
 *     up to the page size, RW + NX + global;
 *   - kernel image: 4 KiB pages with W^X (text RX, rodata R+NX, data/bss RW+NX), the
 *     guard page below each kernel stack left unmapped;
 *   - LAPIC registers: one uncached 4 KiB page at LAPIC_VA.
 * Then CR3 switches, and CR4 gains PGE, SMEP and SMAP (where the CPU has them).
 * The framebuffer (fb.c) and the user task (user.c) are mapped later.
 */
#include "cpu.h"
#include "kernel.h"
#include "msr.h"
#include "paging.h"

struct cpu_features cpu;
uint64_t kpml4_phys;
uint64_t physmap_end;
static uint64_t *kpml4;

void cpu_detect(void)
{
	uint32_t a, b, c, d, max_ext;

	cpuid(1, 0, &a, &b, &c, &d);
	cpu.pge = d & CPUID_1_EDX_PGE;
	cpu.pat = d & CPUID_1_EDX_PAT;
	cpu.x2apic = c & CPUID_1_ECX_X2APIC;
	cpuid(0, 0, &a, &b, &c, &d);
	if (a >= 7) {
		cpuid(7, 0, &a, &b, &c, &d);
		cpu.smep = b & CPUID_7_EBX_SMEP;
		cpu.smap = b & CPUID_7_EBX_SMAP;
	}
	cpuid(0x80000000, 0, &max_ext, &b, &c, &d);
	if (max_ext >= 0x80000001) {
		cpuid(0x80000001, 0, &a, &b, &c, &d);
		cpu.nx = d & CPUID_80000001_EDX_NX;
		cpu.pdpe1gb = d & CPUID_80000001_EDX_1GB;
	}
	klog("cpu: nx=%d pdpe1gb=%d pge=%d pat=%d smep=%d smap=%d x2apic=%d", cpu.nx, cpu.pdpe1gb,
	     cpu.pge, cpu.pat, cpu.smep, cpu.smap, cpu.x2apic);
}

/* The table an entry points to, allocating it when absent.  New tables in the lower
 * half are user-accessible at this level (the leaf decides); kernel ones are not. */
static uint64_t *next_table(uint64_t *entry, uint64_t va)
{
	if (!(*entry & PTE_P))
		*entry = pmm_alloc() | PTE_P | PTE_W | (va < PHYSMAP_BASE ? PTE_U : 0);
	else if (*entry & PTE_PS)
		panic("map 0x%lx: a large page is in the way", (unsigned long)va);
	return p2v(*entry & PTE_ADDR_MASK);
}

void map_page(uint64_t va, uint64_t pa, uint64_t size, uint64_t flags)
{
	if (!cpu.nx)
		flags &= ~PTE_NX;
	uint64_t *pdpt = next_table(&kpml4[PML4_INDEX(va)], va);
	if (size == HUGE_PAGE_SIZE) {
		pdpt[PDPT_INDEX(va)] = pa | flags | PTE_PS;
		return;
	}
	uint64_t *pd = next_table(&pdpt[PDPT_INDEX(va)], va);
	if (size == LARGE_PAGE_SIZE) {
		pd[PD_INDEX(va)] = pa | flags | PTE_PS;
		return;
	}
	uint64_t *pt = next_table(&pd[PD_INDEX(va)], va);
	pt[PT_INDEX(va)] = pa | flags;
}

/* The leaf entry mapping va (and its page size), or NULL when not mapped. */
uint64_t *pte_lookup(uint64_t va, uint64_t *page_size)
{
	static const int shifts[] = { PML4_SHIFT, PDPT_SHIFT, PD_SHIFT, PT_SHIFT };
	uint64_t *table = kpml4;

	for (int level = 0; level < 4; level++) {
		uint64_t *e = &table[PX_INDEX(va, shifts[level])];
		if (!(*e & PTE_P))
			return NULL;
		if (level == 3 || (level > 0 && (*e & PTE_PS))) {
			if (page_size)
				*page_size = 1ULL << shifts[level];
			return e;
		}
		table = p2v(*e & PTE_ADDR_MASK);
	}
	return NULL;
}

bool kstack_guard_page(uint64_t va)
{
	for (int i = 0; i < KSTACK_COUNT; i++)
		if (va >= (uint64_t)kstacks[i].guard && va < (uint64_t)kstacks[i].guard + KSTACK_GUARD)
			return true;
	return false;
}

static void map_physmap(uint64_t ram_end)
{
	uint64_t step = cpu.pdpe1gb ? HUGE_PAGE_SIZE : LARGE_PAGE_SIZE;

	physmap_end = ALIGN_UP(ram_end, step);
	for (uint64_t pa = 0; pa < physmap_end; pa += step)
		map_page(PHYSMAP_BASE + pa, pa, step, PTE_P | PTE_W | PTE_G | PTE_NX);
}

static void map_kernel_image(const struct bootinfo *bi)
{
	for (uint64_t va = bi->kernel_virt; va < bi->kernel_virt + bi->kernel_size; va += PAGE_SIZE) {
		if (kstack_guard_page(va))
			continue;
		uint64_t flags = PTE_P | PTE_G;
		if (va >= (uint64_t)__text_start && va < (uint64_t)__text_end)
			;                                   /* RX */
		else if (va >= (uint64_t)__rodata_start && va < (uint64_t)__rodata_end)
			flags |= PTE_NX;                    /* R */
		else
			flags |= PTE_W | PTE_NX;            /* RW */
		map_page(va, bi->kernel_phys + (va - bi->kernel_virt), PAGE_SIZE, flags);
	}
}

void paging_init(void)
{
	const struct bootinfo *bi = bootinfo;

	if (bi->kernel_virt != (uint64_t)__kernel_start ||
	    bi->kernel_virt + bi->kernel_size != (uint64_t)__kernel_end)
		panic("kernel image 0x%lx+0x%lx does not match the link map",
		      (unsigned long)bi->kernel_virt, (unsigned long)bi->kernel_size);
	if (cpu.nx)
		wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_NXE);
	write_cr0(read_cr0() | CR0_WP);

	kpml4_phys = pmm_alloc();
	kpml4 = p2v(kpml4_phys);
	const uint64_t *loader_pml4 = p2v(bi->loader_pml4);
	for (int i = 0; i < PML4_USER_SLOTS; i++)
		kpml4[i] = loader_pml4[i];
	map_physmap(bi->ram_end);
	lapic_phys = rdmsr(MSR_APIC_BASE) & APIC_BASE_ADDR_MASK;
	map_page(LAPIC_VA, lapic_phys, PAGE_SIZE, PTE_P | PTE_W | PTE_G | PTE_NX | PTE_CACHE_UC);

	if (knobs.skip_kernel_image_map) {
		/* cr3-unmapped-rip: the new tables have no kernel image, so the instruction
		 * after the CR3 write cannot be fetched (nor the IDT, nor the handlers). */
		scenario_triggering();
	} else {
		map_kernel_image(bi);
	}
	write_cr3(kpml4_phys);

	uint64_t cr4 = read_cr4();
	if (cpu.pge)
		cr4 |= CR4_PGE;
	if (cpu.smep)
		cr4 |= CR4_SMEP;
	if (cpu.smap)
		cr4 |= CR4_SMAP;
	write_cr4(cr4);
	klog("paging: own tables live (cr3 0x%lx, physmap 0x%lx bytes in %s pages, kernel W^X, "
	     "%lu table pages)", (unsigned long)kpml4_phys, (unsigned long)physmap_end,
	     cpu.pdpe1gb ? "1 GiB" : "2 MiB", (unsigned long)pmm_used_pages());
}

void unmap_lower_half(void)
{
	for (int i = 0; i < PML4_USER_SLOTS; i++)
		if (i != (int)PML4_INDEX(USER_BASE))
			kpml4[i] = 0;
	write_cr3(kpml4_phys);
}
