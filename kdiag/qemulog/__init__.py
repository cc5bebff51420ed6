"""Streaming parser of QEMU ``-d int,cpu_reset`` logs and register dumps into typed records.

- :mod:`kdiag.qemulog.regdump`: one register dump (``-d`` or HMP ``info registers``) -> CpuState.
- :mod:`kdiag.qemulog.records`: the record types.
- :mod:`kdiag.qemulog.parser`: lines -> records, lazily; :mod:`kdiag.qemulog.tail` reads a large
  log from its end.
"""

from __future__ import annotations

from kdiag.qemulog.regdump import parse_register_dump

__all__ = ["parse_register_dump"]
