"""The kdiag error tree. Every error kdiag raises on purpose derives from :class:`KdiagError`.

::

    KdiagError                      root; ``str(err)`` is the one-line message shown to the user
     +-- UsageError                 bad arguments (CLI exit 2)
     +-- InputError                 unusable input: truncated/foreign log, corrupt ELF (exit 2)
     +-- TargetError                a Target could not answer
     |    +-- MemoryReadError       physical/virtual read failed (carries ``addr``, ``size``)
     |    +-- TranslationError      a virtual address has no translation (carries ``va``)
     |    +-- MsrUnavailable        the backend cannot read this MSR here (carries ``msr``)
     |    +-- TargetGone            QEMU/gdb died or the connection closed mid-command
     +-- ToolMissing                a required host program/package is absent (names the package)
     +-- BuildError                 building the bundled kernel failed
     +-- LaunchError                QEMU could not be started (port in use, bad option)

Errors carry their evidence as attributes and are raised ``from`` the underlying error.
"""

from __future__ import annotations


class KdiagError(Exception):
    """Root of all deliberate kdiag errors. The message is one line, fit for ``kdiag: error: ...``."""

    exit_code = 2


class UsageError(KdiagError):
    """The user asked for something malformed (bad option value, unknown name)."""


class InputError(KdiagError):
    """The input (log, ELF, core dump) is unusable: truncated, foreign or corrupt."""


class TargetError(KdiagError):
    """A Target backend could not answer a request."""


class MemoryReadError(TargetError):
    """A memory read failed. ``addr``/``size`` name the range; ``physical`` tells which space."""

    def __init__(self, message: str, addr: int = 0, size: int = 0, physical: bool = True) -> None:
        super().__init__(message)
        self.addr = addr
        self.size = size
        self.physical = physical


class TranslationError(TargetError):
    """A virtual address does not translate (not present, non-canonical, reserved bits)."""

    def __init__(self, message: str, va: int = 0, level: str | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.va = va
        self.level = level  # paging level where the walk stopped ("PML4", "PT", ...), if any
        self.reason = reason  # kdiag.paging.walker.StopReason value, e.g. "not-present"


class MsrUnavailable(TargetError):
    """The backend cannot read MSR ``msr`` in the current state (e.g. CPL3, no injection)."""

    def __init__(self, message: str, msr: int = 0) -> None:
        super().__init__(message)
        self.msr = msr


class TargetGone(TargetError):
    """The QEMU process or debugger connection went away in the middle of a request."""


class ToolMissing(KdiagError):
    """A host tool is missing; the message names the Debian package that provides it."""


class BuildError(KdiagError):
    """Building the bundled kernel failed; the message carries the last compiler lines."""


class LaunchError(KdiagError):
    """QEMU could not be started or did not come up (port in use, missing firmware)."""
