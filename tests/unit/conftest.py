"""Fixtures shared by the unit-test modules that ask for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdiag.symbols import symbolizer


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty symbol-index cache (KDIAG_CACHE_DIR) and no in-memory indexes."""
    d = tmp_path / "kcache"
    monkeypatch.setenv("KDIAG_CACHE_DIR", str(d))
    symbolizer._memory.clear()
    return d
