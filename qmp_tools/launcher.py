"""Start QEMU on the bundled kernel (or a user's), the way every kdiag test and demo does.

``QemuInstance.start(QemuConfig(...))`` builds the kernel if stale (``make -C kernel``), prepares
a private run directory (mode 0700: ESP folder, a private copy of OVMF_VARS, the QMP sockets,
serial/debugcon/``-d`` logs), and starts::

    qemu-system-x86_64 -accel tcg -machine q35 -cpu max -m 256 -net none
        -no-reboot -no-shutdown -display none -vga std
        -drive if=pflash,...,readonly=on,file=OVMF_CODE_4M.fd -drive if=pflash,...,file=<run>/vars.fd
        -drive format=raw,file=fat:rw:<run>/esp
        -serial file:<run>/serial.log -debugcon file:<run>/debugcon.log
        -d int,cpu_reset -D <run>/qemu.log
        -gdb tcp:127.0.0.1:PORT          (loopback only; never -s)
        -qmp unix:<run>/qmp.sock,...     (the user's monitor: kdiag watch/shell/--qmp)
        -qmp unix:<run>/.launcher.sock   (private: the launcher's own status polling)

QEMU accepts one client per QMP socket, hence two: the launcher never occupies the user's.
The guest is never resumed or reset by the launcher (``-S`` with ``wait_gdb`` leaves the
``cont`` to gdb). ``stop()`` (also on exceptions, Ctrl-C and interpreter exit) ends QEMU:
``quit`` over QMP, then SIGTERM, then SIGKILL; QEMU also gets PR_SET_PDEATHSIG so it never
outlives its launcher.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from kdiag.errors import BuildError, LaunchError, ToolMissing, UsageError
from qmp_tools.net import loopback_host

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
KERNEL_DIR = PROJECT_ROOT / "kernel"
BUILD_DIR = KERNEL_DIR / "build"
KERNELS = {
    "x86_64": BUILD_DIR / "kernel-x86_64.elf",
    "i386": BUILD_DIR / "kernel-i386.elf",
}
LOADER_EFI = BUILD_DIR / "BOOTX64.EFI"
OVMF_DIRS = (Path("/usr/share/OVMF"), Path("/usr/share/ovmf"), Path("/usr/share/qemu"))
OVMF_CODE_NAMES = ("OVMF_CODE_4M.fd", "OVMF_CODE.fd")
READY_PATTERN = re.compile(r"\bready\b")
QEMU_BINARY = "qemu-system-x86_64"


class GuestStopped(LaunchError):
    """The guest stopped before the awaited line: triple fault, shutdown, or halted for good."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class WaitTimeout(LaunchError):
    """The awaited serial line did not appear in time."""


class Outcome(StrEnum):
    """How a batch boot ended; the CLI maps these to exit codes (see ``kdiag run --help``)."""

    READY = "ready"
    TRIPLE_FAULT = "triple-fault"
    HALTED = "halted"
    SHUTDOWN = "shutdown"
    EXITED = "exited"
    TIMEOUT = "timeout"


@dataclass
class QemuConfig:
    """What to boot and how. Paths default to files inside the private run directory.

    ``gdb_port``: None for no gdbstub, 0 to pick a free loopback port, else that port.
    ``gdb_host`` must be a loopback address (127.0.0.1, ::1 or localhost).
    """

    kernel: str = "x86_64"
    scenario: str = "healthy"
    gdb_port: int | None = None
    gdb_host: str = "127.0.0.1"
    wait_gdb: bool = False
    qmp_path: Path | None = None
    log_path: Path | None = None
    serial_path: Path | None = None
    log_items: str = "int,cpu_reset"
    no_reboot: bool = True
    no_shutdown: bool = True
    memory_mb: int = 256
    build: bool = True
    elf: Path | None = None  # a user's kernel instead of the bundled one
    extra_args: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# host checks


def require_tool(binary: str, package: str) -> str:
    """Return the path of ``binary`` or raise ToolMissing naming the Debian package."""
    path = shutil.which(binary)
    if not path:
        raise ToolMissing(f"{binary} not found: install the Debian package '{package}' "
                          f"(sudo apt-get install {package})")
    return path


