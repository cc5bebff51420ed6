"""Chain reconstruction and tail reading on real logs and on variants built from them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from kdiag.errors import InputError
from kdiag.qemulog.parser import from_path, parse_stream
from kdiag.triage.chain import analyze_records
from kdiag.triage.engine import triage_path, triage_stream

LOGS = Path(__file__).resolve().parent.parent / "golden" / "logs"


def _chain(name: str):  # type: ignore[no-untyped-def]
    return analyze_records(from_path(LOGS / name))


def _kinds(chain) -> list[str]:  # type: ignore[no-untyped-def]
    return [f"{e.kind}:{e.mnemonic}" for e in chain.events]


@pytest.mark.parametrize("name,outcome,kinds,trigger,first", [
    ("lm64-idt0-pf.log", "triple-fault",
     ["exception:#PF", "folded:#GP", "exception:#DF", "folded:#GP", "triple-fault:triple fault"],
     None, "#PF"),
    ("lm64-idt0-ud.log", "triple-fault",
     ["exception:#UD", "exception:#GP", "folded:#GP", "exception:#DF", "folded:#GP",
      "triple-fault:triple fault"], None, "#UD"),
    ("lm64-stack-ovf.log", "triple-fault",
     ["exception:#PF", "folded:#PF", "exception:#DF", "folded:#PF", "triple-fault:triple fault"],
     None, "#PF"),
    ("lm64-user-rsp0.log", "triple-fault",
     ["int:INT 0x80", "exception:#PF", "folded:#PF", "exception:#DF", "folded:#PF",
      "triple-fault:triple fault"], "INT 0x80", "#PF"),
    ("lm64-int80-limit.log", "triple-fault",
     ["int:INT 0x80", "exception:#GP", "exception:#PF", "folded:#PF", "exception:#DF",
      "folded:#PF", "triple-fault:triple fault"], "INT 0x80", "#GP"),
    ("lm64-timer-np.log", "exception", ["irq:INT 0x20", "exception:#NP"], "INT 0x20", "#NP"),
    ("lm64-ud-handled.log", "exception", ["exception:#UD"], None, "#UD"),
    ("pm32-div.log", "exception", ["exception:#DE"], None, "#DE"),
    ("pm32-ud-idt0.log", "triple-fault",
     ["exception:#UD", "exception:#GP", "folded:#GP", "exception:#DF", "folded:#GP",
      "triple-fault:triple fault"], None, "#UD"),
])
def test_chains(name: str, outcome: str, kinds: list[str], trigger: str | None,
                first: str) -> None:
    ch = _chain(name)
    assert ch.outcome == outcome
    assert _kinds(ch) == kinds
    assert (ch.trigger.mnemonic if ch.trigger else None) == trigger
    assert ch.first_fault is not None and ch.first_fault.mnemonic == first
    assert ch.complete
    assert ch.decisive is not None and ch.decisive.complete


def test_int_only_log_infers_triple_fault() -> None:
    ch = _chain("lm64-idt0-pf.int-only.log")
    assert ch.outcome == "triple-fault"
    assert any("no `Triple fault` line" in n for n in ch.notes)
    assert not ch.has_reset_records


def test_reset_dump_only() -> None:
    ch = _chain("lm64-idt0-pf.reset-only-reboot.log")
    assert ch.outcome == "triple-fault" and ch.first_fault is None
    assert ch.reset is not None and not ch.reset.power_on
    assert ch.decisive_source == "cpu-reset"
    assert ch.resets_before >= 1


def test_reset_only_noreboot_has_no_state() -> None:
    ch = _chain("lm64-idt0-pf.reset-only-noreboot.log")
    assert ch.outcome == "triple-fault" and ch.decisive is None and ch.reset is None


def test_reboot_loop_counts_earlier_triple_faults() -> None:
    data = (LOGS / "lm64-idt0-pf.reboot-loop.log").read_text()
    ch = _chain("lm64-idt0-pf.reboot-loop.log")
    assert ch.records_after == 0
    assert ch.resets_before == data.count("Triple fault") - 1
    assert len(ch.earlier_faults) == ch.resets_before


def test_guest_reset_outcome() -> None:
    # a CPU Reset that follows no triple fault, with a non-power-on state: the guest asked
    data = (LOGS / "pm32-div.log").read_bytes()
    dump = data[data.index(b"EIP=00100040") - 80:]
    dump = dump[dump.index(b"\n") + 1:]
    text = data + b"CPU Reset (CPU 0)\n" + dump
    ch = analyze_records(list(parse_stream(io.BytesIO(text))))
    assert ch.outcome == "reset" and ch.reset is not None


def test_foreign_cpu_record_interleaved() -> None:
    data = (LOGS / "lm64-idt0-pf.log").read_text()
    foreign = ("Servicing hardware INT=0x20\n"
               "     7: v=20 e=0000 i=0 cpl=0 IP=0018:0000000000200000 pc=0000000000200000 "
               "SP=0010:0000000000300000 env->regs[R_EAX]=0000000000000000\n")
    i = data.index("check_exception old: 0xe new 0xd")
    text = data[:i] + foreign + data[i:]
    ch = analyze_records(list(parse_stream(io.BytesIO(text.encode()))))
    assert ch.outcome == "triple-fault"
    assert [e.mnemonic for e in ch.events if e.kind == "exception"] == ["#PF", "#DF"]


def test_handled_exception_then_running_is_clean() -> None:
    data = (LOGS / "lm64-timer-np.log").read_text()
    # the last timer record again, at many different IPs: the guest went on running
    extra = "".join(
        f"Servicing hardware INT=0x20\n   {k:3d}: v=20 e=0000 i=0 cpl=0 IP=0018:{0x100000 + k:016x}"
        f" pc={0x100000 + k:016x} SP=0010:000000000010e000 env->regs[R_EAX]=0000000000000000\n"
        for k in range(5))
    ch = analyze_records(list(parse_stream(io.BytesIO((data + extra).encode()))))
    assert ch.outcome == "clean"
    assert any("was handled" in n for n in ch.notes)


# ---- the engine's tail reading ------------------------------------------------------------


class CountingIO(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, n: int | None = -1) -> bytes:  # type: ignore[override]
        out = super().read(n)
        self.bytes_read += len(out)
        return out

    def fileno(self) -> int:
        raise OSError("not a file")


def _timer_record() -> bytes:
    data = (LOGS / "lm64-timer-np.log").read_bytes()
    a = data.index(b"Servicing hardware INT=0x20")
    b = data.index(b"Servicing hardware INT=0x20", a + 10)
    return data[a:b]


def _fatal_tail() -> bytes:
    data = (LOGS / "lm64-idt0-pf.log").read_bytes()
    return data[data.index(b"check_exception old: 0xffffffff new 0xe"):]


def test_big_log_is_read_from_the_end() -> None:
    rec = _timer_record()
    body = rec * (8 * 1024 * 1024 // len(rec))
    f = CountingIO(body + _fatal_tail())
    diag = triage_stream(f, "big.log")
    assert diag.outcome == "triple-fault"
    assert diag.chain.first_fault is not None and diag.chain.first_fault.mnemonic == "#PF"
    assert f.bytes_read < 1 << 20  # only the tail window
    assert diag.scanned_bytes is not None and diag.scanned_bytes < 1 << 20
    assert diag.chain.first_fault.pos is not None and diag.chain.first_fault.pos.line is None
    assert not diag.resets_before_exact


def test_clean_tail_finds_earlier_triple_fault_by_byte_search(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import kdiag.triage.engine as engine

    monkeypatch.setattr(engine, "MAX_WINDOW", 1 << 20)
    rec = _timer_record()
    head = (LOGS / "lm64-idt0-pf.log").read_bytes()
    body = rec * (3 * 1024 * 1024 // len(rec))  # beyond the largest tail window
    diag = triage_stream(io.BytesIO(head + body), "x.log")
    assert diag.outcome == "triple-fault"
    assert any("rebooted" in n for n in diag.notes)


def test_count_all_resets() -> None:
    loop = (LOGS / "lm64-idt0-pf.reboot-loop.log").read_bytes()
    rec = _timer_record()
    body = rec * (2 * 1024 * 1024 // len(rec))
    data = loop + body + _fatal_tail()
    d1 = triage_stream(io.BytesIO(data), "x.log")
    d2 = triage_stream(io.BytesIO(data), "x.log", count_all_resets=True)
    assert not d1.resets_before_exact and d2.resets_before_exact
    assert d2.resets_before == loop.count(b"\nTriple fault")
    assert d1.resets_before <= d2.resets_before


@pytest.mark.parametrize("data,msg", [
    (b"\x7fELF\x02\x01\x01" + bytes(5000), "binary"),
    (b"hello world\nthis is not qemu\n" * 50, "no QEMU -d records"),
    (b"", "empty"),
])
def test_unusable_input(data: bytes, msg: str) -> None:
    with pytest.raises(InputError, match=msg):
        triage_stream(io.BytesIO(data), "bad.log")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        triage_path(tmp_path / "nope.log")


@pytest.mark.parametrize("cut", [100, 5000, 21000, 21300, 22000, 23000, 23500])
def test_truncated_logs_never_crash(cut: int) -> None:
    data = (LOGS / "lm64-idt0-pf.log").read_bytes()[:cut]
    try:
        diag = triage_stream(io.BytesIO(data), "cut.log")
    except InputError:
        return
    assert diag.outcome in ("triple-fault", "exception", "reset", "clean")
