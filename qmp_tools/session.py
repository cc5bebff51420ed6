"""A synchronous QMP session on ``qemu.qmp.QMPClient`` for the CLI, the watch and the shell.

``QmpSession.connect(address)`` opens one QMP connection and owns a private asyncio event loop;
every call runs that loop until the reply arrives or its timeout expires, so nothing in kdiag
needs to be asynchronous and nothing can hang. Addresses are a unix socket path (``PATH`` or
``unix:PATH``) or a TCP port on a loopback address (``HOST:PORT``/``tcp:HOST:PORT``; any other
host is refused, QMP has no authentication).

Errors (all :class:`kdiag.errors.TargetError`, one-line messages)::

    TargetError
     +-- QmpCommandError      QEMU answered with an error (``error_class``, ``desc``, ``command``)
     +-- TargetGone           no QEMU at the address, it hung up, or it died mid-command
          +-- QmpTimeout      no reply within the call's timeout (QEMU stuck, or another client
                              holds the socket: QEMU serves one client per QMP socket)

Events (``SHUTDOWN``, ``STOP``, ``RESUME``...) are queued as they arrive; :meth:`poll_events`
returns the ones received so far (after one round trip, so every event QEMU emitted before
the call is included) and :meth:`wait_event` blocks for the next one that matches.
The pure helpers (:func:`parse_address`, :func:`is_triple_fault`, :func:`stop_reason`) are
what the unit tests exercise.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import logging
import os
import stat
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from kdiag.errors import TargetError, TargetGone, UsageError
from qmp_tools.net import loopback_host

log = logging.getLogger(__name__)
# qemu.qmp logs dropped late replies (after a timeout) as warnings; keep them off the terminal
# unless the application configured logging.
logging.getLogger("qemu.qmp").addHandler(logging.NullHandler())

Address = str | tuple[str, int]
Event = dict[str, Any]
T = TypeVar("T")

CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 10.0

#: Events after which the machine state the client cached may be stale.
RUN_STATE_EVENTS = frozenset({"RESUME", "STOP", "RESET", "SHUTDOWN", "POWERDOWN", "SUSPEND",
                              "WAKEUP", "GUEST_PANICKED"})


class QmpCommandError(TargetError):
    """QEMU refused a command. Carries ``command``, ``error_class`` and ``desc`` (QMP reply)."""

    def __init__(self, message: str, command: str = "", error_class: str = "",
                 desc: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.error_class = error_class
        self.desc = desc


class QmpTimeout(TargetGone):
    """QEMU did not answer in time (it is stuck, or another client holds the socket)."""


# ------------------------------------------------------------------------------------------
# pure helpers


def parse_address(text: str | os.PathLike[str] | tuple[str, int]) -> Address:
    """Turn ``PATH``, ``unix:PATH``, ``HOST:PORT`` or ``tcp:HOST:PORT`` into a QMP address.

    TCP is accepted on loopback hosts only (127.0.0.0/8, ::1, ``localhost``): QMP has no
    authentication, so kdiag never talks to it across a network. Raises UsageError.
    """
    if isinstance(text, tuple):
        host, port = text
        return _loopback(host, text), int(port)
    s = os.fspath(text)
    if s.startswith("unix:"):
        return s[len("unix:"):]
    tcp = s.startswith("tcp:")
    if tcp:
        s = s[len("tcp:"):]
    host, sep, port_s = s.rpartition(":")
    if sep and port_s.isdigit() and "/" not in s and (tcp or host):
        host = host.strip("[]") or "127.0.0.1"
        port = int(port_s)
        if not 0 < port < 65536:
            raise UsageError(f"QMP port out of range in {text!r}")
        return _loopback(host, text), port
    if tcp:
        raise UsageError(f"QMP address {text!r}: expected tcp:HOST:PORT")
    return s


def _loopback(host: str, text: object) -> str:
    loopback = loopback_host(host)
    if loopback is not None:
        return loopback
    raise UsageError(f"QMP address {text!r} is not on a loopback host: kdiag only talks QMP "
                     "over a unix socket or 127.0.0.1 (QMP has no authentication)")


def describe_address(address: Address) -> str:
    return address if isinstance(address, str) else f"{address[0]}:{address[1]}"


def check_socket(path: str) -> None:
    """Refuse what cannot be a QEMU QMP socket before connecting; warn on a shared directory.

    Raises TargetGone if nothing is there (QEMU not started, or gone) and UsageError if the
    path is not a socket or belongs to another user.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TargetGone(f"no QMP socket at {path}: is QEMU running (with -qmp unix:{path},"
                         "server=on,wait=off)?") from None
    except OSError as err:
        raise TargetGone(f"cannot reach the QMP socket {path}: {err.strerror}") from err
    if not stat.S_ISSOCK(st.st_mode):
        raise UsageError(f"{path} is not a socket (give QEMU's -qmp unix: socket path)")
    uid = os.getuid()
    if uid != 0 and st.st_uid != uid:
        raise UsageError(f"QMP socket {path} belongs to another user (uid {st.st_uid}); "
                         "kdiag only attaches to your own QEMU")
    parent = Path(path).resolve().parent
    with contextlib.suppress(OSError):
        pst = parent.stat()
        if pst.st_mode & 0o077:
            log.warning("QMP socket directory %s is not private (mode %o); prefer a 0700 "
                        "directory (kdiag run does this)", parent, pst.st_mode & 0o777)


