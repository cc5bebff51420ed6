/*
 * elf64.h - the few ELF64 structures the UEFI loader needs to load the kernel.
 *
 * Boot chain: the loader reads \kernel.elf from the ESP and copies its PT_LOAD segments;
 * this is the System V gABI / x86-64 psABI layout (no UEFI or libc header provides it
 * to a gnu-efi application).
 */
#ifndef KDIAG_ELF64_H
#define KDIAG_ELF64_H

#include <stdint.h>

#define EI_NIDENT     16
#define ELFMAG        "\177ELF"
#define EI_CLASS      4
#define ELFCLASS64    2
#define EI_DATA       5
#define ELFDATA2LSB   1
#define ET_EXEC       2
#define EM_X86_64     62

#define PT_LOAD       1
#define PF_X          0x1
#define PF_W          0x2
#define PF_R          0x4

struct elf64_ehdr {
	unsigned char e_ident[EI_NIDENT];
	uint16_t e_type;
	uint16_t e_machine;
	uint32_t e_version;
	uint64_t e_entry;
	uint64_t e_phoff;
	uint64_t e_shoff;
	uint32_t e_flags;
	uint16_t e_ehsize;
	uint16_t e_phentsize;
	uint16_t e_phnum;
	uint16_t e_shentsize;
	uint16_t e_shnum;
	uint16_t e_shstrndx;
};

struct elf64_phdr {
	uint32_t p_type;
	uint32_t p_flags;
	uint64_t p_offset;
	uint64_t p_vaddr;
	uint64_t p_paddr;
	uint64_t p_filesz;
	uint64_t p_memsz;
	uint64_t p_align;
};

#endif
