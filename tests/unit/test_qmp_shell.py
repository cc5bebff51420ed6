"""kdiag shell: completion from a recorded QEMU 7.2 schema, argument parsing, and the shell
core driven through prompt_toolkit's pipe input against a fake QMP session."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from kdiag.errors import TargetGone, UsageError
from qmp_tools.session import QmpCommandError
from qmp_tools.shell import (
    CompletionModel,
    MonitorShell,
    parse_hmp_help,
    parse_qmp_arguments,
    parse_qmp_schema,
    parse_qmp_value,
)
from tests.unit.test_qmp_target import FakeSession, build_memory

# query-qmp-schema of qemu-system-x86_64 7.2, the entries these commands need
SCHEMA: list[dict[str, Any]] = [
    {"name": "query-status", "ret-type": "1", "meta-type": "command", "arg-type": "0"},
    {"name": "0", "members": [], "meta-type": "object"},
    {"name": "pmemsave", "ret-type": "0", "meta-type": "command", "arg-type": "198"},
    {"name": "198", "members": [{"name": "val", "type": "int"}, {"name": "size", "type": "int"},
                                {"name": "filename", "type": "str"}], "meta-type": "object"},
    {"name": "memsave", "ret-type": "0", "meta-type": "command", "arg-type": "197"},
    {"name": "197", "members": [{"name": "val", "type": "int"}, {"name": "size", "type": "int"},
                                {"name": "filename", "type": "str"},
                                {"name": "cpu-index", "default": None, "type": "int"}],
     "meta-type": "object"},
    {"name": "human-monitor-command", "ret-type": "str", "meta-type": "command",
     "arg-type": "226", "features": ["savevm-monitor-nodes"]},
    {"name": "226", "members": [{"name": "command-line", "type": "str"},
                                {"name": "cpu-index", "default": None, "type": "int"}],
     "meta-type": "object"},
    {"name": "dump-guest-memory", "ret-type": "0", "meta-type": "command", "arg-type": "95"},
    {"name": "95", "members": [{"name": "paging", "type": "bool"},
                               {"name": "protocol", "type": "str"},
                               {"name": "detach", "default": None, "type": "bool"},
                               {"name": "begin", "default": None, "type": "int"},
                               {"name": "length", "default": None, "type": "int"},
                               {"name": "format", "default": None, "type": "345"}],
     "meta-type": "object"},
    {"name": "345", "members": [{"name": "elf"}, {"name": "kdump-zlib"}, {"name": "kdump-lzo"},
                                {"name": "kdump-snappy"}, {"name": "win-dmp"}],
     "meta-type": "enum",
     "values": ["elf", "kdump-zlib", "kdump-lzo", "kdump-snappy", "win-dmp"]},
    {"name": "cont", "ret-type": "0", "meta-type": "command", "arg-type": "0"},
    {"name": "stop", "ret-type": "0", "meta-type": "command", "arg-type": "0"},
    {"name": "query-stats", "ret-type": "[250]", "meta-type": "command", "arg-type": "249"},
    {"name": "249", "tag": "target", "variants": [{"case": "vcpu", "type": "498"},
                                                  {"case": "vm", "type": "0"}],
     "members": [{"name": "target", "type": "496"},
                 {"name": "providers", "default": None, "type": "[497]"}],
     "meta-type": "object"},
    {"name": "496", "members": [{"name": "vm"}, {"name": "vcpu"}], "meta-type": "enum",
     "values": ["vm", "vcpu"]},
]

# HMP `help` and `help info` of QEMU 7.2 (excerpts, continuation line included)
HMP_HELP = """\
announce_self [interfaces] [id] -- Trigger GARP/RARP announcements
block_job_cancel [-f] device -- stop an active background block operation (use -f
\t\t\t if you want to abort the operation immediately
\t\t\t instead of keep running until data is in sync)
cont|c  -- resume emulation
info [subcommand] -- show various information about the system state
pmemsave addr size file -- save to disk physical memory dump starting at 'addr' of size 'size'
x /fmt addr -- virtual memory dump starting at 'addr'
xp /fmt addr -- physical memory dump starting at 'addr'
"""
HMP_INFO = """\
info mtree [-f][-d][-o][-D] -- show memory tree (-f: dump flat view for address spaces)
info registers [-a|vcpu] -- show the cpu registers (-a: show register info for all cpus)
info status  -- show the current VM status (running|paused)
"""


def model() -> CompletionModel:
    return CompletionModel(qmp=parse_qmp_schema(SCHEMA), hmp=parse_hmp_help(HMP_HELP),
                           hmp_info=parse_hmp_help(HMP_INFO, prefix="info"),
                           kdiag={"gdt": ["--json", "--verbose"], "idt": ["--json"]})


# ------------------------------------------------------------------------------------------
# pure parts

def test_schema_gives_arguments_enum_values_and_booleans() -> None:
    q = parse_qmp_schema(SCHEMA)
    assert list(q["pmemsave"]) == ["val", "size", "filename"]
    assert q["query-status"] == {}
    assert q["dump-guest-memory"]["format"][0] == "elf"
    assert q["dump-guest-memory"]["paging"] == ["true", "false"]
    assert q["query-stats"]["target"] == ["vm", "vcpu"]
    assert "0" not in q and "198" not in q  # types are not commands


def test_hmp_help_names_aliases_and_info_topics() -> None:
    names = parse_hmp_help(HMP_HELP)
    assert {"cont", "c", "xp", "x", "pmemsave", "block_job_cancel"} <= set(names)
    assert "if" not in names and "instead" not in names  # continuation lines skipped
    assert parse_hmp_help(HMP_INFO, prefix="info") == ["mtree", "registers", "status"]


@pytest.mark.parametrize("line, expected", [
    ("query-sta", ["query-stats", "query-status"]),
    ("pmems", ["pmemsave"]),
    ("gd", ["gdt"]),
    ("pmemsave ", ["val=", "size=", "filename="]),
    ("pmemsave val=0x1000 s", ["size="]),
    ("pmemsave val=0x1000 size=16 ", ["filename="]),
    ("dump-guest-memory format=kd", ["format=kdump-zlib", "format=kdump-lzo",
                                     "format=kdump-snappy"]),
    ("dump-guest-memory paging=", ["paging=true", "paging=false"]),
    ("info reg", ["registers"]),
    ("info ", ["mtree", "registers", "status"]),
    ("hmp x", ["x", "xp"]),
    ("hmp info st", ["status"]),
    ("qmp qu", ["query-status", "query-stats"]),
    ("kd g", ["gdt"]),
    ("gdt --j", ["--json"]),
    ("help pme", ["pmemsave"]),
    ("xp /4gx ", []),
])
def test_completion(line: str, expected: list[str]) -> None:
    assert sorted(model().complete(line)) == sorted(expected)


def test_every_first_word_source_is_offered() -> None:
    words = model().complete("")
    for w in ("help", "quit", "hmp", "qmp", "gdt", "query-status", "xp", "info"):
        assert w in words


@pytest.mark.parametrize("text, value", [
    ("0x1000", 0x1000), ("4096", 4096), ("-1", -1), ("1_000", 1000), ("true", True),
    ("False", False), ("null", None), ("/tmp/x.bin", "/tmp/x.bin"), ("[1, 2]", [1, 2]),
    ('{"a": 1}', {"a": 1}), ("elf", "elf"), ("1.5", 1.5),
])
def test_parse_qmp_value(text: str, value: object) -> None:
    assert parse_qmp_value(text) == value


def test_parse_qmp_arguments() -> None:
    assert parse_qmp_arguments("val=0x100000 size=16 filename='/tmp/a b'") == {
        "val": 0x100000, "size": 16, "filename": "/tmp/a b"}
    assert parse_qmp_arguments('{"paging": false, "protocol": "file:/x"}') == {
        "paging": False, "protocol": "file:/x"}
    assert parse_qmp_arguments("") == {}
    for bad in ("val", "=3", "[1]", "{nope", "'unclosed"):
        with pytest.raises(UsageError):
            parse_qmp_arguments(bad)


# ------------------------------------------------------------------------------------------
# the shell core on a fake session


class ShellSession(FakeSession):
    def __init__(self) -> None:
        super().__init__(build_memory())
        self.events: list[dict[str, Any]] = []
        self.gone = False
        self.received: list[tuple[str, dict[str, Any] | None]] = []

    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                timeout: float | None = None) -> Any:
        if self.gone:
            raise TargetGone("QEMU at /fake/qmp.sock is gone")
        self.received.append((command, arguments))
        if command == "query-qmp-schema":
            return SCHEMA
        if command == "cont":
            self.events.append({"event": "RESUME"})
            return {}
        if command == "memsave":
            raise QmpCommandError("QEMU refused memsave: Invalid addr", "memsave",
                                  "GenericError", "Invalid addr 0x40000000/size 4 specified")
        if command == "quit":
            self.gone = True
            return {}
        return super().execute(command, arguments, timeout)

    def hmp(self, line: str, timeout: float | None = None, cpu_index: int | None = None) -> str:
        if self.gone:
            raise TargetGone("QEMU at /fake/qmp.sock is gone")
        if line == "help":
            return HMP_HELP
        if line == "help info":
            return HMP_INFO
        if line.startswith(("info registers", "info mtree", "xp ")):
            return super().hmp(line, timeout, cpu_index)
        return f"unknown command: '{line.split()[0]}'\r\n"

    def status(self) -> str:
        return str(self.execute("query-status")["status"])

    def take_events(self) -> list[dict[str, Any]]:
        out, self.events = self.events, []
        return out


def run_shell(session: ShellSession, steps: list[tuple[str, str | None]]) -> tuple[int, str]:
    """Type each step's text; when an expected buffer is given, wait until completion put it
    there before pressing Enter (the completer runs as a background task)."""
    out = io.StringIO()
    result: dict[str, Any] = {}
    with create_pipe_input() as inp:
        shell = MonitorShell(session, out=out, pt_input=inp,  # type: ignore[arg-type]
                             pt_output=DummyOutput(), history_file=False)

        def feed() -> None:
            for typed, expect in steps:
                while shell.prompt_session is None or not shell.prompt_session.app.is_running:
                    time.sleep(0.005)
                inp.send_text(typed)
                if expect is not None:
                    deadline = time.monotonic() + 10
                    while (shell.prompt_session.default_buffer.text != expect
                           and time.monotonic() < deadline):
                        time.sleep(0.005)
                    result.setdefault("buffers", []).append(
                        shell.prompt_session.default_buffer.text)
                    inp.send_text("\r")
            inp.close()

        t = threading.Thread(target=feed, daemon=True)
        t.start()
        code = shell.loop()
        t.join(10)
    return code, out.getvalue() + "\n".join(result.get("buffers", []))


def test_shell_completes_and_runs_qmp_hmp_and_errors() -> None:
    session = ShellSession()
    code, out = run_shell(session, [
        ("query-statu\t", "query-status"),
        ("info regi\t", "info registers"),
        ("pmemsave val=0x100000 size=9 filename=/dev/null\r", None),
        ("memsave val=0x40000000 size=4 filename=/dev/null\r", None),
        ("bogus\r", None),
        ("cont\r", None),
        ("quit\r", None),
    ])
    assert code == 0
    assert '"status": "paused"' in out
    assert "RIP=00000000001000af" in out
    assert "error: GenericError: Invalid addr" in out
    assert "unknown command: 'bogus'" in out
    assert "[event] RESUME" in out
    pmem = [a for c, a in session.received if c == "pmemsave"][0]
    assert pmem == {"val": 0x100000, "size": 9, "filename": "/dev/null"}


def test_shell_ends_with_2_when_qemu_goes_away() -> None:
    session = ShellSession()
    code, out = run_shell(session, [("qmp quit\r", None), ("query-status\r", None)])
    assert code == 2 and "gone" in out


def test_shell_eof_ends_cleanly_and_help_lists_sources() -> None:
    session = ShellSession()
    code, out = run_shell(session, [("help\r", None), ("help pmemsave\r", None)])
    assert code == 0
    assert "hmp LINE" in out and "QMP: 8 commands" in out
    assert "pmemsave val=VALUE size=VALUE filename=VALUE" in out


def test_kdiag_commands_run_on_the_shells_own_connection() -> None:
    import json

    session = ShellSession()
    # the recorded state's GDTR is 0x1000b8/0x17: put the tiny kernel's GDT there
    for i, raw in enumerate((0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF)):
        session.mem.write_u64(0x1000B8 + 8 * i, raw)
    buf = io.StringIO()
    shell = MonitorShell(session, out=buf, history_file=False)  # type: ignore[arg-type]
    assert {"gdt", "idt", "pt", "walk"} <= set(shell.commands)
    shell.execute("gdt --json")
    doc = json.loads(buf.getvalue())
    assert doc["base"] == "0x1000b8" and len(doc["entries"]) == 3
    buf.truncate(0)
    buf.seek(0)
    shell.execute("gdt --no-such-option")
    assert "unrecognized arguments" in buf.getvalue() or "error" in buf.getvalue()
