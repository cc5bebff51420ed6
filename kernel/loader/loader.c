/*
 * loader.c - the UEFI boot loader (BOOTX64.EFI) for the kdiag x86-64 kernel.
 *
 * Boot chain: OVMF -> this loader -> kernel.  OVMF starts us in long mode with its own
 * identity-mapped page tables, GDT and IDT.  We read \kdiag.cfg (scenario) and \kernel.elf
 * from our own volume, copy the kernel's PT_LOAD segments (placed by p_paddr, an offset in
 * the image) into pages from AllocateAnyPages (physical addresses near 16 MiB are taken
 * by OVMF), build the first 4-level page tables
 * (identity map of RAM without page 0, physmap at PHYSMAP_BASE, kernel at its link
 * address), collect the boot info (memory map, GOP framebuffer, ACPI RSDP), exit boot
 * services (retrying on a stale map key), load CR3, and jump to the kernel entry with the
 * System V ABI: RDI = boot info (physmap address), interrupts off, IDT limit 0.
 *
 * Output: "[loader] ..." lines on ConOut (which OVMF mirrors to COM1) before
 * ExitBootServices, on COM1 directly afterwards, and always on the 0xE9 debug console.
 */
#include <efi.h>
#include <efilib.h>

#include "bootinfo.h"
#include "cpu.h"
#include "elf64.h"
#include "format.h"
#include "memlayout.h"
#include "paging.h"
#include "uart.h"

#define PT_POOL_PAGES  64          /* enough for 4 GiB of RAM twice plus the kernel */
#define MMAP_SLACK     32          /* extra descriptors: our own allocations split ranges */
#define EBS_ATTEMPTS   8
#define CFG_MAX        512

/* loader_enter.S */
extern void loader_enter_kernel(uint64_t cr3, uint64_t entry, uint64_t bootinfo,
				uint64_t pass_in_rcx) __attribute__((noreturn));

static int boot_services_exited;

/* ---------------------------------------------------------------------------------- output */

static void com1_putc(char c)
{
	for (int spin = 0; spin < 100000 && !(inb(COM1_PORT + UART_LSR) & UART_LSR_THRE); spin++)
		;
	outb(COM1_PORT + UART_THR, (uint8_t)c);
}

static void emit(const char *s)
{
	for (const char *p = s; *p; p++)
		outb(DEBUGCON_PORT, (uint8_t)*p);
	if (boot_services_exited) {
		for (const char *p = s; *p; p++) {
			if (*p == '\n')
				com1_putc('\r');
			com1_putc(*p);
		}
		return;
	}
	CHAR16 wide[160];
	size_t n = 0;
	for (const char *p = s; *p; p++) {
		if (*p == '\n')
			wide[n++] = L'\r';
		wide[n++] = (CHAR16)(unsigned char)*p;
		if (n >= 150 || !p[1]) {
			wide[n] = 0;
			ST->ConOut->OutputString(ST->ConOut, wide);
			n = 0;
		}
	}
}

static void __attribute__((format(printf, 1, 2))) say(const char *fmt, ...)
{
	char line[200];
	int n = ksnprintf(line, sizeof(line) - 1, "[loader] ");
	va_list ap;

	va_start(ap, fmt);
	kvsnprintf(line + n, sizeof(line) - 1 - (size_t)n, fmt, ap);
	va_end(ap);
	size_t len = kstrlen(line);
	line[len] = '\n';
	line[len + 1] = '\0';
	emit(line);
}

static const char *status_text(EFI_STATUS st)
{
	switch (st) {
	case EFI_SUCCESS: return "success";
	case EFI_NOT_FOUND: return "not found";
	case EFI_OUT_OF_RESOURCES: return "out of resources";
	case EFI_INVALID_PARAMETER: return "invalid parameter";
	case EFI_BUFFER_TOO_SMALL: return "buffer too small";
	case EFI_UNSUPPORTED: return "unsupported";
	case EFI_LOAD_ERROR: return "load error";
	default: return "error";
	}
}