def is_triple_fault(event: Mapping[str, Any]) -> bool:
    """``SHUTDOWN {guest: true, reason: guest-reset}``: how QEMU 7.2 reports a triple fault.

    With ``-no-reboot`` a guest-initiated reset (triple fault, or a reset through the keyboard
    controller/port 0xcf9) becomes a shutdown; ``-no-shutdown`` then stops the machine with its
    state preserved. QEMU has no separate triple-fault reason (notes section 3).
    """
    if event.get("event") != "SHUTDOWN":
        return False
    data = event.get("data") or {}
    return data.get("reason") == "guest-reset" and data.get("guest", True) is not False


def stop_reason(event: Mapping[str, Any]) -> str | None:
    """The reason of a ``SHUTDOWN`` event (``guest-reset``, ``guest-shutdown``, ...), else None."""
    if event.get("event") != "SHUTDOWN":
        return None
    return str((event.get("data") or {}).get("reason", "unknown"))


def event_time(event: Mapping[str, Any]) -> float | None:
    """QEMU's wall-clock timestamp of an event (seconds since the epoch), if present."""
    ts = event.get("timestamp") or {}
    try:
        return float(ts["seconds"]) + float(ts.get("microseconds", 0)) / 1e6
    except (KeyError, TypeError, ValueError):
        return None


def event_filter(names: str | Iterable[str] | None = None,
                 predicate: Callable[[Event], bool] | None = None) -> Callable[[Event], bool]:
    """A predicate accepting events named in ``names`` (all if None) that pass ``predicate``."""
    wanted = {names} if isinstance(names, str) else (set(names) if names is not None else None)

    def accept(event: Event) -> bool:
        if wanted is not None and event.get("event") not in wanted:
            return False
        return predicate(event) if predicate is not None else True

    return accept


