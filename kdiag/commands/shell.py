"""``kdiag shell --qmp SOCK``: an interactive QEMU monitor with kdiag's decoders built in."""

from __future__ import annotations

import argparse

NAME = "shell"
HELP = "interactive QEMU monitor over QMP: QMP, HMP and the kdiag commands, with completion"


def _description() -> str:
    from qmp_tools import shell

    return (shell.__doc__ or HELP).split("\n\n", 1)[1].rsplit("\n\n", 1)[0] + """

examples:
  kdiag shell --qmp /tmp/kdiag-run-xyz/qmp.sock
  kdiag> query-status
  kdiag> info registers
  kdiag> gdt
  kdiag> pmemsave val=0x100000 size=4096 filename=/tmp/page.bin"""


try:
    DESCRIPTION = _description()
except Exception:  # pragma: no cover - never let the help text break the CLI  # noqa: BLE001
    DESCRIPTION = HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--qmp", required=True, metavar="SOCK",
                        help="the QEMU's QMP unix socket (or 127.0.0.1:PORT)")
    parser.add_argument("--no-history", action="store_true",
                        help="do not read or write the history file")


def run(args: argparse.Namespace) -> int:
    from qmp_tools.shell import run_shell

    return run_shell(args.qmp, history_file=False if args.no_history else None)