static EFI_STATUS fail(const char *what, EFI_STATUS st)
{
	say("FATAL: %s: %s (0x%lx)", what, status_text(st), (unsigned long)st);
	return st == EFI_SUCCESS ? EFI_LOAD_ERROR : st;
}

/* ---------------------------------------------------------------------------------- memory */

static EFI_STATUS alloc_pages(UINTN pages, uint64_t *phys)
{
	EFI_PHYSICAL_ADDRESS addr = 0;
	EFI_STATUS st = BS->AllocatePages(AllocateAnyPages, EfiLoaderData, pages, &addr);

	if (!EFI_ERROR(st)) {
		kmemset((void *)(uintptr_t)addr, 0, pages * PAGE_SIZE);
		*phys = addr;
	}
	return st;
}

/* Page tables come from one pool, so the kernel knows which pages they occupy. */
static struct {
	uint64_t base;
	uint64_t used;
} pt_pool;

static uint64_t *pt_alloc(void)
{
	if (pt_pool.used >= PT_POOL_PAGES)
		return NULL;
	return (uint64_t *)(uintptr_t)(pt_pool.base + PAGE_SIZE * pt_pool.used++);
}

/* Map one 4 KiB or 2 MiB page; intermediate tables are P|W (supervisor). 0 on success. */
static int map(uint64_t *pml4, uint64_t va, uint64_t pa, uint64_t size, uint64_t flags)
{
	static const int shifts[] = { PML4_SHIFT, PDPT_SHIFT, PD_SHIFT };
	int levels = size == LARGE_PAGE_SIZE ? 2 : 3;
	uint64_t *table = pml4;

	for (int i = 0; i < levels; i++) {
		uint64_t *e = &table[PX_INDEX(va, shifts[i])];
		if (!(*e & PTE_P)) {
			uint64_t *next = pt_alloc();
			if (!next)
				return -1;
			*e = (uint64_t)(uintptr_t)next | PTE_P | PTE_W;
		}
		table = (uint64_t *)(uintptr_t)(*e & PTE_ADDR_MASK);
	}
	if (size == LARGE_PAGE_SIZE)
		table[PD_INDEX(va)] = pa | flags | PTE_PS;
	else
		table[PT_INDEX(va)] = pa | flags;
	return 0;
}

/* ----------------------------------------------------------------------------------- files */

static EFI_STATUS read_file(EFI_FILE_HANDLE root, CHAR16 *name, void **data, UINTN *size)
{
	EFI_FILE_HANDLE fh;
	EFI_STATUS st = root->Open(root, &fh, name, EFI_FILE_MODE_READ, 0);

	if (EFI_ERROR(st))
		return st;
	EFI_FILE_INFO *info = LibFileInfo(fh);
	if (!info) {
		fh->Close(fh);
		return EFI_LOAD_ERROR;
	}
	UINTN n = info->FileSize;
	FreePool(info);
	void *buf = AllocatePool(n + 1);
	if (!buf) {
		fh->Close(fh);
		return EFI_OUT_OF_RESOURCES;
	}
	st = fh->Read(fh, &n, buf);
	fh->Close(fh);
	if (EFI_ERROR(st)) {
		FreePool(buf);
		return st;
	}
	((char *)buf)[n] = '\0';
	*data = buf;
	*size = n;
	return EFI_SUCCESS;
}

