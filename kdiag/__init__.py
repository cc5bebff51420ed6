"""kdiag: make the machine state of an x86 kernel under QEMU readable, and explain its crashes.

The engine is pure Python and never imports ``gdb``. Layers (import direction, left to right):
``kdiag.x86`` (pure decoders) <- ``kdiag.paging``, ``kdiag.qemulog``, ``kdiag.symbols``
<- ``kdiag.triage`` <- ``kdiag.render`` <- (``kdiag.cli``, ``gdbext``, ``qmp_tools``).
"""

from __future__ import annotations

__version__ = "0.1.0"
