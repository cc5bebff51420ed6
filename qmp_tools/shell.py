"""``kdiag shell``: an interactive QEMU monitor with kdiag's decoders, on prompt_toolkit.

What a line means (first match wins):

    help [WORD] | ?            this overview, or the arguments of a QMP/HMP/kdiag command
    quit | exit | Ctrl-D       leave the shell (QEMU keeps running; `qmp quit` ends QEMU)
    events                     QMP events received so far (also shown after each command)
    hmp LINE                   send LINE to the human monitor (HMP), e.g. `hmp info mtree -f`
    qmp CMD [ARGS]             run a QMP command even when a shell or kdiag name shadows it
    kd CMD [ARGS]              run a kdiag command even when an HMP name shadows it
    <kdiag command> [ARGS]     gdt, idt, tss, pt, walk VA, triage, ... on the live machine
                               (the same modules and output as `kdiag CMD --qmp SOCK`)
    <qmp-command> [ARGS]       a QMP command, e.g. `query-status`, `pmemsave val=0x1000
                               size=4096 filename=/tmp/x`; ARGS are name=value pairs (numbers
                               as in C, true/false/null, JSON for lists/objects) or one JSON
                               object; the reply is printed as JSON
    anything else              sent to HMP as typed, e.g. `info registers`, `xp /8gx 0x1000`

QMP command names contain dashes (``query-status``), HMP names underscores (``system_reset``),
so the two rarely collide; ``stop``/``cont`` exist in both and go to QMP. ``quit`` always means
leaving the shell. Tab completes command names (from ``query-commands``, HMP ``help`` and the
kdiag command modules), QMP argument names and enum values (from ``query-qmp-schema``), HMP
``info`` topics and kdiag options. History persists in ``$XDG_CACHE_HOME/kdiag/shell_history``
(default ``~/.cache/kdiag``). Errors print one line; the shell ends only when QEMU goes away.

:class:`MonitorShell` takes prompt_toolkit ``input``/``output`` objects and a text stream for
results, so tests drive it with ``create_pipe_input()`` and ``DummyOutput()``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import pkgutil
import re
import shlex
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from kdiag.errors import KdiagError, TargetGone, UsageError
from qmp_tools.session import QmpCommandError, QmpSession
from qmp_tools.target import QmpTarget, shared

BUILTINS = ("help", "quit", "exit", "events", "hmp", "qmp", "kd")
#: kdiag commands that are not about a machine's state (or would recurse).
_NOT_SHELL_COMMANDS = frozenset({"run", "ide", "shell", "watch"})


# ------------------------------------------------------------------------------------------
# completion model (pure)


def parse_qmp_schema(schema: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """``query-qmp-schema`` -> {command: {argument: [value hints]}}.

    Hints are the values of an enum argument, ``true``/``false`` for booleans, else empty.
    Type names are masked numbers in introspection output; commands keep their real names.
    """
    by_name = {str(e.get("name")): e for e in schema}
    out: dict[str, dict[str, list[str]]] = {}
    for entry in schema:
        if entry.get("meta-type") != "command":
            continue
        args: dict[str, list[str]] = {}
        arg_type = by_name.get(str(entry.get("arg-type", "")), {})
        for member in arg_type.get("members", []) or []:
            mtype = str(member.get("type", ""))
            hints: list[str] = []
            if mtype == "bool":
                hints = ["true", "false"]
            else:
                tentry = by_name.get(mtype, {})
                if tentry.get("meta-type") == "enum":
                    hints = [str(v) for v in tentry.get("values", [])] or [
                        str(m.get("name")) for m in tentry.get("members", []) or []]
            args[str(member.get("name"))] = hints
        out[str(entry["name"])] = args
    return out


def parse_hmp_help(text: str, prefix: str = "") -> list[str]:
    """Command names from HMP ``help`` (``prefix=""``) or topics from ``help info``
    (``prefix="info"``): the first word of each entry line (continuation lines are indented)."""
    names: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line or line[0].isspace():
            continue
        words = line.split()
        if prefix:
            if len(words) >= 2 and words[0] == prefix:
                names.append(words[1])
        elif words:
            names.extend(w for w in words[0].split("|") if w)
    return sorted(set(names))


@dataclass
class CompletionModel:
    """Everything Tab can offer; built once per shell from the live QEMU (or recorded data)."""

    qmp: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    hmp: list[str] = field(default_factory=list)
    hmp_info: list[str] = field(default_factory=list)
    kdiag: dict[str, list[str]] = field(default_factory=dict)
    builtins: tuple[str, ...] = BUILTINS

    def first_words(self) -> list[str]:
        return sorted(set(self.builtins) | set(self.kdiag) | set(self.qmp) | set(self.hmp))

    def complete(self, line: str) -> list[str]:
        """Candidates for the word under the cursor, ``line`` being the text before it."""
        words = line.split()
        if not words or line[-1:].isspace():
            words.append("")
        current = words[-1]
        done = words[:-1]
        if not done:
            return [w for w in self.first_words() if w.startswith(current)]
        head = done[0]
        if head == "hmp":
            if len(done) == 1:
                return [w for w in self.hmp if w.startswith(current)]
            return self._hmp_args(done[1:], current)
        if head == "qmp":
            if len(done) == 1:
                return [w for w in self.qmp if w.startswith(current)]
            return self._qmp_args(done[1], done[2:], current)
        if head == "kd":
            if len(done) == 1:
                return [w for w in self.kdiag if w.startswith(current)]
            return [o for o in self.kdiag.get(done[1], []) if o.startswith(current)]
        if head == "help":
            return [w for w in self.first_words() if w.startswith(current)] if len(done) == 1 \
                else []
        if head in self.kdiag:
            return [o for o in self.kdiag[head] if o.startswith(current)]
        if head in self.qmp:
            return self._qmp_args(head, done[1:], current)
        return self._hmp_args(done, current)

    def _qmp_args(self, command: str, done: list[str], current: str) -> list[str]:
        args = self.qmp.get(command, {})
        if "=" in current:
            name, _, value = current.partition("=")
            return [f"{name}={v}" for v in args.get(name, []) if v.startswith(value)]
        used = {w.split("=", 1)[0] for w in done}
        return [f"{a}=" for a in args if a not in used and a.startswith(current)]

    def _hmp_args(self, done: list[str], current: str) -> list[str]:
        if done == ["info"]:
            return [w for w in self.hmp_info if w.startswith(current)]
        return []


# ------------------------------------------------------------------------------------------
# argument parsing for QMP lines (pure)


def parse_qmp_value(text: str) -> Any:
    """A QMP argument value from the command line: C-style ints, true/false/null, JSON, str."""
    try:
        return int(text.replace("_", ""), 0)
    except ValueError:
        pass
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    if text[:1] in "[{\"" or re.fullmatch(r"-?\d+\.\d*(e-?\d+)?", text):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return text


def parse_qmp_arguments(rest: str) -> dict[str, Any]:
    """``name=value ...`` or one JSON object -> the QMP ``arguments`` dict. UsageError if not."""
    rest = rest.strip()
    if not rest:
        return {}
    if rest.startswith("{"):
        try:
            value = json.loads(rest)
        except json.JSONDecodeError as err:
            raise UsageError(f"arguments are not a JSON object: {err.msg}") from None
        if not isinstance(value, dict):
            raise UsageError("arguments must be a JSON object")
        return value
    try:
        tokens = shlex.split(rest)
    except ValueError as err:
        raise UsageError(f"cannot split arguments: {err}") from None
    args: dict[str, Any] = {}
    for token in tokens:
        name, sep, value = token.partition("=")
        if not sep or not name:
            raise UsageError(f"QMP arguments are name=value pairs; got {token!r}")
        args[name] = parse_qmp_value(value)
    return args


# ------------------------------------------------------------------------------------------
# kdiag command modules


def target_commands() -> dict[str, ModuleType]:
    """``kdiag.commands`` modules that read a machine (they accept ``--qmp``), by NAME."""
    import kdiag.commands as pkg

    found: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        try:
            mod = importlib.import_module(f"kdiag.commands.{info.name}")
        except Exception:  # a broken command module must not take the shell down  # noqa: BLE001
            continue
        name = getattr(mod, "NAME", None)
        if not name or name in _NOT_SHELL_COMMANDS or not hasattr(mod, "add_arguments"):
            continue
        parser = _parser_for(mod)
        if parser is not None and any("--qmp" in a.option_strings for a in parser._actions):
            found[str(name)] = mod
    return found


def _parser_for(mod: ModuleType) -> argparse.ArgumentParser | None:
    parser = argparse.ArgumentParser(prog=str(getattr(mod, "NAME", "?")), add_help=True,
                                     exit_on_error=False)
    try:
        mod.add_arguments(parser)
    except Exception:  # noqa: BLE001
        return None
    return parser


def command_options(mod: ModuleType) -> list[str]:
    parser = _parser_for(mod)
    if parser is None:
        return []
    opts = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    return sorted(opts - {"--qmp", "--core"})


def history_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kdiag" / "shell_history"


# ------------------------------------------------------------------------------------------
# the shell


class MonitorShell:
    """The shell's core: :meth:`execute` runs one line; :meth:`loop` reads lines with a prompt.

    Results go to ``out`` (a text stream); prompt_toolkit's ``pt_input``/``pt_output`` (None:
    the terminal) only carry the prompt and the line editor.
    """

    def __init__(self, session: QmpSession, out: TextIO | None = None,
                 pt_input: Any = None, pt_output: Any = None,
                 history_file: Path | None | bool = None) -> None:
        self.session = session
        self.target = QmpTarget(session, owns_session=False)
        self.out: TextIO = out or sys.stdout
        self.pt_input = pt_input
        self.pt_output = pt_output
        self.history_file = history_path() if history_file is None else history_file
        self.commands = target_commands()
        self.model = self._build_model()
        self.qmp_names = set(self.model.qmp)
        self.hmp_names = set(self.model.hmp)
        self.prompt_session: Any = None  # the PromptSession while loop() runs

    # -- setup --------------------------------------------------------------------------------
    def _build_model(self) -> CompletionModel:
        model = CompletionModel(kdiag={n: command_options(m) for n, m in self.commands.items()})
        with contextlib.suppress(KdiagError):
            model.qmp = parse_qmp_schema(self.session.execute("query-qmp-schema"))
        if not model.qmp:
            with contextlib.suppress(KdiagError):
                model.qmp = {str(c["name"]): {} for c in self.session.execute("query-commands")}
        with contextlib.suppress(KdiagError):
            model.hmp = parse_hmp_help(self.session.hmp("help"))
            model.hmp_info = parse_hmp_help(self.session.hmp("help info"), prefix="info")
        return model

    # -- output -------------------------------------------------------------------------------
    def write(self, text: str) -> None:
        if text and not text.endswith("\n"):
            text += "\n"
        self.out.write(text)
        self.out.flush()

    def _show_events(self) -> None:
        for ev in self.session.take_events():
            data = ev.get("data")
            self.write(f"[event] {ev.get('event')}" + (f" {json.dumps(data)}" if data else ""))

    # -- one line -----------------------------------------------------------------------------
    def execute(self, line: str) -> bool:
        """Run one line; return False when the shell should end. Raises only TargetGone."""
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        try:
            if word in ("quit", "exit"):
                return False
            if word in ("help", "?"):
                self.write(self.help_text(rest))
            elif word == "events":
                self._show_events()
            elif word == "hmp":
                if not rest:
                    raise UsageError("usage: hmp COMMAND-LINE (e.g. hmp info registers)")
                self.write(self.session.hmp(rest).rstrip("\n"))
            elif word == "qmp":
                cmd, _, args = rest.partition(" ")
                if not cmd:
                    raise UsageError("usage: qmp COMMAND [name=value ...]")
                self.run_qmp(cmd, args)
            elif word == "kd":
                cmd, _, args = rest.partition(" ")
                if cmd not in self.commands:
                    raise UsageError(f"no kdiag command {cmd!r}; known: "
                                     f"{', '.join(sorted(self.commands)) or 'none'}")
                self.run_kdiag(cmd, args)
            elif word in self.commands:
                self.run_kdiag(word, rest)
            elif word in self.qmp_names:
                self.run_qmp(word, rest)
            else:
                self.write(self.session.hmp(line).rstrip("\n"))
        except TargetGone:
            raise
        except KdiagError as err:
            self.write(f"error: {err}")
        self._show_events()
        return True

    def run_qmp(self, command: str, args_text: str) -> None:
        arguments = parse_qmp_arguments(args_text)
        try:
            reply = self.session.execute(command, arguments or None)
        except QmpCommandError as err:
            self.write(f"error: {err.error_class}: {err.desc}" if err.error_class
                       else f"error: {err}")
            return
        if isinstance(reply, str):
            self.write(reply.replace("\r\n", "\n").rstrip("\n"))
        elif reply == {}:
            self.write("ok")
        else:
            self.write(json.dumps(reply, indent=2, sort_keys=False))

    def run_kdiag(self, name: str, args_text: str) -> int:
        """Run ``kdiag NAME ARGS --qmp <this session>`` in-process on this connection."""
        mod = self.commands[name]
        parser = _parser_for(mod)
        if parser is None:
            raise UsageError(f"kdiag {name}: its options could not be built")
        try:
            tokens = shlex.split(args_text)
        except ValueError as err:
            raise UsageError(f"cannot split arguments: {err}") from None
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                args = parser.parse_args(tokens)
        except SystemExit:  # --help, or argparse printed a usage error
            self.write(buf.getvalue().rstrip("\n"))
            return 2
        except argparse.ArgumentError as err:
            raise UsageError(f"{name}: {err}") from None
        args.qmp = str(self.session.address) if isinstance(self.session.address, str) \
            else f"{self.session.address[0]}:{self.session.address[1]}"
        if hasattr(args, "core"):
            args.core = None
        args.target = self.target
        self.target.refresh()
        code = 2
        try:
            with shared(self.target), contextlib.redirect_stdout(buf):
                code = int(mod.run(args) or 0)
        finally:
            self.write(buf.getvalue().rstrip("\n"))
        return code

    def help_text(self, topic: str = "") -> str:
        topic = topic.strip()
        if not topic:
            doc = __doc__ or ""
            doc = doc[doc.find("What a line means"):doc.find(":class:`MonitorShell`")].strip()
            names = ", ".join(sorted(self.commands)) or "(none installed)"
            return (f"{doc}\n\nkdiag commands here: {names}\n"
                    f"QMP: {len(self.model.qmp)} commands; HMP: {len(self.model.hmp)} commands "
                    "(Tab completes; `help NAME` for one)")
        if topic in self.commands:
            parser = _parser_for(self.commands[topic])
            return parser.format_help() if parser else topic
        if topic in self.model.qmp:
            args = self.model.qmp[topic]
            if not args:
                return f"{topic}: QMP command without arguments"
            return f"{topic} " + " ".join(
                f"{a}=" + ("|".join(h) if h else "VALUE") for a, h in args.items())
        if topic in self.model.hmp:
            return self.session.hmp(f"help {topic}").rstrip("\n")
        return f"nothing named {topic!r} (try Tab)"

    # -- the interactive loop -----------------------------------------------------------------
    def prompt_text(self) -> str:
        try:
            status = self.session.status()
        except TargetGone:
            raise
        except KdiagError:
            status = "?"
        return f"kdiag ({status})> "

    def loop(self) -> int:
        """Read and run lines until quit/EOF; 0 normally, 2 when QEMU went away."""
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, History, InMemoryHistory

        history: History = InMemoryHistory()
        if isinstance(self.history_file, Path):
            path = self.history_file
            with contextlib.suppress(OSError):
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                history = FileHistory(str(path))
        prompt: PromptSession[str] = PromptSession(
            history=history, completer=_Completer(self.model), input=self.pt_input,
            output=self.pt_output, complete_while_typing=False)
        self.prompt_session = prompt
        try:
            while True:
                try:
                    line = prompt.prompt(self.prompt_text())
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    return 0
                if not self.execute(line):
                    return 0
        except TargetGone as err:
            self.write(f"kdiag: {err}")
            return 2


class _Completer(Completer):
    """prompt_toolkit adapter around :class:`CompletionModel`."""

    def __init__(self, model: CompletionModel) -> None:
        self.model = model

    def get_completions(self, document: Document,
                        complete_event: CompleteEvent) -> Iterator[Completion]:
        before = document.text_before_cursor
        word = "" if before[-1:].isspace() else (before.split() or [""])[-1]
        for cand in self.model.complete(before):
            yield Completion(cand, start_position=-len(word))


def run_shell(address: str, out: TextIO | None = None, pt_input: Any = None,
              pt_output: Any = None, history_file: Path | None | bool = None) -> int:
    """Connect to ``address`` and run the interactive shell until quit/EOF."""
    session = QmpSession.connect(address)
    try:
        shell = MonitorShell(session, out=out, pt_input=pt_input, pt_output=pt_output,
                             history_file=history_file)
        shell.write(f"kdiag shell on {session.where} (QEMU {session.qemu_version}); "
                    "`help` for help, Ctrl-D to leave")
        return shell.loop()
    finally:
        session.close()
