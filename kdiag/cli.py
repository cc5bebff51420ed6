"""The ``kdiag`` command line: one subcommand per module in ``kdiag.commands``.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``
(exit 0 success, 1 a diagnosed error in the input, 2 usage or unusable input), and optionally
``DESCRIPTION``: a string, or a function returning one when it is costly to build (it is then
called only for that command's own parser, never for ``kdiag --help``). Errors derived from
:class:`kdiag.errors.KdiagError` and ``OSError`` become one line on stderr, ``kdiag: error: ...``
(exit 2 unless the error says otherwise); any other exception is a kdiag bug and still one line,
``kdiag: internal error: ...`` (exit 70, EX_SOFTWARE). ``--traceback`` shows the full story
instead. Modules are discovered, so adding a command is adding a file.

A command module may also define ``parse_fast(argv) -> dict | None``: the values argparse
would give for the plain command lines it recognizes, None for anything else (which then goes
through argparse, so help and usage errors are argparse's). ``kdiag symbolize`` uses it: a
short process in an addr2line-style pipeline must not spend more time importing argparse and
building parsers than symbolizing.
"""

from __future__ import annotations

import importlib
import os
import sys

from kdiag import __version__
from kdiag.errors import KdiagError

TYPE_CHECKING = False  # typing's constant without importing typing (start-up cost)
if TYPE_CHECKING:
    import argparse
    from types import ModuleType
    from typing import Any

EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h): an unexpected error inside kdiag


def _command_names() -> list[str]:
    """Command module names (each module's file name is its command name). A directory listing,
    not ``pkgutil``: importing pkgutil costs every start more than the listing."""
    import kdiag.commands as pkg

    return sorted({os.path.splitext(n)[0] for d in pkg.__path__ for n in os.listdir(d)
                   if n.endswith(".py") and not n.startswith("_")})


def _command_modules(only: str | None = None) -> list[ModuleType]:
    """Import the command modules: all of them, or just ``only`` (fast start for one command)."""
    mods = []
    for name in _command_names():
        if only is not None and name != only:
            continue
        mod = importlib.import_module(f"kdiag.commands.{name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return sorted(mods, key=lambda m: m.NAME)


def _chosen_command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` when it is a known one, else None (import them all)."""
    names = set(_command_names())
    for arg in argv:
        if arg.startswith("-"):
            continue
        return arg if arg in names else None
    return None


def _fast_args(argv: list[str]) -> Any:
    """The parsed arguments from the chosen command's ``parse_fast``, or None (use argparse)."""
    if not argv or not argv[0].isidentifier():
        return None
    name = argv[0]
    import kdiag.commands as pkg

    if not any(os.path.isfile(os.path.join(d, name + ".py")) for d in pkg.__path__):
        return None
    mod = importlib.import_module(f"kdiag.commands.{name}")
    fast = getattr(mod, "parse_fast", None)
    values = fast(argv[1:]) if fast is not None and hasattr(mod, "run") else None
    if values is None:
        return None
    from types import SimpleNamespace

    ns = {"traceback": False, "command": getattr(mod, "NAME", name), "_run": mod.run}
    ns.update(values)
    return SimpleNamespace(**ns)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="kdiag",
        description="Readable machine state and crash diagnosis for x86 kernels under QEMU.",
    )
    parser.add_argument("--version", action="version", version=f"kdiag {__version__}")
    parser.add_argument("--traceback", action="store_true",
                        help="show a full Python traceback on errors (for bug reports)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    only = _chosen_command(argv) if argv is not None else None
    for mod in _command_modules(only):
        desc = getattr(mod, "DESCRIPTION", mod.HELP)
        if callable(desc):  # costly to compute: only for the one command's own --help
            desc = desc() if only is not None else mod.HELP
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=desc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kdiag`` console script. Returns the process exit code."""
    if argv is None:
        argv = sys.argv[1:]
    if argv == ["--version"]:  # without importing every command module
        print(f"kdiag {__version__}")
        return 0
    args = _fast_args(argv)
    if args is None:
        parser = build_parser(argv)
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse: --help (0) or usage error (2)
            return int(exc.code or 0)
        if not getattr(args, "_run", None):
            parser.print_help(sys.stderr)
            return 2
    try:
        return int(args._run(args))
    except KdiagError as err:
        if getattr(args, "traceback", False):
            raise
        print(f"kdiag: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("kdiag: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` etc.: silence the flush-at-exit error too.
        try:
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115
        except OSError:
            pass
        return 0
    except OSError as err:  # a file the command reads or writes: one line, like KdiagError
        if getattr(args, "traceback", False):
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"kdiag: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a bug: still one line, and how to report it
        if getattr(args, "traceback", False):
            raise
        print(f"kdiag: internal error: {type(err).__name__}: {err} (a kdiag bug: rerun with "
              "--traceback and report it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
