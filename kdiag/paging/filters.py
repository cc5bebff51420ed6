"""Which mappings a dump keeps: the filter vocabulary of ``kd pt`` / ``kdiag pt``.

Every criterion is optional and they combine with AND. Criteria on rights are checked twice:
``prunes`` rejects a whole subtree at an upper level when its ANDed rights already rule out
every page below it (a read-only PDPTE under ``--writable``, an XD PML4E under
``--executable``, a supervisor PDE under ``--user``), and ``matches`` decides for each page.
The VA range prunes subtrees that do not intersect it. ``contains`` is applied to the merged
ranges (the range holding the address, whole).
"""

from __future__ import annotations

from dataclasses import dataclass

from kdiag.errors import UsageError
from kdiag.x86.pat import MemoryType


@dataclass(frozen=True)
class PageFilter:
    """Dump filters. ``None`` means "don't care".

    ``writable``/``executable``/``user``: True keeps only pages with that right, False only
    pages without it (``user=False`` is "supervisor only"). ``wx`` keeps writable AND executable
    pages. ``memtypes`` keeps pages whose PAT memory type is one of these. ``va_start``/
    ``va_end`` is a half-open linear range ``[start, end)``; ``contains`` a single address.
    """

    writable: bool | None = None
    executable: bool | None = None
    user: bool | None = None
    wx: bool = False
    memtypes: frozenset[MemoryType] | None = None
    va_start: int | None = None
    va_end: int | None = None
    contains: int | None = None

    def __post_init__(self) -> None:
        if (self.va_start is not None and self.va_end is not None
                and self.va_end <= self.va_start):
            raise UsageError(f"empty VA range {self.va_start:#x}-{self.va_end:#x}")

    @property
    def empty(self) -> bool:
        return self == PageFilter()

    @property
    def has_va_range(self) -> bool:
        return self.va_start is not None or self.va_end is not None

    def matches(self, writable: bool, user: bool, executable: bool,
                memtype: MemoryType | None) -> bool:
        """True when a page with these effective rights and memory type passes."""
        if self.writable is not None and writable != self.writable:
            return False
        if self.executable is not None and executable != self.executable:
            return False
        if self.user is not None and user != self.user:
            return False
        if self.wx and not (writable and executable):
            return False
        return self.memtypes is None or memtype in self.memtypes

    def prunes(self, writable: bool, user: bool, nx: bool) -> bool:
        """True when no page below an entry with these ANDed/ORed rights can pass."""
        if (self.writable or self.wx) and not writable:
            return True
        if (self.executable or self.wx) and nx:
            return True
        return bool(self.user) and not user

    def overlaps(self, start: int, end: int) -> bool:
        """True when ``[start, end)`` intersects the VA range (always without one)."""
        if self.va_start is not None and end <= self.va_start:
            return False
        return not (self.va_end is not None and start >= self.va_end)

    def describe(self) -> str:
        """Short text of the active criteria ("" when none)."""
        parts = []
        for name, val in (("writable", self.writable), ("executable", self.executable)):
            if val is not None:
                parts.append(name if val else f"not {name}")
        if self.user is not None:
            parts.append("user" if self.user else "supervisor")
        if self.wx:
            parts.append("W+X")
        if self.memtypes:
            parts.append("type " + "/".join(sorted(m.label for m in self.memtypes)))
        if self.has_va_range:
            lo = self.va_start or 0
            hi = "end" if self.va_end is None else f"{self.va_end:#x}"
            parts.append(f"VA {lo:#x}-{hi}")
        if self.contains is not None:
            parts.append(f"containing {self.contains:#x}")
        return ", ".join(parts)


def parse_memtypes(text: str) -> frozenset[MemoryType]:
    """Parse ``WB,WC`` (comma/space separated) into memory types; UsageError on a bad name."""
    out = set()
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        try:
            out.add(MemoryType.from_label(part))
        except ValueError as err:
            raise UsageError(str(err)) from None
    if not out:
        raise UsageError("no memory type given")
    return frozenset(out)


def parse_va_range(text: str) -> tuple[int, int]:
    """Parse ``START-END`` (END exclusive), ``START+SIZE`` or ``START..END`` into a range."""
    t = text.strip().replace("_", "")
    for sep, is_size in (("..", False), ("+", True), ("-", False)):
        if sep in t:
            a, b = t.split(sep, 1)
            try:
                start, second = int(a, 0), int(b, 0)
            except ValueError:
                break
            end = start + second if is_size else second
            if end <= start:
                raise UsageError(f"empty VA range {text!r}")
            return start, end
    raise UsageError(f"bad VA range {text!r}: use START-END, START+SIZE (C-style numbers)")
