"""Symbolization: ELF symbol tables, DWARF line/inline tables and STABS, indexed and cached.

- :class:`Symbolizer` (``add_elf(path, bias=0)``, ``lookup(addr) -> Location | None``);
- :class:`Location` / :class:`InlinedCall`: the answer;
- :mod:`kdiag.symbols.stabs`: the STABS reader and the JOS ``debuginfo_eip`` port;
- :mod:`kdiag.symbols.dwarf`: the compact DWARF line/function reader;
- :mod:`kdiag.symbols.cache`: the on-disk index cache (``KDIAG_CACHE_DIR``).

Pure Python; never imports gdb. Corrupt input raises :class:`kdiag.errors.InputError`.
"""

from kdiag.symbols.location import InlinedCall, Location
from kdiag.symbols.stabs import EipDebugInfo
from kdiag.symbols.symbolizer import Symbolizer, load_index

__all__ = ["EipDebugInfo", "InlinedCall", "Location", "Symbolizer", "load_index"]
