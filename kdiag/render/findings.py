"""Findings (``kdiag.machine.checks.Finding``) as text lines and JSON, shared by every topic."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from kdiag.machine.checks import Finding

Symbolizer = Callable[[int], "str | None"]


def hexs(value: int) -> str:
    """JSON form of an address or raw value: ``"0x..."`` (lower-case, no padding)."""
    return f"{value:#x}"


def findings_to_text(findings: Sequence[Finding]) -> str:
    """``warning [star-sysret]: message`` followed by indented evidence lines."""
    lines = []
    for f in findings:
        lines.append(f"{f.severity} [{f.id}]: {f.message}")
        lines.extend(f"    {e}" for e in f.evidence)
    return "\n".join(lines)


def findings_to_json(findings: Iterable[Finding]) -> list[dict[str, object]]:
    return [f.to_dict() for f in findings]


def flagged(findings: Iterable[Finding], table: str) -> dict[int | str, list[str]]:
    """Row key -> ids of the findings that reference it (for the ``!`` markers)."""
    out: dict[int | str, list[str]] = {}
    for f in findings:
        for t, key in f.refs:
            if t == table and f.id not in out.setdefault(key, []):
                out[key].append(f.id)
    return out


def symbol_suffix(symbolize: Symbolizer | None, addr: int) -> str | None:
    if symbolize is None:
        return None
    try:
        return symbolize(addr)
    except Exception:  # a symbolizer must never break a table
        return None


def symbol_of_stack_top(symbolize: Symbolizer | None, top: int) -> str | None:
    """Name a stack *top* (one past the last byte) by the object it ends: ``kstacks+0x19000``.

    Symbolizing the top itself would name whatever object follows the stack.
    """
    if not top:
        return None
    inner = symbol_suffix(symbolize, top - 1)
    if inner is None:
        return None
    name, plus, off = inner.partition("+")
    try:
        return f"{name}+{int(off, 16) + 1:#x}" if plus else f"{name}+0x1"
    except ValueError:
        return None