/* \kdiag.cfg: lines "key=value", '#' comments; only "scenario" is read. */
static void parse_config(const char *text, UINTN len, char *scenario, size_t cap)
{
	const char *p = text, *end = text + len;

	while (p < end) {
		const char *eol = p;
		while (eol < end && *eol != '\n')
			eol++;
		const char *s = p, *e = eol;
		while (s < e && (*s == ' ' || *s == '\t'))
			s++;
		while (e > s && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if (e - s > 9 && !kstrncmp(s, "scenario=", 9)) {
			s += 9;
			size_t n = 0;
			while (s < e && n + 1 < cap)
				scenario[n++] = *s++;
			scenario[n] = '\0';
		}
		p = eol + 1;
	}
}

/* ------------------------------------------------------------------------------------- ELF */

struct kernel_image {
	uint64_t phys, virt, size, entry;
};

static EFI_STATUS load_kernel(const uint8_t *file, UINTN file_size, struct kernel_image *k)
{
	const struct elf64_ehdr *eh = (const struct elf64_ehdr *)file;

	if (file_size < sizeof(*eh) || kstrncmp((const char *)eh->e_ident, ELFMAG, 4) ||
	    eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh->e_type != ET_EXEC || eh->e_machine != EM_X86_64 ||
	    eh->e_phentsize != sizeof(struct elf64_phdr) ||
	    eh->e_phoff + (uint64_t)eh->e_phnum * sizeof(struct elf64_phdr) > file_size)
		return fail("kernel.elf is not an x86-64 ELF executable", EFI_LOAD_ERROR);

	/* Placement is by p_paddr: each segment's offset in the image.  The image is mapped
	 * at the virtual address of the segment holding the entry point, minus its offset
	 * (KERNEL_VBASE); segments linked elsewhere (the user task's code) are loaded here
	 * and mapped by the kernel. */
	const struct elf64_phdr *ph = (const struct elf64_phdr *)(file + eh->e_phoff);
	uint64_t lo = ~0ULL, hi = 0, delta = 0;
	int have_entry = 0;
	for (int i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type != PT_LOAD)
			continue;
		if (ph[i].p_offset + ph[i].p_filesz > file_size || ph[i].p_filesz > ph[i].p_memsz)
			return fail("kernel.elf: segment outside the file", EFI_LOAD_ERROR);
		if (ph[i].p_paddr < lo)
			lo = ph[i].p_paddr;
		if (ph[i].p_paddr + ph[i].p_memsz > hi)
			hi = ph[i].p_paddr + ph[i].p_memsz;
		if (eh->e_entry >= ph[i].p_vaddr && eh->e_entry < ph[i].p_vaddr + ph[i].p_memsz) {
			delta = ph[i].p_vaddr - ph[i].p_paddr;
			have_entry = 1;
		}
	}
	if (hi <= lo || !have_entry)
		return fail("kernel.elf: no PT_LOAD segment holds the entry point", EFI_LOAD_ERROR);
	lo &= ~(PAGE_SIZE - 1);
	hi = (hi + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
	if (hi - lo > 64 * 1024 * 1024)
		return fail("kernel.elf: image larger than 64 MiB (p_paddr must be image offsets)",
			    EFI_LOAD_ERROR);

	/* One contiguous allocation anywhere: the page tables put it at its link address. */
	EFI_STATUS st = alloc_pages((hi - lo) / PAGE_SIZE, &k->phys);
	if (EFI_ERROR(st))
		return fail("AllocatePages for the kernel image", st);
	k->virt = lo + delta;
	k->size = hi - lo;
	k->entry = eh->e_entry;
	for (int i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type != PT_LOAD)
			continue;
		uint8_t *dst = (uint8_t *)(uintptr_t)(k->phys + ph[i].p_paddr - lo);
		kmemcpy(dst, file + ph[i].p_offset, ph[i].p_filesz);   /* rest stays zero (.bss) */
		say("segment va=0x%lx pa=0x%lx filesz=0x%lx memsz=0x%lx %c%c%c",
		    (unsigned long)ph[i].p_vaddr, (unsigned long)(uintptr_t)dst,
		    (unsigned long)ph[i].p_filesz, (unsigned long)ph[i].p_memsz,
		    ph[i].p_flags & PF_R ? 'r' : '-', ph[i].p_flags & PF_W ? 'w' : '-',
		    ph[i].p_flags & PF_X ? 'x' : '-');
	}
	return EFI_SUCCESS;
}

/* ---------------------------------------------------------------------------- boot info */

static uint64_t ram_end_from_map(void)
{
	UINTN entries = 0, key, dsize;
	UINT32 dver;
	uint64_t end = 0;
	/* gnu-efi's LibMemoryMap returns the number of entries, not the byte size */
	EFI_MEMORY_DESCRIPTOR *map = LibMemoryMap(&entries, &key, &dsize, &dver);

	if (!map)
		return 0;
	for (UINTN i = 0; i < entries; i++) {
		EFI_MEMORY_DESCRIPTOR *d = (EFI_MEMORY_DESCRIPTOR *)((uint8_t *)map + i * dsize);
		uint64_t e = d->PhysicalStart + d->NumberOfPages * PAGE_SIZE;
		if (bi_mem_is_ram(d->Type) && e > end)
			end = e;
	}
	FreePool(map);
	return end;
}

