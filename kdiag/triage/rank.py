"""Ranking: a pure step over the causes the rules found (no rule knows about the others)."""

from __future__ import annotations

from kdiag.triage.model import Cause

ROLE_ORDER = {"root": 0, "escalation": 1, "context": 2}
MAX_PER_ID = 3


def rank(causes: list[Cause]) -> list[Cause]:
    """Most likely first: by confidence, then root causes before escalation/context ones, then
    the order the rules ran in. Exact duplicates (same id and summary) keep the most confident;
    at most ``MAX_PER_ID`` causes per id survive."""
    best: dict[tuple[str, str], tuple[int, Cause]] = {}
    for i, c in enumerate(causes):
        key = (c.id, c.summary)
        if key not in best or best[key][1].confidence < c.confidence:
            best[key] = (i, c)
    ordered = sorted(best.values(),
                     key=lambda ic: (-ic[1].confidence, ROLE_ORDER.get(ic[1].role, 3), ic[0]))
    out: list[Cause] = []
    per_id: dict[str, int] = {}
    for _, c in ordered:
        n = per_id.get(c.id, 0)
        if n >= MAX_PER_ID:
            continue
        per_id[c.id] = n + 1
        out.append(c)
    return out