def to_qmp_int(value: int) -> int:
    """QAPI ``int`` is int64: pass addresses >= 2**63 as their two's-complement value."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


# ------------------------------------------------------------------------------------------
# the session

#: Sessions not closed yet, held strongly: a session dropped without ``close()`` (the CLI's
#: ``open_target`` hands its target to the command and never closes it) would otherwise be
#: garbage-collected with qemu.qmp's reader/writer tasks still pending on its private loop,
#: and asyncio prints "Task was destroyed but it is pending!" plus tracebacks on stderr.
_open_sessions: set[QmpSession] = set()


@atexit.register
def _close_open_sessions() -> None:
    """Close the sessions a caller left open, while the interpreter is still whole."""
    for session in list(_open_sessions):
        session.close()


class QmpSession:
    """One synchronous QMP connection. Create with :meth:`connect`; ``close()`` when done.

    Every method takes ``timeout`` (seconds; default ``self.timeout``) and raises TargetGone,
    QmpTimeout or QmpCommandError as documented in the module docstring; never a raw
    ``qemu.qmp`` or ``asyncio`` exception.
    """

    def __init__(self, address: Address, timeout: float = COMMAND_TIMEOUT) -> None:
        from qemu.qmp import QMPClient

        self.address = address
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient("kdiag")
        self._events: collections.deque[Event] = collections.deque()
        self._gone: str | None = None
        self._closed = False
        self.greeting: dict[str, Any] = {}
        #: Incremented whenever an event in RUN_STATE_EVENTS is seen (cache invalidation).
        self.run_state_epoch = 0
        _open_sessions.add(self)

    # -- lifecycle --------------------------------------------------------------------------
    @classmethod
    def connect(cls, address: str | os.PathLike[str] | tuple[str, int],
                timeout: float = CONNECT_TIMEOUT,
                command_timeout: float = COMMAND_TIMEOUT) -> QmpSession:
        """Connect and negotiate capabilities; raise TargetGone/QmpTimeout/UsageError."""
        addr = parse_address(address)
        if isinstance(addr, str):
            check_socket(addr)
        session = cls(addr, timeout=command_timeout)
        where = describe_address(addr)
        try:
            session._run(session._client.connect(addr), timeout, "connect")
        except QmpTimeout:
            session.close()
            raise QmpTimeout(f"QEMU at {where} accepted the connection but sent no QMP "
                             f"greeting within {timeout:g}s: another client (kdiag watch/shell, "
                             "a launcher) probably holds it; QEMU serves one client per "
                             "QMP socket") from None
        except TargetGone as err:
            session.close()
            raise TargetGone(f"cannot connect to QMP at {where}: {err}") from err
        greeting = session._client.greeting
        if greeting is not None:
            with contextlib.suppress(Exception):
                session.greeting = dict(greeting._raw)
        return session

    def close(self) -> None:
        """Disconnect (never raises) and close the private loop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _open_sessions.discard(self)
        with contextlib.suppress(BaseException):
            self._loop.run_until_complete(asyncio.wait_for(self._client.disconnect(), 2.0))
        with contextlib.suppress(BaseException):
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(
                    asyncio.wait(pending, timeout=1.0))
        with contextlib.suppress(BaseException):
            self._loop.close()

    def __enter__(self) -> QmpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def where(self) -> str:
        return describe_address(self.address)

    @property
    def alive(self) -> bool:
        return self._gone is None and not self._closed

    @property
    def qemu_version(self) -> str:
        try:
            v = self.greeting["QMP"]["version"]["qemu"]
            return f"{v['major']}.{v['minor']}.{v['micro']}"
        except (KeyError, TypeError):
            return "unknown"

    # -- the event loop bridge ----------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None, what: str) -> T:
        from qemu.qmp import ExecInterruptedError, ExecuteError, QMPError
        from qemu.qmp.protocol import ConnectError

        if self._closed:
            coro.close()
            raise TargetGone(f"QMP session to {self.where} is closed")
        if self._gone is not None:
            coro.close()
            raise TargetGone(self._gone)
        limit = self.timeout if timeout is None else timeout
        try:
            return self._loop.run_until_complete(asyncio.wait_for(coro, limit))
        except TimeoutError:
            raise QmpTimeout(f"QEMU at {self.where} did not answer {what} within "
                             f"{limit:g}s") from None
        except (ExecuteError, ConnectError, ExecInterruptedError, EOFError, ConnectionError,
                OSError, QMPError) as err:
            raise self._translate(err, what) from err

    def _translate(self, err: BaseException, what: str) -> TargetError:
        """The kdiag error for a ``qemu.qmp``/socket exception raised while running ``what``."""
        from qemu.qmp import ExecuteError
        from qemu.qmp.protocol import ConnectError

        if isinstance(err, ExecuteError):
            desc = str(err)
            return QmpCommandError(f"QEMU refused {what}: {desc}", command=what,
                                   error_class=str(err.error_class), desc=desc)
        if isinstance(err, ConnectError):
            inner = err.exc
            reason = (getattr(inner, "strerror", None) or str(inner) or type(inner).__name__)
            if isinstance(inner, EOFError):
                reason = "QEMU closed the connection"
            return TargetGone(reason)
        self._gone = (f"QEMU at {self.where} is gone (the QMP connection closed during "
                      f"{what})")
        return TargetGone(self._gone)

    def _collect(self) -> None:
        """Move events the client has received into our queue (no I/O)."""
        queue = self._client.events
        for ev in queue.clear():
            event = dict(ev)
            if event.get("event") in RUN_STATE_EVENTS:
                self.run_state_epoch += 1
            self._events.append(event)

    # -- commands ---------------------------------------------------------------------------
    def execute(self, command: str, arguments: Mapping[str, Any] | None = None,
                timeout: float | None = None) -> Any:
        """Run a QMP command; return its ``return`` value."""
        try:
            return self._run(self._client.execute(command, dict(arguments) if arguments else None),
                             timeout, command)
        finally:
            self._collect()

    def execute_many(self, calls: Iterable[tuple[str, Mapping[str, Any] | None]],
                     timeout: float | None = None) -> list[Any]:
        """Send several commands at once and wait for all replies (one round trip).

        QEMU runs them in order; the result list holds each ``return`` value, or the
        :class:`QmpCommandError` QEMU answered that command with (returned, not raised, so
        one refusal does not hide the other replies). A lost connection still raises.
        """
        from qemu.qmp import ExecInterruptedError, ExecuteError, QMPError

        batch = [(c, dict(a) if a else None) for c, a in calls]
        what = " + ".join(c for c, _ in batch)

        async def run_all() -> list[Any]:
            return await asyncio.gather(*(self._client.execute(c, a) for c, a in batch),
                                        return_exceptions=True)

        try:
            replies = self._run(run_all(), timeout, what)
        finally:
            self._collect()
        out: list[Any] = []
        for (command, _), reply in zip(batch, replies, strict=True):
            if isinstance(reply, ExecuteError):
                out.append(self._translate(reply, command))
            elif isinstance(reply, (ExecInterruptedError, EOFError, ConnectionError, OSError,
                                    QMPError)):
                raise self._translate(reply, command) from reply
            elif isinstance(reply, BaseException):
                raise reply
            else:
                out.append(reply)
        return out

    def hmp(self, command_line: str, timeout: float | None = None,
            cpu_index: int | None = None) -> str:
        """Run a human-monitor (HMP) command line through ``human-monitor-command``.

        ``cpu_index`` selects the monitor's current CPU (``info registers``, ``x``, ``memsave``).
        """
        args: dict[str, Any] = {"command-line": command_line}
        if cpu_index is not None:
            args["cpu-index"] = cpu_index
        out = self.execute("human-monitor-command", args, timeout)
        return str(out).replace("\r\n", "\n")

    def status(self, timeout: float | None = None) -> str:
        """QEMU's run state: ``running``, ``paused``, ``shutdown``, ``prelaunch``, ``debug``..."""
        reply = self.execute("query-status", timeout=timeout)
        return str(reply.get("status", "unknown"))

    # -- events -----------------------------------------------------------------------------
    def poll_events(self, timeout: float | None = None) -> list[Event]:
        """Every event QEMU emitted up to now (one round trip), removed from the queue."""
        self.execute("query-status", timeout=timeout)
        out = list(self._events)
        self._events.clear()
        return out

    def pending_events(self) -> list[Event]:
        """Events already received, without I/O (they stay queued)."""
        self._collect()
        return list(self._events)

    def take_events(self) -> list[Event]:
        """Events already received, without I/O, removed from the queue."""
        self._collect()
        out = list(self._events)
        self._events.clear()
        return out

    def wait_event(self, accept: Callable[[Event], bool] | str | Iterable[str] | None = None,
                   timeout: float | None = None) -> Event | None:
        """Block until an accepted event arrives; return it, or None when ``timeout`` expires.

        Events that do not match are kept in the queue in order. ``timeout=None`` waits
        forever (QEMU dying still ends the wait with TargetGone).
        """
        pred = accept if callable(accept) else event_filter(accept)
        self._collect()
        for ev in list(self._events):
            if pred(ev):
                self._events.remove(ev)
                return ev
        loop_deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            remaining = None if loop_deadline is None else loop_deadline - self._loop.time()
            if remaining is not None and remaining <= 0:
                return None
            step = 1.0 if remaining is None else min(1.0, remaining)
            try:
                got = self._run(self._next_event(), step, "event wait")
            except QmpTimeout:
                self._check_connection()
                continue
            event = dict(got)
            if event.get("event") in RUN_STATE_EVENTS:
                self.run_state_epoch += 1
            if pred(event):
                return event
            self._events.append(event)

    async def _next_event(self) -> Any:
        return await self._client.events.get()

    def _check_connection(self) -> None:
        from qemu.qmp.protocol import Runstate

        if self._client.runstate != Runstate.RUNNING:
            self._gone = f"QEMU at {self.where} is gone (the QMP connection closed)"
            raise TargetGone(self._gone)
