"""Shared machinery of the ``kd`` commands: the prefix, argument parsing, output, errors.

A command module (``gdbext/cmd_*.py``) defines :class:`KdCommand` subclasses and a
``register()`` that instantiates them (gdb registers a command when it is constructed)::

    class KdFoo(KdCommand):
        '''One-line summary.

        Usage: kd foo [--json] [ARG]

        Longer manual text, examples...'''

        name = "foo"                      # becomes `kd foo`
        aliases = ("info foo",)           # optional Bochs-style aliases

        def add_arguments(self, parser):  # argparse, like the CLI
            parser.add_argument("arg", nargs="?")

        def run(self, args, ctx):         # return a kdiag.render.reports.Report
            return some_report(ctx.target(), ...)

    def register():
        KdFoo()

The base class turns ``--json`` into one JSON document, writes through ``gdb.write`` (so MI
clients get ``~`` console records), and converts every error into ``gdb.GdbError`` with one
line (no Python traceback; ``kd debug on`` shows tracebacks for bug reports).
"""

from __future__ import annotations

import argparse
import shlex
import traceback
from collections.abc import Callable
from typing import Any

import gdb  # type: ignore[import-not-found]

from kdiag.errors import KdiagError

DEBUG = {"on": False}
_SYMBOL_CACHE: dict[int, str | None] = {}
_PREFIX: list[object] = []


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting and prints help through gdb."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgError(f"{self.prog}: {message} (see `help {self.prog}`)")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            gdb.write(message)
        raise _ArgError("")

    def print_help(self, file: Any = None) -> None:
        gdb.write(self.format_help())


def int_arg(text: str) -> int:
    """An address/number argument: C syntax, or any gdb expression (``$rsp+8``, ``&idt``)."""
    try:
        return int(text.replace("_", ""), 0)
    except ValueError:
        pass
    try:
        return int(gdb.parse_and_eval(text)) & (2**64 - 1)
    except gdb.error as err:
        raise argparse.ArgumentTypeError(f"not a number or expression: {text!r} ({err})") from err


class Context:
    """Per-invocation helpers handed to ``run``: the target, the symbolizer."""

    def __init__(self) -> None:
        self._target: Any = None

    def target(self) -> Any:
        if self._target is None:
            from gdbext.target import GdbTarget

            self._target = GdbTarget()
        return self._target

    symbolize: Callable[[int], str | None]

    def close(self) -> None:
        if self._target is not None:
            self._target.close()


def symbolize(addr: int) -> str | None:
    """``name`` or ``name+0x10`` from gdb's loaded symbols (block_for_pc, then `info symbol`)."""
    if addr in _SYMBOL_CACHE:
        return _SYMBOL_CACHE[addr]
    result: str | None = None
    try:
        block = gdb.block_for_pc(addr)
        while block is not None and block.function is None:
            block = block.superblock
        if block is not None and block.function is not None:
            off = addr - block.start
            result = block.function.print_name + (f"+{off:#x}" if off else "")
    except (RuntimeError, gdb.error):
        result = None
    if result is None and gdb.objfiles():
        try:
            out = gdb.execute(f"info symbol {addr:#x}", to_string=True).strip()
        except gdb.error:
            out = ""
        if out and not out.startswith("No symbol"):
            name = out.split(" in section ")[0]
            parts = name.split(" + ")
            result = parts[0] + (f"+{int(parts[1]):#x}" if len(parts) == 2 and parts[1].isdigit()
                                 else "")
    _SYMBOL_CACHE[addr] = result
    return result


# Renderers memoize output per symbolizer generation (kdiag.render.tables): a new objfile
# changes what addresses resolve to.
symbolize.generation = 0  # type: ignore[attr-defined]


def _forget_symbols(*_: object) -> None:
    _SYMBOL_CACHE.clear()
    symbolize.generation += 1  # type: ignore[attr-defined]


def connect_events() -> None:
    """Drop cached symbols when objfiles change (called once by init.py, not at import)."""
    if getattr(connect_events, "done", False):
        return
    gdb.events.new_objfile.connect(_forget_symbols)
    if hasattr(gdb.events, "clear_objfiles"):
        gdb.events.clear_objfiles.connect(_forget_symbols)
    connect_events.done = True  # type: ignore[attr-defined]


class KdPrefix(gdb.Command):  # type: ignore[misc]
    """kdiag: readable x86 machine state for kernels under QEMU.

Usage: kd SUBCOMMAND [ARGS]   (`help kd SUBCOMMAND` for each manual)

Every subcommand takes --json (one JSON document) and -v (raw values, bit-by-bit fields).
Warnings name what will fault and why, with the entries they rest on.
Bochs-style aliases: info gdt, info idt, info tss."""

    def __init__(self) -> None:
        super().__init__("kd", gdb.COMMAND_DATA, gdb.COMPLETE_COMMAND, prefix=True)

    def invoke(self, arg: str, from_tty: bool) -> None:
        gdb.execute("help kd", from_tty)


