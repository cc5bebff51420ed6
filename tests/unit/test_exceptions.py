"""Vector table and error-code decoders (SDM Vol. 3A 6.13, 6.15, 4.7; QEMU vector*16+2 quirk)."""

from __future__ import annotations

import pytest

from kdiag.x86.exceptions import (
    VECTORS,
    ExceptionClass,
    PageFaultCode,
    SelectorErrorCode,
    decode_error_code,
    decode_page_fault_error,
    decode_selector_error,
    double_fault_result,
    has_error_code,
    mnemonic,
    vector_info,
)


def test_table_is_complete_and_ordered() -> None:
    assert len(VECTORS) == 32
    assert all(v.number == i for i, v in enumerate(VECTORS))


@pytest.mark.parametrize("vec,mn,err,cls", [
    (0, "#DE", False, ExceptionClass.CONTRIBUTORY),
    (6, "#UD", False, ExceptionClass.BENIGN),
    (8, "#DF", True, ExceptionClass.DOUBLE_FAULT),
    (10, "#TS", True, ExceptionClass.CONTRIBUTORY),
    (11, "#NP", True, ExceptionClass.CONTRIBUTORY),
    (12, "#SS", True, ExceptionClass.CONTRIBUTORY),
    (13, "#GP", True, ExceptionClass.CONTRIBUTORY),
    (14, "#PF", True, ExceptionClass.PAGE_FAULT),
    (17, "#AC", True, ExceptionClass.BENIGN),
    (21, "#CP", True, ExceptionClass.CONTRIBUTORY),
])
def test_vector_rows(vec: int, mn: str, err: bool, cls: ExceptionClass) -> None:
    v = vector_info(vec)
    assert (v.mnemonic, v.has_error_code, v.cls) == (mn, err, cls)
    assert has_error_code(vec) is err


def test_interrupt_vectors() -> None:
    assert mnemonic(0x20) == "INT 0x20"
    assert vector_info(0x80).cls is ExceptionClass.INTERRUPT
    assert not has_error_code(0x80)
    assert mnemonic(300) == "vector 300"
    with pytest.raises(ValueError):
        vector_info(256)


@pytest.mark.parametrize("first,second,result", [
    (14, 13, "double-fault"), (14, 14, "double-fault"), (13, 13, "double-fault"),
    (13, 14, "serial"), (6, 13, "serial"), (8, 13, "triple-fault"), (8, 14, "triple-fault"),
    (0x20, 13, "serial"), (0, 10, "double-fault"), (8, 6, "serial"),
])
def test_double_fault_table(first: int, second: int, result: str) -> None:
    assert double_fault_result(first, second) == result


@pytest.mark.parametrize("raw,flags,text", [
    (0x0000, [], "not-present page, read from supervisor mode"),
    (0x0002, ["W"], "not-present page, write from supervisor mode"),
    (0x0005, ["P", "U"], "protection violation, read from user mode"),
    (0x0011, ["P", "I"], "protection violation, instruction fetch from supervisor mode"),
    (0x0008, ["RSVD"], "not-present page, read from supervisor mode, reserved bit"),
    (0x8000, ["SGX"], "not-present page, read from supervisor mode, SGX"),
    (0x0067, ["P", "W", "U", "PK", "SS"], None),
])
def test_page_fault_code(raw: int, flags: list[str], text: str | None) -> None:
    pf = decode_page_fault_error(raw)
    assert pf.flag_names == flags
    assert pf.raw == raw
    if text:
        assert pf.describe() == text
    assert pf.to_json()["raw"] == hex(raw)


def test_page_fault_bits() -> None:
    pf = decode_page_fault_error(0x1F)
    assert pf.present and pf.write and pf.user and pf.rsvd and pf.fetch
    assert not pf.pk and not pf.ss and not pf.sgx


@pytest.mark.parametrize("raw,long_mode,table,vector,selector", [
    (0x0062, True, "IDT", 0x06, None),     # QEMU 7.2 long mode: #UD gate beyond IDT limit
    (0x0202, True, "IDT", 0x20, None),     # IRQ 0x20 gate not present (real log lm64-timer-np)
    (0x0802, True, "IDT", 0x80, None),     # int 0x80 beyond limit (real log lm64-int80-limit)
    (0x0032, False, "IDT", 0x06, None),    # 32-bit: architectural 6*8+2 (real log pm32-ud-idt0)
    (0x0103, False, "IDT", 0x20, None),    # EXT + IDT, vector 0x20
    (0x0048, False, "GDT", None, 0x48),    # selector 0x48 (real log pm32-gdt-sel)
    (0x0048, True, "GDT", None, 0x48),
    (0x001C, False, "LDT", None, 0x1C),
    (0x0000, True, "GDT", None, 0x0),
])
def test_selector_code(raw: int, long_mode: bool, table: str, vector: int | None,
                       selector: int | None) -> None:
    sc = decode_selector_error(raw, long_mode=long_mode)
    assert sc.table == table
    assert sc.idt_vector() == vector
    if selector is not None:
        assert sc.selector == selector
    assert sc.to_json()["raw"] == hex(raw)


def test_selector_code_arch_reading_without_quirk() -> None:
    sc = decode_selector_error(0x0062, long_mode=True, qemu_quirk=False)
    assert sc.idt_vector() == 0x0C
    assert sc.index == 0x0C


def test_selector_describe() -> None:
    assert "QEMU long-mode" in decode_selector_error(0x62, long_mode=True).describe()
    assert decode_selector_error(0).describe().startswith("0 ")
    assert "GDT selector 0x0048" in decode_selector_error(0x48).describe()
    assert "EXT" in decode_selector_error(0x49).describe()


def test_decode_error_code_dispatch() -> None:
    assert isinstance(decode_error_code(14, 2), PageFaultCode)
    assert isinstance(decode_error_code(13, 0x62, long_mode=True), SelectorErrorCode)
    assert decode_error_code(8, 0) is None
    assert decode_error_code(6, 0) is None