def find_ovmf() -> tuple[Path, Path]:
    """Locate the OVMF code and vars images (Debian package ``ovmf``)."""
    for d in OVMF_DIRS:
        for code_name in OVMF_CODE_NAMES:
            code = d / code_name
            vars_ = d / code_name.replace("CODE", "VARS")
            if code.is_file() and vars_.is_file():
                return code, vars_
    raise ToolMissing("OVMF firmware not found in /usr/share/OVMF: install the Debian package "
                      "'ovmf' (sudo apt-get install ovmf)")


def check_loopback(host: str) -> str:
    """Accept only loopback hosts for the gdbstub (never listen on every interface)."""
    loopback = loopback_host(host)
    if loopback is not None:
        return loopback
    raise UsageError(f"gdb host {host!r} is not a loopback address: kdiag only listens on "
                     "127.0.0.1 (or ::1); use an SSH tunnel to debug from another machine")


def pick_port(host: str, port: int) -> int:
    """Return ``port`` if free on ``host`` (0: a free one); raise LaunchError if in use."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as err:
            raise LaunchError(f"gdb port {port} on {host} is in use ({err.strerror}); "
                              "pick another with --gdb 127.0.0.1:PORT") from err
        return int(s.getsockname()[1])


def parse_gdb_address(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``:PORT`` or ``PORT`` for ``--gdb`` (loopback enforced)."""
    host, _, port_s = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_s, 10)
    except ValueError:
        raise UsageError(f"--gdb expects HOST:PORT, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"--gdb port out of range: {port}")
    return check_loopback(host), port


def private_dir_for(path: Path) -> None:
    """Make sure a QMP socket's directory exists and is private (0700, ours)."""
    d = path.parent
    if not d.exists():
        d.mkdir(mode=0o700, parents=True)
    st = d.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise UsageError(f"QMP socket directory {d} must be private (mode 0700, owned by you); "
                         f"it is {oct(st.st_mode & 0o777)}: pick a path in a private directory")


# --------------------------------------------------------------------------------------------
# kernel build and scenarios


def build_kernel(kernel: str) -> Path:
    """Run ``make -C kernel`` (incremental) and return the ELF path. Raises BuildError."""
    require_tool("make", "make")
    require_tool("gcc", "gcc")
    target = "i386" if kernel == "i386" else "x86_64"
    proc = subprocess.run(["make", "-s", "-C", str(KERNEL_DIR), target],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise BuildError(f"building the {kernel} kernel failed (make -C kernel {target}):\n{tail}")
    elf = KERNELS[kernel]
    if not elf.is_file():
        raise BuildError(f"make succeeded but {elf} is missing")
    return elf


def known_scenarios(kernel: str = "x86_64") -> list[str]:
    """Scenario names the bundled kernel knows, from ``kernel/<arch>/scenarios.list``.

    That file (one name per line, ``#`` comments) is the single source: the kernel build
    generates its scenario table check from it and the launcher validates names against it.
    """
    listing = KERNEL_DIR / kernel / "scenarios.list"
    if not listing.is_file():
        return ["healthy"]
    names = []
    for line in listing.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.split()[0])
    return names


def check_scenario(kernel: str, scenario: str) -> None:
    """Raise UsageError listing the known scenarios when ``scenario`` is unknown."""
    names = known_scenarios(kernel)
    if scenario not in names:
        raise UsageError(f"unknown scenario {scenario!r} for the {kernel} kernel; "
                         f"known: {', '.join(names)}")


# --------------------------------------------------------------------------------------------
# the QEMU process


def _pdeathsig() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setpgrp()  # own process group: Ctrl-C in the terminal goes to the launcher only


_live: set[QemuInstance] = set()


def _stop_all() -> None:
    for inst in list(_live):
        inst.stop()


atexit.register(_stop_all)


class QemuInstance:
    """A running QEMU. Use ``start()``; always ``stop()`` (or use it as a context manager)."""

    def __init__(self, config: QemuConfig, run_dir: Path, argv: list[str],
                 proc: subprocess.Popen[bytes], gdb_port: int | None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.argv = argv
        self.proc = proc
        self.gdb_port = gdb_port
        self.gdb_host = config.gdb_host
        self.qmp_path = config.qmp_path or run_dir / "qmp.sock"
        self.launcher_qmp_path = run_dir / ".launcher.sock"
        self.log_path = config.log_path or run_dir / "qemu.log"
        self.serial_path = config.serial_path or run_dir / "serial.log"
        self.debugcon_path = run_dir / "debugcon.log"
        self.stderr_path = run_dir / "qemu.stderr"
        self._qmp: Any = None
        self.last_event: dict[str, Any] | None = None
        self._echoed = 0
        _live.add(self)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def start(cls, config: QemuConfig, run_dir: Path | None = None) -> QemuInstance:
        """Build (unless ``config.build`` is False), prepare the run dir, start QEMU."""
        qemu = require_tool(QEMU_BINARY, "qemu-system-x86")
        if config.kernel not in KERNELS:
            raise UsageError(f"unknown kernel {config.kernel!r}; known: {', '.join(KERNELS)}")
        if config.elf is None:
            check_scenario(config.kernel, config.scenario)
        if run_dir is None:
            run_dir = Path(tempfile.mkdtemp(prefix="kdiag-run-"))  # mkdtemp: mode 0700
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(run_dir, 0o700)
        if config.qmp_path is not None:
            private_dir_for(config.qmp_path)
        gdb_port = None
        if config.gdb_port is not None:
            host = check_loopback(config.gdb_host)
            gdb_port = pick_port(host, config.gdb_port)
        elf = config.elf
        if elf is None:
            elf = build_kernel(config.kernel) if config.build else KERNELS[config.kernel]
        if not Path(elf).is_file():
            raise LaunchError(f"kernel ELF {elf} not found (run `make kernel`)")
        argv = cls._argv(qemu, config, run_dir, Path(elf), gdb_port)
        stderr = open(run_dir / "qemu.stderr", "wb")  # noqa: SIM115 - owned by the process
        log.debug("starting %s", " ".join(argv))
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                                preexec_fn=_pdeathsig, cwd=run_dir)
        stderr.close()
        inst = cls(config, run_dir, argv, proc, gdb_port)
        try:
            inst._connect_private_qmp()
        except BaseException:
            inst.stop()
            raise
        return inst

    @staticmethod
    def _argv(qemu: str, cfg: QemuConfig, run: Path, elf: Path, gdb_port: int | None) -> list[str]:
        serial = cfg.serial_path or run / "serial.log"
        logf = cfg.log_path or run / "qemu.log"
        qmp = cfg.qmp_path or run / "qmp.sock"
        argv = [qemu, "-accel", "tcg", "-cpu", "max", "-net", "none", "-display", "none",
                "-serial", f"file:{serial}",
                "-debugcon", f"file:{run / 'debugcon.log'}", "-global", "isa-debugcon.iobase=0xe9",
                "-qmp", f"unix:{qmp},server=on,wait=off",
                "-qmp", f"unix:{run / '.launcher.sock'},server=on,wait=off"]
        if cfg.log_items:
            argv += ["-d", cfg.log_items, "-D", str(logf)]
        if cfg.no_reboot:
            argv.append("-no-reboot")
        if cfg.no_shutdown:
            argv.append("-no-shutdown")
        if gdb_port is not None:
            host = cfg.gdb_host if ":" not in cfg.gdb_host else f"[{cfg.gdb_host}]"
            argv += ["-gdb", f"tcp:{host}:{gdb_port}"]
        if cfg.wait_gdb:
            argv.append("-S")
        if cfg.kernel == "i386":
            argv += ["-m", str(min(cfg.memory_mb, 128)), "-vga", "none",
                     "-kernel", str(elf), "-append", f"scenario={cfg.scenario}"]
        else:
            code, vars_template = find_ovmf()
            vars_copy = run / "OVMF_VARS.fd"
            shutil.copyfile(vars_template, vars_copy)
            esp = run / "esp"
            boot = esp / "EFI" / "BOOT"
            boot.mkdir(parents=True, exist_ok=True)
            if not LOADER_EFI.is_file():
                raise LaunchError(f"UEFI loader {LOADER_EFI} missing (run `make kernel`)")
            shutil.copyfile(LOADER_EFI, boot / "BOOTX64.EFI")
            shutil.copyfile(elf, esp / "kernel.elf")
            (esp / "kdiag.cfg").write_text(f"scenario={cfg.scenario}\n")
            argv += ["-machine", "q35", "-m", str(cfg.memory_mb), "-vga", "std",
                     "-drive", f"if=pflash,format=raw,readonly=on,file={code}",
                     "-drive", f"if=pflash,format=raw,file={vars_copy}",
                     "-drive", f"format=raw,file=fat:rw:{esp}"]
        return argv + list(cfg.extra_args)

    def _connect_private_qmp(self, timeout: float = 10.0) -> None:
        from qemu.qmp.legacy import QEMUMonitorProtocol

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise LaunchError(f"QEMU exited at start (code {self.proc.returncode}): "
                                  f"{self.stderr_tail() or 'no message'}")
            if self.launcher_qmp_path.exists():
                try:
                    qmp = QEMUMonitorProtocol(str(self.launcher_qmp_path))
                    qmp.connect(negotiate=True)
                    qmp.settimeout(5.0)
                    self._qmp = qmp
                    return
                except (OSError, Exception) as err:  # qemu.qmp raises its own ConnectError
                    log.debug("QMP connect retry: %s", err)
            if time.monotonic() > deadline:
                raise LaunchError("QEMU did not open its QMP socket within "
                                  f"{timeout:.0f}s: {self.stderr_tail() or 'no message'}")
            time.sleep(0.05)

    # -- observation --------------------------------------------------------------------------
    def stderr_tail(self, n: int = 3) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    def serial_text(self) -> str:
        try:
            return self.serial_path.read_text(errors="replace")
        except OSError:
            return ""

    def serial_lines(self) -> list[str]:
        return [ln.rstrip("\r") for ln in self.serial_text().splitlines()]

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run a QMP command on the launcher's private monitor; returns its ``return`` value."""
        if self._qmp is None:
            raise LaunchError("QEMU is not running")
        try:
            # qemu.qmp >= 0.0.3: cmd_raw() returns the whole reply; cmd() only its "return"
            # value (raising on errors). Older versions only have cmd(), returning the reply.
            if hasattr(self._qmp, "cmd_raw"):
                reply = self._qmp.cmd_raw(command, arguments or None)
            else:
                reply = self._qmp.cmd(command, **arguments) if arguments else self._qmp.cmd(command)
        except Exception as err:
            raise LaunchError(f"QMP {command} failed: QEMU gone? ({err})") from err
        if "error" in reply:
            raise LaunchError(f"QMP {command}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    def hmp(self, command_line: str) -> str:
        return str(self.qmp("human-monitor-command", **{"command-line": command_line}))

    def status(self) -> str:
        """QEMU's run state (``running``, ``paused``, ``shutdown``, ``prelaunch``, ...)."""
        return str(self.qmp("query-status")["status"])

    def events(self) -> list[dict[str, Any]]:
        if self._qmp is None:
            return []
        with contextlib.suppress(Exception):
            self._qmp.settimeout(0.0)
            evs = list(self._qmp.get_events(wait=False))
            self._qmp.clear_events()
            self._qmp.settimeout(5.0)
            return evs
        return []

    def guest_halted_for_good(self) -> bool:
        """True when every CPU sits in HLT with RFLAGS.IF=0: nothing but an NMI wakes it.

        Kernel-agnostic "the kernel gave up" test (a panic or exception handler's cli;hlt).
        """
        from kdiag.qemulog.regdump import halted_for_good

        try:
            return halted_for_good(self.hmp("info registers -a"))
        except LaunchError:
            return False

    def check_alive(self) -> None:
        """Raise GuestStopped when the guest shut down, triple-faulted or QEMU exited."""
        if self.proc.poll() is not None:
            raise GuestStopped(f"QEMU exited with code {self.proc.returncode}",
                               Outcome.EXITED.value)
        for ev in self.events():
            if ev.get("event") == "SHUTDOWN":
                self.last_event = ev
        if self.last_event is not None or self.status() == "shutdown":
            reason = (self.last_event or {}).get("data", {}).get("reason", "")
            if reason == "guest-reset" or reason == "":
                raise GuestStopped("the guest triple-faulted (QEMU reports a guest reset; "
                                   "the machine is frozen by -no-reboot -no-shutdown)",
                                   Outcome.TRIPLE_FAULT.value)
            raise GuestStopped(f"the guest shut down ({reason})", Outcome.SHUTDOWN.value)

    def wait_serial(self, pattern: str | re.Pattern[str], timeout: float = 120.0,
                    halt_check: bool = True, on_line: Any = None) -> str:
        """Wait until a serial line matches ``pattern``; return it.

        Raises GuestStopped (triple fault, shutdown, exit, or halted with IF=0 when
        ``halt_check``) or WaitTimeout. ``on_line`` is called with each new serial line.
        """
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        last_halt_check = 0.0
        while True:
            text = self.serial_text()
            lines = [ln.rstrip("\r") for ln in text.splitlines()]
            # the last line may be partial: only complete lines count
            complete = lines if text.endswith("\n") else lines[:-1]
            for i, line in enumerate(complete):
                if on_line and i >= self._echoed:
                    on_line(line)
                    self._echoed = i + 1
                if rx.search(line):
                    return line
            self.check_alive()
            now = time.monotonic()
            if halt_check and now - last_halt_check > 1.0:
                last_halt_check = now
                if self.guest_halted_for_good():
                    raise GuestStopped("the guest halted with interrupts disabled "
                                       "(a kernel panic or exception handler stopped it)",
                                       Outcome.HALTED.value)
            if now > deadline:
                raise WaitTimeout(f"no serial line matching {rx.pattern!r} within {timeout:g}s")
            time.sleep(0.1)

    def flush_echo(self, on_line: Any) -> None:
        """Pass serial lines not yet given to an ``on_line`` callback (after the guest stopped)."""
        lines = self.serial_lines()
        for line in lines[self._echoed:]:
            on_line(line)
        self._echoed = len(lines)

    def wait_stopped(self, timeout: float = 120.0) -> str:
        """Wait until the guest stops (triple fault, halt, shutdown or exit); return the outcome."""
        deadline = time.monotonic() + timeout
        last = 0.0
        while time.monotonic() < deadline:
            try:
                self.check_alive()
                if time.monotonic() - last > 1.0:
                    last = time.monotonic()
                    if self.guest_halted_for_good():
                        return Outcome.HALTED.value
            except GuestStopped as stop:
                return stop.reason
            time.sleep(0.1)
        return Outcome.TIMEOUT.value

    # -- teardown -----------------------------------------------------------------------------
    def stop(self) -> None:
        """End QEMU (QMP quit, then SIGTERM, then SIGKILL). Idempotent."""
        _live.discard(self)
        if self.proc.poll() is None and self._qmp is not None:
            with contextlib.suppress(Exception):
                self._qmp.settimeout(2.0)
                self._qmp.cmd("quit")
        if self._qmp is not None:
            with contextlib.suppress(Exception):
                self._qmp.close()
            self._qmp = None
        for sig, wait in ((None, 3.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)

    def __enter__(self) -> QemuInstance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def gdb_attach_hint(self, elf: Path | None = None) -> str:
        """The gdb command line that attaches to this QEMU with the kdiag extension."""
        if self.gdb_port is None:
            return "(no gdbstub: start with --gdb 127.0.0.1:PORT)"
        elf = elf or self.config.elf or KERNELS[self.config.kernel]
        return (f"gdb -q -ex 'set architecture i386:x86-64' -ex 'file {elf}' "
                f"-ex 'source {PROJECT_ROOT / 'gdbext' / 'init.py'}' "
                f"-ex 'target remote {self.gdb_host}:{self.gdb_port}'")


@contextlib.contextmanager
def booted(config: QemuConfig, ready: str | None = r"\[kernel\] ready",
           timeout: float = 180.0) -> Iterator[QemuInstance]:
    """Start QEMU, wait for ``ready`` on serial (unless None), yield, always stop."""
    inst = QemuInstance.start(config)
    try:
        if ready is not None:
            inst.wait_serial(ready, timeout=timeout)
        yield inst
    finally:
        inst.stop()
