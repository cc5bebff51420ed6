"""Pure x86 decoders: ints/bytes in, frozen dataclasses out. No I/O, no gdb, no printing."""
