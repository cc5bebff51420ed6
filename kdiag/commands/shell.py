"""``kdiag shell --qmp SOCK``: an interactive QEMU monitor with kdiag's decoders built in."""

from __future__ import annotations

import argparse

NAME = "shell"
HELP = "interactive QEMU monitor over QMP: QMP, HMP and the kdiag commands, with completion"


def DESCRIPTION() -> str:  # noqa: N802 - the CLI's DESCRIPTION, computed only for `shell --help`
    """The shell module's own docstring (importing it loads prompt_toolkit: ~80 ms, so the CLI
    calls this only when it builds this command's parser alone)."""
    try:
        from qmp_tools import shell

        body = (shell.__doc__ or HELP).split("\n\n", 1)[1].rsplit("\n\n", 1)[0]
    except Exception:  # pragma: no cover - never let the help text break the CLI  # noqa: BLE001
        return HELP
    return body + """

examples:
  kdiag shell --qmp /tmp/kdiag-run-xyz/qmp.sock
  kdiag> query-status
  kdiag> info registers
  kdiag> gdt
  kdiag> pmemsave val=0x100000 size=4096 filename=/tmp/page.bin"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--qmp", required=True, metavar="SOCK",
                        help="the QEMU's QMP unix socket (or 127.0.0.1:PORT)")
    parser.add_argument("--no-history", action="store_true",
                        help="do not read or write the history file")


def run(args: argparse.Namespace) -> int:
    from qmp_tools.shell import run_shell

    return run_shell(args.qmp, history_file=False if args.no_history else None)
