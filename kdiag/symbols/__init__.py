"""Symbolization: ELF symbol tables, DWARF line/inline tables and STABS, indexed and cached.

- :class:`Symbolizer` (``add_elf(path, bias=0)``, ``lookup(addr) -> Location | None``);
- :class:`Location` / :class:`InlinedCall`: the answer;
- :mod:`kdiag.symbols.stabs`: the STABS reader and the JOS ``debuginfo_eip`` port;
- :mod:`kdiag.symbols.dwarf`: the compact DWARF line/function reader;
- :mod:`kdiag.symbols.cache`: the on-disk index cache (``KDIAG_CACHE_DIR``).

Pure Python; never imports gdb. Corrupt input raises :class:`kdiag.errors.InputError`.
The names below are imported on first use (PEP 562), so ``import kdiag.symbols.symbolizer``
does not pay for the STABS and DWARF readers a warm lookup never runs.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's constant without importing typing (start-up cost)
if TYPE_CHECKING:
    from kdiag.symbols.location import InlinedCall, Location
    from kdiag.symbols.stabs import EipDebugInfo
    from kdiag.symbols.symbolizer import Symbolizer, load_index

__all__ = ["EipDebugInfo", "InlinedCall", "Location", "Symbolizer", "load_index"]

_HOME = {"EipDebugInfo": "stabs", "InlinedCall": "location", "Location": "location",
         "Symbolizer": "symbolizer", "load_index": "symbolizer"}


def __getattr__(name: str) -> object:
    mod = _HOME.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value