static void find_gop(struct bootinfo *bi)
{
	EFI_GUID guid = EFI_GRAPHICS_OUTPUT_PROTOCOL_GUID;
	EFI_GRAPHICS_OUTPUT_PROTOCOL *gop = NULL;

	if (EFI_ERROR(BS->LocateProtocol(&guid, NULL, (void **)&gop)) || !gop || !gop->Mode ||
	    !gop->Mode->Info) {
		say("framebuffer: none (no GOP; QEMU needs -vga std for one)");
		return;
	}
	EFI_GRAPHICS_OUTPUT_MODE_INFORMATION *info = gop->Mode->Info;
	static const uint32_t formats[] = {
		[PixelRedGreenBlueReserved8BitPerColor] = BI_FB_RGBX,
		[PixelBlueGreenRedReserved8BitPerColor] = BI_FB_BGRX,
		[PixelBitMask] = BI_FB_BITMASK,
		[PixelBltOnly] = BI_FB_BLTONLY,
	};
	bi->fb_format = info->PixelFormat < PixelFormatMax ? formats[info->PixelFormat] : BI_FB_NONE;
	if (bi->fb_format == BI_FB_BLTONLY || bi->fb_format == BI_FB_NONE) {
		say("framebuffer: GOP has no linear framebuffer");
		bi->fb_format = BI_FB_NONE;
		return;
	}
	bi->fb_phys = gop->Mode->FrameBufferBase;
	bi->fb_size = gop->Mode->FrameBufferSize;
	bi->fb_width = info->HorizontalResolution;
	bi->fb_height = info->VerticalResolution;
	bi->fb_pitch = info->PixelsPerScanLine;
	bi->fb_mask_red = info->PixelInformation.RedMask;
	bi->fb_mask_green = info->PixelInformation.GreenMask;
	bi->fb_mask_blue = info->PixelInformation.BlueMask;
	bi->fb_mask_reserved = info->PixelInformation.ReservedMask;
	say("framebuffer: 0x%lx size 0x%lx %ux%u pitch %u format %u",
	    (unsigned long)bi->fb_phys, (unsigned long)bi->fb_size, bi->fb_width, bi->fb_height,
	    bi->fb_pitch, bi->fb_format);
}

static void find_rsdp(struct bootinfo *bi)
{
	EFI_GUID acpi20 = ACPI_20_TABLE_GUID, acpi10 = ACPI_TABLE_GUID;

	for (UINTN i = 0; i < ST->NumberOfTableEntries; i++) {
		EFI_CONFIGURATION_TABLE *t = &ST->ConfigurationTable[i];
		if (!CompareGuid(&t->VendorGuid, &acpi20)) {
			bi->rsdp_phys = (uint64_t)(uintptr_t)t->VendorTable;
			bi->rsdp_revision = 2;
			break;
		}
		if (!CompareGuid(&t->VendorGuid, &acpi10) && !bi->rsdp_phys)
			bi->rsdp_phys = (uint64_t)(uintptr_t)t->VendorTable;
	}
	say("acpi: rsdp 0x%lx (revision %u)", (unsigned long)bi->rsdp_phys, bi->rsdp_revision);
}

/* --------------------------------------------------------------------------- page tables */

