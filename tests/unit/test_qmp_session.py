"""QmpSession: addresses, event filters, and error mapping against a scripted fake QMP server.

The fake server is a plain unix socket in a thread that speaks just enough QMP (greeting,
qmp_capabilities, scripted replies, events, hang-ups); no QEMU needed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kdiag.errors import TargetGone, UsageError
from qmp_tools.session import (
    QmpCommandError,
    QmpSession,
    QmpTimeout,
    check_socket,
    event_filter,
    event_time,
    is_triple_fault,
    parse_address,
    stop_reason,
    to_qmp_int,
)

GREETING = {"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""},
                    "capabilities": ["oob"]}}
TRIPLE: dict[str, Any] = {"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-reset"},
                         "timestamp": {"seconds": 100, "microseconds": 250000}}


# ------------------------------------------------------------------------------------------
# pure helpers

@pytest.mark.parametrize("text, expected", [
    ("/run/q/qmp.sock", "/run/q/qmp.sock"),
    ("unix:/run/q/qmp.sock", "/run/q/qmp.sock"),
    ("qmp.sock", "qmp.sock"),
    ("127.0.0.1:4444", ("127.0.0.1", 4444)),
    ("tcp:127.0.0.1:4444", ("127.0.0.1", 4444)),
    ("localhost:4444", ("127.0.0.1", 4444)),
    ("[::1]:4444", ("::1", 4444)),
    ("tcp::4444", ("127.0.0.1", 4444)),
    (("127.0.0.5", 7), ("127.0.0.5", 7)),
])
def test_parse_address(text: str, expected: object) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["10.0.0.1:4444", "tcp:192.168.1.2:4444", "example.com:4444",
                                  "0.0.0.0:4444", "tcp:nohost", "127.0.0.1:70000"])
def test_parse_address_refuses_non_loopback_and_garbage(text: str) -> None:
    with pytest.raises(UsageError):
        parse_address(text)


def test_triple_fault_is_shutdown_guest_reset_only() -> None:
    assert is_triple_fault(TRIPLE)
    assert not is_triple_fault({"event": "SHUTDOWN",
                                "data": {"guest": False, "reason": "host-qmp-system-reset"}})
    assert not is_triple_fault({"event": "SHUTDOWN",
                                "data": {"guest": True, "reason": "guest-shutdown"}})
    assert not is_triple_fault({"event": "RESET", "data": {"guest": True,
                                                          "reason": "guest-reset"}})
    assert not is_triple_fault({"event": "STOP"})


def test_stop_reason_and_event_time() -> None:
    assert stop_reason(TRIPLE) == "guest-reset"
    assert stop_reason({"event": "STOP"}) is None
    assert stop_reason({"event": "SHUTDOWN"}) == "unknown"
    assert event_time(TRIPLE) == pytest.approx(100.25)
    assert event_time({"event": "STOP"}) is None


def test_event_filter_by_names_and_predicate() -> None:
    events: list[dict[str, Any]] = [
        {"event": "RESUME"}, TRIPLE, {"event": "STOP"},
        {"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-shutdown"}}]
    assert [e["event"] for e in events if event_filter("STOP")(e)] == ["STOP"]
    assert len([e for e in events if event_filter(["SHUTDOWN", "STOP"])(e)]) == 3
    assert [e for e in events if event_filter("SHUTDOWN", is_triple_fault)(e)] == [TRIPLE]
    assert all(event_filter()(e) for e in events)


@pytest.mark.parametrize("value, expected", [
    (0, 0), (0x1000, 0x1000), ((1 << 63) - 1, (1 << 63) - 1),
    (0xffff800000000000, 0xffff800000000000 - (1 << 64)), (0xffffffffffffffff, -1)])
def test_to_qmp_int_is_int64(value: int, expected: int) -> None:
    assert to_qmp_int(value) == expected


def test_check_socket(tmp_path: Path) -> None:
    with pytest.raises(TargetGone, match="no QMP socket"):
        check_socket(str(tmp_path / "missing.sock"))
    plain = tmp_path / "file"
    plain.write_text("x")
    with pytest.raises(UsageError, match="not a socket"):
        check_socket(str(plain))
    path = tmp_path / "ok.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        check_socket(str(path))  # no exception


# ------------------------------------------------------------------------------------------
# the scripted fake server

Handler = Callable[[dict, Callable[[dict], None]], "dict | None | str"]


class FakeQmp:
    """A one-client QMP server. ``handler(request, send)`` returns a reply dict, None (no
    reply), or "hangup" (close the connection); ``send`` emits events first."""

    def __init__(self, path: Path, handler: Handler, greet: bool = True) -> None:
        self.path = path
        self.handler = handler
        self.greet = greet
        self.requests: list[dict] = []
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            def send(msg: dict) -> None:
                conn.sendall(json.dumps(msg).encode() + b"\r\n")

            try:
                if not self.greet:
                    conn.recv(1)  # wait until the client gives up
                    return
                send(GREETING)
                for req in _messages(conn):
                    self.requests.append(req)
                    if req.get("execute") == "qmp_capabilities":
                        send({"return": {}, "id": req.get("id")})
                        continue
                    reply = self.handler(req, send)
                    if reply == "hangup":
                        return
                    if isinstance(reply, dict):
                        send({**reply, "id": req.get("id")})
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


def _messages(conn: socket.socket) -> Iterator[dict]:
    """JSON objects as the client sends them (QMP needs no newline between messages)."""
    decoder = json.JSONDecoder()
    buf = ""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return
        buf += chunk.decode()
        while buf.strip():
            try:
                obj, end = decoder.raw_decode(buf.lstrip())
            except json.JSONDecodeError:
                break
            buf = buf.lstrip()[end:]
            yield obj


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    d = tmp_path / "qmp"
    d.mkdir(mode=0o700)
    return d / "qmp.sock"


@pytest.fixture
def serve(sock_path: Path) -> Iterator[Callable[..., FakeQmp]]:
    servers: list[FakeQmp] = []

    def start(handler: Handler, greet: bool = True) -> FakeQmp:
        srv = FakeQmp(sock_path, handler, greet)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.close()


def test_execute_hmp_and_version(serve: Callable[..., FakeQmp], sock_path: Path) -> None:
    def handler(req: dict, send: Callable[[dict], None]) -> dict:
        if req["execute"] == "human-monitor-command":
            return {"return": f"ran {req['arguments']['command-line']}\r\n"}
        return {"return": {"status": "paused", "running": False}}

    srv = serve(handler)
    with QmpSession.connect(str(sock_path)) as s:
        assert s.qemu_version == "7.2.22"
        assert s.status() == "paused"
        assert s.hmp("info registers", cpu_index=1) == "ran info registers\n"
    hmp = [r for r in srv.requests if r["execute"] == "human-monitor-command"][0]
    assert hmp["arguments"] == {"command-line": "info registers", "cpu-index": 1}


def test_command_error_becomes_qmp_command_error(serve: Callable[..., FakeQmp],
                                                 sock_path: Path) -> None:
    serve(lambda req, send: {"error": {"class": "GenericError",
                                       "desc": "Invalid addr 0x40000000/size 16 specified"}})
    with QmpSession.connect(str(sock_path)) as s:
        with pytest.raises(QmpCommandError) as info:
            s.execute("memsave", {"val": 0x40000000, "size": 16, "filename": "/x"})
    assert info.value.error_class == "GenericError"
    assert "Invalid addr" in str(info.value) and info.value.command == "memsave"


def test_execute_many_is_one_batch_with_per_command_errors(serve: Callable[..., FakeQmp],
                                                           sock_path: Path) -> None:
    def handler(req: dict, send: Callable[[dict], None]) -> dict:
        if req["execute"] == "query-status":
            return {"return": {"status": "paused", "running": False}}
        if req["arguments"]["command-line"] == "info lapic":
            return {"error": {"class": "GenericError", "desc": "no local APIC"}}
        return {"return": "RAX=0\r\n"}

    srv = serve(handler)
    with QmpSession.connect(str(sock_path)) as s:
        status, regs, lapic = s.execute_many([
            ("query-status", None),
            ("human-monitor-command", {"command-line": "info registers"}),
            ("human-monitor-command", {"command-line": "info lapic"})])
    assert status["status"] == "paused" and regs == "RAX=0\r\n"
    assert isinstance(lapic, QmpCommandError) and lapic.desc == "no local APIC"
    assert [r["execute"] for r in srv.requests[1:]] == [
        "query-status", "human-monitor-command", "human-monitor-command"]


def test_execute_many_on_a_hangup_raises_target_gone(serve: Callable[..., FakeQmp],
                                                     sock_path: Path) -> None:
    serve(lambda req, send: "hangup")
    with QmpSession.connect(str(sock_path)) as s:
        with pytest.raises(TargetGone, match="gone"):
            s.execute_many([("query-status", None), ("query-status", None)])
        assert not s.alive


def test_a_session_never_closed_exits_quietly(serve: Callable[..., FakeQmp],
                                              sock_path: Path) -> None:
    """The CLI's open_target never closes its target: the interpreter must still exit without
    asyncio's "Task was destroyed but it is pending!" and tracebacks on stderr."""
    serve(lambda req, send: {"return": {"status": "running", "running": True}})
    code = ("import gc, sys\nfrom qmp_tools.session import QmpSession\n"
            "s = QmpSession.connect(sys.argv[1])\nprint(s.status())\ndel s\ngc.collect()\n")
    proc = subprocess.run([sys.executable, "-c", code, str(sock_path)], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0 and proc.stdout == "running\n"
    assert proc.stderr == ""


def test_hangup_mid_command_is_target_gone_then_stays_gone(serve: Callable[..., FakeQmp],
                                                           sock_path: Path) -> None:
    serve(lambda req, send: "hangup")
    with QmpSession.connect(str(sock_path)) as s:
        with pytest.raises(TargetGone, match="gone") as info:
            s.execute("pmemsave", {"val": 0, "size": 4096, "filename": "/x"})
        assert "\n" not in str(info.value)
        assert not s.alive
        with pytest.raises(TargetGone):
            s.status()


def test_no_reply_is_a_timeout(serve: Callable[..., FakeQmp], sock_path: Path) -> None:
    serve(lambda req, send: None)
    with QmpSession.connect(str(sock_path)) as s:
        with pytest.raises(QmpTimeout, match="did not answer query-status"):
            s.execute("query-status", timeout=0.2)


def test_no_greeting_names_the_one_client_limit(serve: Callable[..., FakeQmp],
                                                sock_path: Path) -> None:
    serve(lambda req, send: None, greet=False)
    with pytest.raises(QmpTimeout, match="one client per QMP socket"):
        QmpSession.connect(str(sock_path), timeout=0.3)


def test_connect_refused_when_nobody_listens(sock_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))  # a socket file without a listener
        with pytest.raises(TargetGone, match="cannot connect"):
            QmpSession.connect(str(sock_path))


