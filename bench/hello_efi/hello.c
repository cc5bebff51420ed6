/*
 * The anchor of bench_boot.py: the smallest UEFI application that proves the firmware handed
 * over control. It prints one line on ConOut (OVMF mirrors it to the serial port) and powers the
 * machine off, so QEMU exits. Built with gnu-efi exactly like the bundled loader.
 */
#include <efi.h>
#include <efilib.h>

EFI_STATUS EFIAPI efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *st)
{
    InitializeLib(image, st);
    Print(L"HELLO from the anchor app\r\n");
    uefi_call_wrapper(st->RuntimeServices->ResetSystem, 4, EfiResetShutdown, EFI_SUCCESS, 0, NULL);
    return EFI_SUCCESS;
}