static EFI_STATUS build_page_tables(uint64_t ram_end, const struct kernel_image *k,
				    uint64_t *pml4_phys)
{
	EFI_STATUS st = alloc_pages(PT_POOL_PAGES, &pt_pool.base);

	if (EFI_ERROR(st))
		return fail("AllocatePages for page tables", st);
	uint64_t *pml4 = pt_alloc();
	int err = 0;

	/* Identity map of RAM for our own code, stack and data until the jump.  Page 0 stays
	 * unmapped so that a NULL dereference faults, in the loader and in the early kernel. */
	for (uint64_t pa = PAGE_SIZE; pa < LARGE_PAGE_SIZE; pa += PAGE_SIZE)
		err |= map(pml4, pa, pa, PAGE_SIZE, PTE_P | PTE_W);
	for (uint64_t pa = LARGE_PAGE_SIZE; pa < ram_end; pa += LARGE_PAGE_SIZE)
		err |= map(pml4, pa, pa, LARGE_PAGE_SIZE, PTE_P | PTE_W);
	/* physmap: all RAM at PHYSMAP_BASE, 2 MiB pages (the kernel rebuilds it) */
	for (uint64_t pa = 0; pa < ram_end; pa += LARGE_PAGE_SIZE)
		err |= map(pml4, PHYSMAP_BASE + pa, pa, LARGE_PAGE_SIZE, PTE_P | PTE_W);
	/* the kernel image at its link address, 4 KiB pages, RWX (the kernel applies W^X) */
	for (uint64_t off = 0; off < k->size; off += PAGE_SIZE)
		err |= map(pml4, k->virt + off, k->phys + off, PAGE_SIZE, PTE_P | PTE_W);
	if (err)
		return fail("page-table pool exhausted", EFI_OUT_OF_RESOURCES);
	*pml4_phys = (uint64_t)(uintptr_t)pml4;
	say("page tables: pml4 0x%lx, %lu of %u pool pages, identity+physmap 0x%lx bytes",
	    (unsigned long)*pml4_phys, (unsigned long)pt_pool.used, PT_POOL_PAGES,
	    (unsigned long)ram_end);
	return EFI_SUCCESS;
}

