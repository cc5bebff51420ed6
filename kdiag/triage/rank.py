"""Ranking: a pure step over the causes the rules found (no rule knows about the others).

Order: first the *root* causes (they explain the first fault of the chain) that are at least
``ROOT_FLOOR`` confident, then everything else (escalation: why the fault became a double or
triple fault; context; weak root guesses); inside each group by confidence, then by the order
the rules ran in. A kernel that has not loaded its IDT yet and dereferences NULL gets
``null-pointer`` first and ``idt-missing`` second: the first is the bug that fired, the second
why it killed the machine. When the first fault is itself a failed IDT access (an IRQ with no
IDT), ``idt-missing`` is the root cause and comes first.
"""

from __future__ import annotations

from kdiag.triage.model import Cause

ROOT_FLOOR = 0.6
MAX_PER_ID = 3


def _group(c: Cause) -> int:
    return 0 if c.role == "root" and c.confidence >= ROOT_FLOOR else 1


def rank(causes: list[Cause]) -> list[Cause]:
    """Rank ``causes`` (see the module docstring). Exact duplicates (same id and summary) keep
    the most confident; at most ``MAX_PER_ID`` causes per id survive."""
    best: dict[tuple[str, str], tuple[int, Cause]] = {}
    for i, c in enumerate(causes):
        key = (c.id, c.summary)
        if key not in best or best[key][1].confidence < c.confidence:
            best[key] = (i, c)
    ordered = sorted(best.values(), key=lambda ic: (_group(ic[1]), -ic[1].confidence, ic[0]))
    out: list[Cause] = []
    per_id: dict[str, int] = {}
    for _, c in ordered:
        n = per_id.get(c.id, 0)
        if n >= MAX_PER_ID:
            continue
        per_id[c.id] = n + 1
        out.append(c)
    return out
