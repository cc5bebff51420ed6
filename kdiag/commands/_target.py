"""Shared target options for commands that read machine state: ``--core FILE`` / ``--qmp SOCK``.

The CLI is the only place in ``kdiag`` that imports ``qmp_tools`` (DESIGN.md layering).
"""

from __future__ import annotations

import argparse

from kdiag.errors import UsageError

TYPE_CHECKING = False  # typing's constant: `kdiag triage LOG` never needs typing (start-up)
if TYPE_CHECKING:
    from kdiag.target.base import Target


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the mutually exclusive ``--core`` / ``--qmp`` source options."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--core", metavar="FILE",
                       help="a QEMU dump-guest-memory ELF core (offline)")
    group.add_argument("--qmp", metavar="SOCK",
                       help="a running QEMU's QMP unix socket (live, read-only)")


def open_target(args: argparse.Namespace, *, cr8: bool = True) -> Target:
    """Open the Target the user named; raise UsageError when none was given.

    ``cr8=False`` tells a live QMP target not to fetch CR8 (one ``info lapic`` round trip,
    ~0.6 ms) for commands that never show it: the page-table ones."""
    if getattr(args, "core", None):
        from kdiag.target.core import CoreTarget

        return CoreTarget.from_path(args.core)
    if getattr(args, "qmp", None):
        from qmp_tools.target import QmpTarget

        target = QmpTarget.connect(args.qmp)
        target.with_cr8 = cr8
        return target
    raise UsageError("no machine to read: give --core DUMP.elf or --qmp SOCKET "
                     "(inside gdb, use the `kd` commands)")


def close_target(target: object) -> None:
    """Close what :func:`open_target` opened (a QMP session, a mapped core); None is fine."""
    close = getattr(target, "close", None)
    if callable(close):
        close()


def parse_int(text: str) -> int:
    """Parse an address or number the way C does (``int(x, 0)``), for argparse ``type=``."""
    try:
        return int(text.replace("_", "").replace("`", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
