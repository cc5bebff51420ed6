"""The Target protocol and the backends that need no transport (fake, QEMU core dump)."""

from kdiag.target.base import Target

__all__ = ["Target"]