def test_events_before_a_reply_are_collected_in_order(serve: Callable[..., FakeQmp],
                                                      sock_path: Path) -> None:
    def handler(req: dict, send: Callable[[dict], None]) -> dict:
        if req["execute"] == "cont":
            send({"event": "RESUME"})
            send(TRIPLE)
            send({"event": "STOP"})
        return {"return": {"status": "shutdown", "running": False}}

    serve(handler)
    with QmpSession.connect(str(sock_path)) as s:
        epoch = s.run_state_epoch
        s.execute("cont")
        assert s.run_state_epoch == epoch + 3
        got = s.wait_event(is_triple_fault, timeout=1)
        assert got is not None and got["data"]["reason"] == "guest-reset"
        assert [e["event"] for e in s.take_events()] == ["RESUME", "STOP"]
        assert s.poll_events() == []


def test_wait_event_times_out_with_none(serve: Callable[..., FakeQmp], sock_path: Path) -> None:
    serve(lambda req, send: {"return": {}})
    with QmpSession.connect(str(sock_path)) as s:
        assert s.wait_event("SHUTDOWN", timeout=0.2) is None


def test_wait_event_ends_with_target_gone_when_qemu_dies(serve: Callable[..., FakeQmp],
                                                         sock_path: Path) -> None:
    srv = serve(lambda req, send: "hangup")
    with QmpSession.connect(str(sock_path)) as s:
        with pytest.raises(TargetGone):
            s.execute("query-status")  # the server hangs up here
        with pytest.raises(TargetGone):
            s.wait_event("SHUTDOWN", timeout=5)
    srv.close()


def test_socket_dir_is_what_tests_use(sock_path: Path) -> None:
    assert os.stat(sock_path.parent).st_mode & 0o777 == 0o700
