"""What a symbolized address is: :class:`Location` (and the inlined calls around it).

A ``Location`` says, for one code address, which ELF symbol holds it (``symbol`` + ``offset``
from ``function_start``), which source line the line table gives (``file``/``line``, DWARF
``.debug_line`` or STABS ``N_SLINE``), and, where DWARF records inlining, the chain of calls
the inlined code sits in. ``addr2line -f -i -e ELF ADDR`` prints the same facts; ``frames()``
lists them in its order (innermost function first).
"""

from __future__ import annotations

# Hand-written value classes, not dataclasses (importing dataclasses - inspect, ast, ... - was a
# fifth of a warm `kdiag symbolize` process) nor kdiag._record (which compiles an __init__ per
# class at import, a millisecond each): the same behaviour - keyword or positional
# construction, equality and hash over the fields, dataclass-style repr, read-only.


class _Value:
    __slots__ = ()
    _FIELDS: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, n) for n in self._FIELDS)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._FIELDS)
        return f"{type(self).__qualname__}({inner})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a read-only "
                             f"{type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a read-only "
                             f"{type(self).__name__}")


class InlinedCall(_Value):
    """One enclosing call of inlined code: the caller ``function`` and the call site in it.

    DWARF: ``DW_TAG_inlined_subroutine`` ``DW_AT_call_file``/``DW_AT_call_line`` give the call
    site; the caller is the enclosing subprogram or inlined subroutine (DWARF 5, 3.3.8.2).
    """

    __slots__ = ("function", "file", "line")
    _FIELDS = __slots__
    __match_args__ = ("function", "file", "line")
    function: str
    file: str | None
    line: int | None

    def __init__(self, function: str, file: str | None, line: int | None) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "function", function)
        setattr_(self, "file", file)
        setattr_(self, "line", line)


class Location(_Value):
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
    ``__init__``, and leave fields at their defaults to the class attributes; see
    ``kdiag.symbols.symbolizer._sweep``. Still read-only.)
    """

    __match_args__ = ("address", "symbol", "offset", "file", "line", "elf", "function_start",
                      "inlined_into", "function", "narg", "bias", "source")
    _FIELDS = __match_args__
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

    def __init__(self, address: int, symbol: str | None, offset: int, file: str | None,
                 line: int | None, elf: str, function_start: int | None,
                 inlined_into: tuple[InlinedCall, ...] = (), function: str | None = None,
                 narg: int | None = None, bias: int = 0, source: str = "symtab") -> None:
        self.__dict__.update(address=address, symbol=symbol, offset=offset, file=file,
                             line=line, elf=elf, function_start=function_start,
                             inlined_into=inlined_into, function=function, narg=narg,
                             bias=bias, source=source)

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