/* ------------------------------------------------------------------------------- main */

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab)
{
	EFI_STATUS st;

	InitializeLib(image, systab);
	emit("\n");
	say("kdiag loader started");

	EFI_LOADED_IMAGE *li = NULL;
	st = BS->HandleProtocol(image, &LoadedImageProtocol, (void **)&li);
	if (EFI_ERROR(st))
		return fail("LoadedImage protocol", st);
	EFI_FILE_HANDLE root = LibOpenRoot(li->DeviceHandle);
	if (!root)
		return fail("opening the boot volume", EFI_NOT_FOUND);

	/* boot info page first: everything found below goes straight into it */
	uint64_t bi_phys;
	st = alloc_pages(1, &bi_phys);
	if (EFI_ERROR(st))
		return fail("AllocatePages for boot info", st);
	struct bootinfo *bi = (struct bootinfo *)(uintptr_t)bi_phys;
	bi->magic = BOOTINFO_MAGIC;
	bi->version = BOOTINFO_VERSION;
	bi->size = sizeof(*bi);
	bi->bootinfo_phys = bi_phys;

	void *cfg;
	UINTN cfg_size;
	if (!EFI_ERROR(read_file(root, L"\\kdiag.cfg", &cfg, &cfg_size))) {
		parse_config(cfg, cfg_size < CFG_MAX ? cfg_size : CFG_MAX, bi->scenario,
			     sizeof(bi->scenario));
		FreePool(cfg);
	}
	say("scenario: %s", bi->scenario[0] ? bi->scenario : "healthy");
	int abi_mismatch = !kstrcmp(bi->scenario, "abi-mismatch");
	int ebs_retry = !kstrcmp(bi->scenario, "ebs-retry");

	void *elf;
	UINTN elf_size;
	st = read_file(root, L"\\kernel.elf", &elf, &elf_size);
	if (EFI_ERROR(st))
		return fail("reading \\kernel.elf", st);
	struct kernel_image k;
	say("kernel.elf: %lu bytes", (unsigned long)elf_size);
	st = load_kernel(elf, elf_size, &k);
	FreePool(elf);
	if (EFI_ERROR(st))
		return st;
	say("kernel image: va 0x%lx pa 0x%lx size 0x%lx entry 0x%lx", (unsigned long)k.virt,
	    (unsigned long)k.phys, (unsigned long)k.size, (unsigned long)k.entry);
	bi->kernel_phys = k.phys;
	bi->kernel_virt = k.virt;
	bi->kernel_size = k.size;
	bi->kernel_entry = k.entry;

	find_gop(bi);
	find_rsdp(bi);

	uint64_t ram_end = (ram_end_from_map() + LARGE_PAGE_SIZE - 1) & ~(LARGE_PAGE_SIZE - 1);
	if (!ram_end)
		return fail("GetMemoryMap", EFI_LOAD_ERROR);
	bi->ram_end = ram_end;
	uint64_t pml4 = 0;
	st = build_page_tables(ram_end, &k, &pml4);
	if (EFI_ERROR(st))
		return st;
	bi->loader_pml4 = pml4;
	bi->pt_pool_phys = pt_pool.base;
	bi->pt_pool_pages = PT_POOL_PAGES;
	bi->physmap_base = PHYSMAP_BASE;
	bi->physmap_size = ram_end;

	/* The memory-map buffer is allocated before the final GetMemoryMap, with slack for
	 * the descriptors this very allocation may add. */
	UINTN map_size = 0, key = 0, dsize = 0;
	UINT32 dver = 0;
	st = BS->GetMemoryMap(&map_size, NULL, &key, &dsize, &dver);
	if (st != EFI_BUFFER_TOO_SMALL)
		return fail("GetMemoryMap (size query)", st);
	UINTN map_cap = map_size + MMAP_SLACK * dsize;
	uint64_t map_phys;
	st = alloc_pages((map_cap + PAGE_SIZE - 1) / PAGE_SIZE, &map_phys);
	if (EFI_ERROR(st))
		return fail("AllocatePages for the memory map", st);

	say("exiting boot services");
	if (ebs_retry)
		say("scenario ebs-retry: triggering (allocating after GetMemoryMap)");
	/* From here on no call may allocate: a failed ExitBootServices means the map changed
	 * under us (stale key, EFI_INVALID_PARAMETER): fetch it again and retry. */
	int attempt;
	for (attempt = 1; attempt <= EBS_ATTEMPTS; attempt++) {
		map_size = map_cap;
		st = BS->GetMemoryMap(&map_size, (EFI_MEMORY_DESCRIPTOR *)(uintptr_t)map_phys, &key,
				      &dsize, &dver);
		if (EFI_ERROR(st))
			break;
		if (ebs_retry && attempt == 1) {
			/* ebs-retry: the classic mistake of allocating between GetMemoryMap and
			 * ExitBootServices; the map key goes stale and the loop must recover. */
			EFI_PHYSICAL_ADDRESS junk;
			BS->AllocatePages(AllocateAnyPages, EfiLoaderData, 1, &junk);
		}
		st = BS->ExitBootServices(image, key);
		if (st != EFI_INVALID_PARAMETER)
			break;
	}
	if (EFI_ERROR(st))
		return fail("ExitBootServices", st);   /* ConOut may be gone: 0xE9 still works */
	boot_services_exited = 1;
	bi->mmap_phys = map_phys;
	bi->mmap_size = map_size;
	bi->mmap_desc_size = dsize;
	bi->mmap_desc_version = dver;
	bi->ebs_attempts = (uint32_t)attempt;
	say("boot services exited (attempt %d, %lu map entries)", attempt,
	    (unsigned long)(map_size / dsize));

	uint64_t bi_va = PHYSMAP_BASE + bi_phys;
	if (abi_mismatch) {
		/* The diary's bug: the entry point declared EFIAPI (ms_abi), so the argument
		 * travels in RCX while the kernel (System V) reads RDI. */
		say("scenario abi-mismatch: triggering");
		say("jumping to kernel at 0x%lx, bootinfo 0x%lx in RCX (ms_abi)",
		    (unsigned long)k.entry, (unsigned long)bi_va);
	} else {
		say("jumping to kernel at 0x%lx, bootinfo 0x%lx in RDI", (unsigned long)k.entry,
		    (unsigned long)bi_va);
	}
	loader_enter_kernel(pml4, k.entry, bi_va, (uint64_t)abi_mismatch);
}
