"""What every generated IDE configuration does, independent of the IDE.

One debug session is always the same four gdb steps, in this order, then ``continue``:

1. ``set architecture i386:x86-64`` - before connecting, even for the 32-bit kernel, or gdb
   fails with "Remote 'g' packet reply is too long" (QEMU's stub always sends the x86-64
   register layout; notes section 5);
2. ``file KERNEL.elf`` - the kernel's symbols (DWARF, or STABS for the i386 kernel);
3. ``source GDBEXT/init.py`` - the kdiag gdb extension (``kd gdt``, ``kd triage``, ...);
4. ``target remote 127.0.0.1:PORT`` - QEMU's gdbstub, loopback only.

QEMU itself is started by ``kdiag run --wait-gdb --gdb 127.0.0.1:PORT`` (paused with ``-S``
until gdb continues), which prints a line containing ``waiting for gdb on 127.0.0.1:PORT``
once the stub listens: IDEs wait for that line before attaching.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from kdiag.errors import UsageError

ARCH_COMMAND = "set architecture i386:x86-64"
SCENARIO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KERNELS = ("x86_64", "i386")


def gdb_quote(path: Path | str) -> str:
    """A path as a gdb command argument (double-quoted only when it has to be)."""
    s = str(path)
    if not re.search(r'[\s"\\]', s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class IdeSpec:
    """Inputs of the generators. Paths are absolute; ``python`` runs kdiag (``-m kdiag``)."""

    project_root: Path  # the kdiag checkout: gdbext/init.py lives here
    elf: Path  # symbol file
    kernel: str = "x86_64"
    scenario: str | None = None
    port: int = 1234
    host: str = "127.0.0.1"
    python: str = "python3"
    gdb: str = "gdb"
    extra_run_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise UsageError(f"unknown kernel {self.kernel!r}; known: {', '.join(KERNELS)}")
        if self.scenario is not None and not SCENARIO_RE.match(self.scenario):
            raise UsageError(f"scenario name {self.scenario!r} is not a plain name "
                             "(letters, digits, '-', '_', '.')")
        if not 0 < self.port < 65536:
            raise UsageError(f"gdb port out of range: {self.port}")
        if self.host not in ("127.0.0.1", "::1", "localhost"):
            raise UsageError(f"gdb host {self.host!r} is not loopback")

    # -- names ------------------------------------------------------------------------------
    @property
    def suffix(self) -> str:
        return f"{self.kernel}" + (f", {self.scenario}" if self.scenario else "")

    @property
    def config_name(self) -> str:
        """The debug configuration's name (the merge key in launch.json / .run)."""
        return f"kdiag: debug QEMU ({self.suffix})"

    @property
    def task_label(self) -> str:
        """The label of the task/configuration that starts QEMU."""
        return f"kdiag: start QEMU ({self.suffix})"

    @property
    def stop_label(self) -> str:
        return f"kdiag: stop QEMU ({self.suffix})"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def init_py(self) -> Path:
        return self.project_root / "gdbext" / "init.py"

    # -- what runs --------------------------------------------------------------------------
    def run_args(self) -> list[str]:
        """Arguments after ``kdiag``: start QEMU paused, gdbstub on loopback."""
        args = ["run", "--wait-gdb", "--gdb", self.address, "--kernel", self.kernel]
        if self.scenario:
            args += ["--scenario", self.scenario]
        return args + list(self.extra_run_args)

    def kdiag_argv(self) -> list[str]:
        return [self.python, "-m", "kdiag"]

    def gdb_setup_commands(self) -> list[str]:
        """The four gdb CLI commands of a session, in order (see the module docstring)."""
        return [ARCH_COMMAND,
                f"file {gdb_quote(self.elf)}",
                f"source {gdb_quote(self.init_py)}",
                f"target remote {self.address}"]

    @property
    def ready_regex(self) -> str:
        """Matches the launcher's line once the gdbstub listens (a VS Code endsPattern)."""
        return "waiting for gdb on " + re.escape(self.address)
