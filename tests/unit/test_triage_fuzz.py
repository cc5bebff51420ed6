"""Fuzz: mutated real logs never raise anything but InputError and never hang."""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdiag.errors import InputError
from kdiag.qemulog.parser import parse_stream
from kdiag.qemulog.regdump import parse_dump
from kdiag.render.triage import to_json, to_text
from kdiag.triage.engine import triage_stream

LOGS = Path(__file__).resolve().parent.parent / "golden" / "logs"
SOURCES = [(LOGS / n).read_bytes() for n in (
    "lm64-idt0-pf.log", "lm64-user-rsp0.log", "pm32-ud-idt0.log", "lm64-timer-np.log",
    "lm64-idt0-pf.reset-only-reboot.log", "i386-pagefault.smp2.log")]
# keep the interesting tail small so each example is fast
TAILS = [s[-12000:] for s in SOURCES]

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 11999), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, 11999), st.integers(0, 0)),
    st.tuples(st.just("dropline"), st.integers(0, 400), st.integers(0, 0)),
    st.tuples(st.just("dupline"), st.integers(0, 400), st.integers(0, 0)),
    st.tuples(st.just("hexnoise"), st.integers(0, 11999), st.integers(0, 15)),
)


def _mutate(data: bytes, muts: list[tuple[str, int, int]]) -> bytes:
    for kind, a, b in muts:
        if not data:
            break
        if kind == "flip":
            i = a % len(data)
            data = data[:i] + bytes([b]) + data[i + 1:]
        elif kind == "cut":
            data = data[:a % (len(data) + 1)]
        elif kind in ("dropline", "dupline"):
            lines = data.split(b"\n")
            i = a % len(lines)
            lines = lines[:i] + lines[i + 1:] if kind == "dropline" else \
                lines[:i] + [lines[i]] + lines[i:]
            data = b"\n".join(lines)
        else:
            i = a % len(data)
            if chr(data[i]) in "0123456789abcdef":
                data = data[:i] + b"0123456789abcdef"[b:b + 1] + data[i + 1:]
    return data


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(src=st.integers(0, len(TAILS) - 1), muts=st.lists(mutation, min_size=1, max_size=8))
def test_mutated_logs(src: int, muts: list[tuple[str, int, int]]) -> None:
    data = _mutate(TAILS[src], muts)
    try:
        diag = triage_stream(io.BytesIO(data), "fuzz.log")
    except InputError:
        return
    assert diag.outcome in ("triple-fault", "exception", "reset", "clean")
    to_text(diag)
    to_json(diag)


@settings(max_examples=100, deadline=1000)
@given(st.binary(max_size=3000))
def test_random_bytes(data: bytes) -> None:
    try:
        triage_stream(io.BytesIO(data), "rand.log")
    except InputError:
        pass


@settings(max_examples=100, deadline=1000)
@given(st.text(alphabet="0123456789abcdefRAXIPCSEFGDT=:x \n-", max_size=2000))
def test_dump_and_record_lines_from_text(text: str) -> None:
    parse_dump(text)
    list(parse_stream(io.BytesIO(text.encode())))
