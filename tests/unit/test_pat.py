"""IA32_PAT decoding and the PAT/PCD/PWT -> memory type selection (SDM Vol. 3A 12.12)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdiag.errors import InputError
from kdiag.x86.pat import (
    PAT_MSR,
    POWER_ON_PAT,
    MemoryType,
    decode_pat,
    encode_pat,
    is_valid_pat,
    memory_type,
    pat_index,
)

UC, WC, WT, WP, WB, UCM = (MemoryType.UC, MemoryType.WC, MemoryType.WT, MemoryType.WP,
                           MemoryType.WB, MemoryType.UC_MINUS)


def test_encodings_are_the_sdm_values() -> None:
    assert [int(m) for m in (UC, WC, WT, WP, WB, UCM)] == [0, 1, 4, 5, 6, 7]
    assert PAT_MSR == 0x277


def test_power_on_default() -> None:
    assert POWER_ON_PAT == 0x0007040600070406
    assert decode_pat(POWER_ON_PAT) == (WB, WT, UCM, UC, WB, WT, UCM, UC)


@pytest.mark.parametrize("raw, expected", [
    # Linux x86 PAT: WB WC UC- UC WB WP UC- WT
    (0x0407050600070106, (WB, WC, UCM, UC, WB, WP, UCM, WT)),
    # the probe kernel's value (qemu-gdb-facts section 4)
    (0x0007050100070406, (WB, WT, UCM, UC, WC, WP, UCM, UC)),
    (0, (UC,) * 8),
    (0x0606060606060606, (WB,) * 8),
])
def test_decode_pinned(raw: int, expected: tuple[MemoryType, ...]) -> None:
    assert decode_pat(raw) == expected
    assert encode_pat(expected) == raw


@pytest.mark.parametrize("raw", [0x02, 0x0300, 0x08 << 56, 0xFF, -1, 1 << 64])
def test_reserved_encodings_rejected(raw: int) -> None:
    assert not is_valid_pat(raw)
    with pytest.raises(InputError):
        decode_pat(raw)


def test_reserved_entry_is_named() -> None:
    with pytest.raises(InputError, match="PA3"):
        decode_pat(0x0200_0000 | 0x06)


@given(st.lists(st.sampled_from(list(MemoryType)), min_size=8, max_size=8))
def test_round_trip(types: list[MemoryType]) -> None:
    raw = encode_pat(types)
    assert is_valid_pat(raw)
    assert decode_pat(raw) == tuple(types)


@pytest.mark.parametrize("pat, pcd, pwt, index", [
    (0, 0, 0, 0), (0, 0, 1, 1), (0, 1, 0, 2), (0, 1, 1, 3),
    (1, 0, 0, 4), (1, 0, 1, 5), (1, 1, 0, 6), (1, 1, 1, 7),
])
def test_index(pat: int, pcd: int, pwt: int, index: int) -> None:
    assert pat_index(pat, pcd, pwt) == index


def test_memory_type_with_default_and_wc_pat() -> None:
    assert memory_type(POWER_ON_PAT, 0, 0, 0) is WB
    assert memory_type(POWER_ON_PAT, 0, 1, 1) is UC
    assert memory_type(POWER_ON_PAT, 1, 0, 1) is WT
    wc_pat = 0x0007050100070406  # PA4 = WC
    assert memory_type(wc_pat, 1, 0, 0) is WC
    assert memory_type(decode_pat(wc_pat), True, False, False) is WC


@pytest.mark.parametrize("text, mt", [("wb", WB), ("UC-", UCM), ("uc_minus", UCM), ("WC", WC),
                                      ("uc", UC)])
def test_labels(text: str, mt: MemoryType) -> None:
    assert MemoryType.from_label(text) is mt
    assert MemoryType.from_label(mt.label) is mt


def test_unknown_label() -> None:
    with pytest.raises(ValueError, match="unknown memory type"):
        MemoryType.from_label("XX")
