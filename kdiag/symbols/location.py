"""What a symbolized address is: :class:`Location` (and the inlined calls around it).

A ``Location`` says, for one code address, which ELF symbol holds it (``symbol`` + ``offset``
from ``function_start``), which source line the line table gives (``file``/``line``, DWARF
``.debug_line`` or STABS ``N_SLINE``), and, where DWARF records inlining, the chain of calls
the inlined code sits in. ``addr2line -f -i -e ELF ADDR`` prints the same facts; ``frames()``
lists them in its order (innermost function first).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class InlinedCall:
    """One enclosing call of inlined code: the caller ``function`` and the call site in it.

    DWARF: ``DW_TAG_inlined_subroutine`` ``DW_AT_call_file``/``DW_AT_call_line`` give the call
    site; the caller is the enclosing subprogram or inlined subroutine (DWARF 5, 3.3.8.2).
    """

    function: str
    file: str | None
    line: int | None


@dataclass(frozen=True)
class Location:
    """The symbolic location of ``address``.

    - ``symbol``/``offset``/``function_start``: the function (ELF ``STT_FUNC``/label, STABS
      ``N_FUN`` or DWARF subprogram) containing ``address``; ``offset = address -
      function_start``. ``symbol`` is None when nothing covers the address.
    - ``file``/``line``: the line-table row for ``address`` (None when there is none).
    - ``function``: the innermost function by debug info, which differs from ``symbol`` when
      the address lies in inlined code (``addr2line -f`` prints this one).
    - ``inlined_into``: the calls around inlined code, innermost first; empty when not inlined.
    - ``narg``: STABS ``N_PSYM`` parameter count of the function (JOS ``eip_fn_narg``).
    - ``elf``: path of the ELF that resolved it; ``bias`` its load bias.
    - ``source``: which table answered: ``"dwarf"``, ``"stabs"`` or ``"symtab"``.

    (No ``__slots__``: bulk lookups fill ``__dict__`` directly, four times faster than
    ``__init__``; see ``kdiag.symbols.symbolizer._locate_many``. Still immutable.)
    """

    address: int
    symbol: str | None
    offset: int
    file: str | None
    line: int | None
    elf: str
    function_start: int | None
    inlined_into: tuple[InlinedCall, ...] = ()
    function: str | None = None
    narg: int | None = None
    bias: int = 0
    source: str = "symtab"

    def frames(self) -> list[InlinedCall]:
        """``addr2line -i`` order: the innermost function at its line, then each caller."""
        name = self.function or self.symbol or "??"
        out = [InlinedCall(name, self.file, self.line)]
        out.extend(self.inlined_into)
        return out

    def short(self) -> str:
        """``symbol+0xoff (file:line)``; the one-line form used in messages."""
        text = f"{self.symbol}+{self.offset:#x}" if self.symbol else f"{self.address:#x}"
        if self.file:
            text += f" ({self.file}:{self.line if self.line is not None else '?'})"
        return text