def ensure_prefix() -> None:
    if not _PREFIX:
        _PREFIX.append(KdPrefix())


class KdCommand(gdb.Command):  # type: ignore[misc]
    """Base class; subclasses set ``name`` and implement ``add_arguments``/``run``."""

    name = ""
    aliases: tuple[str, ...] = ()
    json_option = True

    def __init__(self, command: str | None = None) -> None:
        ensure_prefix()
        full = command or f"kd {self.name}"
        super().__init__(full, gdb.COMMAND_DATA)
        self.full_name = full
        if command is None:
            for alias in self.aliases:
                type(self)(alias)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def run(self, args: argparse.Namespace, ctx: Context) -> Any:
        raise NotImplementedError

    def parser(self) -> argparse.ArgumentParser:
        """The command's argparse parser, built once per command object (building one costs
        about as much as a gdbstub round trip: gettext lookups)."""
        cached = self.__dict__.get("_parser")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        self._parser = self._build_parser()
        return self._parser

    def parse_args(self, argv: list[str]) -> argparse.Namespace:
        """``parser().parse_args(argv)``; a command line of on/off flags only (``--json``,
        ``-v``...; no value, no expression) is parsed once and its result copied after that
        (argparse takes 15-20 us each time, more right after a QEMU reply). Raises
        :class:`_ArgError` like the parser."""
        flags = self.__dict__.get("_flags")
        if flags is None:
            flags = self._flags = frozenset(
                opt for action in self.parser()._actions  # noqa: SLF001 (argparse's own list)
                if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
                for opt in action.option_strings)
        if not all(arg in flags for arg in argv):
            return self.parser().parse_args(argv)
        parsed: dict[tuple[str, ...], dict[str, Any]] = self.__dict__.setdefault("_parsed", {})
        key = tuple(argv)
        if key not in parsed:
            parsed[key] = vars(self.parser().parse_args(argv))
        return argparse.Namespace(**parsed[key])

    def _build_parser(self) -> argparse.ArgumentParser:
        doc = (type(self).__doc__ or "").strip().splitlines()
        p = _Parser(prog=self.full_name, description=doc[0] if doc else None, add_help=True)
        if self.json_option:
            p.add_argument("--json", action="store_true", help="print one JSON document")
        p.add_argument("-v", "--verbose", action="store_true",
                       help="raw values and the bit-by-bit view")
        self.add_arguments(p)
        return p

    def invoke(self, arg: str, from_tty: bool) -> None:
        ctx = Context()
        ctx.symbolize = symbolize
        try:
            try:
                argv = gdb.string_to_argv(arg)
            except Exception:
                argv = shlex.split(arg)
            try:
                args = self.parse_args(argv)
            except _ArgError as err:
                if str(err):
                    raise gdb.GdbError(str(err)) from None
                return
            report = self.run(args, ctx)
            if report is None:
                return
            if getattr(args, "json", False):
                # One line: the C encoder (indent= forces the pure-Python one, ~10x slower),
                # with pre-rendered tables spliced in (the same text as json.dumps).
                from kdiag.render.tables import dumps

                gdb.write(dumps(report.doc) + "\n")
            else:
                gdb.write(report.text + "\n")
        except gdb.GdbError:
            raise
        except KdiagError as err:
            if DEBUG["on"]:
                gdb.write(traceback.format_exc(), gdb.STDERR)
            raise gdb.GdbError(f"{self.full_name}: {err}") from None
        except KeyboardInterrupt:
            raise gdb.GdbError(f"{self.full_name}: interrupted") from None
        except Exception as err:  # a bug in kdiag: one line, traceback on request
            if DEBUG["on"]:
                gdb.write(traceback.format_exc(), gdb.STDERR)
            raise gdb.GdbError(f"{self.full_name}: internal error: {type(err).__name__}: {err} "
                               "(`kd debug on` shows the traceback)") from None
        finally:
            ctx.close()


class KdDebug(gdb.Command):  # type: ignore[misc]
    """Show Python tracebacks for kdiag errors (for bug reports).

Usage: kd debug on|off"""

    def __init__(self) -> None:
        ensure_prefix()
        super().__init__("kd debug", gdb.COMMAND_MAINTENANCE)

    def invoke(self, arg: str, from_tty: bool) -> None:
        word = arg.strip().lower()
        if word not in ("on", "off", ""):
            raise gdb.GdbError("kd debug: expected on or off")
        if word:
            DEBUG["on"] = word == "on"
        gdb.write(f"kdiag debug tracebacks: {'on' if DEBUG['on'] else 'off'}\n")
