"""GdbTarget: the Target protocol over gdb attached to QEMU's gdbstub (QEMU 7.2, gdb 13).

Sources:

- the CPU state: ``monitor info registers`` (``-a`` when there are several CPUs; the block of
  the selected thread's CPU), parsed by :func:`kdiag.qemulog.regdump.parse_register_dump`:
  general registers, RIP, RFLAGS, segment caches, GDTR, IDTR, TR, LDTR, CR0-4, EFER, CPL and
  the HLT state (the same ``env`` fields gdb's ``g`` packet carries); CR8 and KERNEL_GS_BASE,
  which the dump lacks, from gdb's registers of the newest frame (so ``up`` does not change
  them). The MSR injection snapshots gdb's registers separately and checks them against the
  dump;
- virtual memory: gdb's ``read_memory`` (QEMU translates with the CPU's own page tables);
  reads of 1 KiB or more go through ``monitor memsave`` (QEMU's own virtual-address dump,
  the same translation) when QEMU runs on this host and has one CPU. Within one command
  (one GdbTarget; the guest does not run) bytes read once are served again from memory, and
  :meth:`GdbTarget.prefetch_virt` reads several nearby tables in one request;
- physical memory: ``Qqemu.PhyMemMode:1`` around the read, the previous mode restored
  afterwards (:meth:`GdbTarget.physical_reads` keeps it on across many reads); reads of
  64 KiB or more go through ``monitor pmemsave``. Both file paths write into a private
  (0700) temporary directory and are checked once per connection against a packet read.
  QEMU's physical mode returns zeros for addresses outside RAM, so reads are checked against
  ``monitor info mtree -f`` (read once per stop);
- MSRs: EFER and the FS/GS/KERNEL_GS bases from gdb's registers; any other MSR by *injecting*
  ``rdmsr`` (:meth:`GdbTarget.read_msr`).

MSR injection (Intel SDM Vol. 2B RDMSR; executes only at CPL 0):

1. refuse, with the reason, when: QEMU is not paused or is in ``paused (shutdown)`` after a
   triple fault (a step would hang); CPL is not 0; the CPU is in virtual-8086 mode or SMM;
   the CPU is halted with RFLAGS.IF=0 (nothing would wake it); QEMU's single-step flags let
   interrupts in (``qqemu.sstep`` lacks NOIRQ); a gdb breakpoint or a guest debug register
   (DR0-3/DR7) is set on the instruction at RIP; the MSR is not one kdiag knows (reading an
   MSR the CPU lacks raises #GP inside the guest) unless ``force``; gdb's cached registers
   differ from QEMU's own dump (the guest ran behind gdb's back);
2. save the two code bytes at CS.base+RIP; snapshot every integer register of gdb's
   register set (general registers, RIP, RFLAGS, segment selectors, FS/GS/KERNEL_GS bases,
   CR0/2/3/4/8, EFER) for the final comparison;
3. write ``0f 32`` at RIP and read it back (refuse if it did not stick: ROM/flash);
4. set ECX = index, clear RFLAGS.TF, single-step only this CPU with a raw
   ``vCont;s:pP.T`` packet under a 2 s ``remotetimeout`` (a raw step bypasses gdb's stop
   machinery: no hooks, no MI ``*stopped``, no breakpoint insertion); QEMU's NOIRQ step flag
   keeps interrupts from being delivered during the step;
5. require RIP = old RIP + 2 (else: the step was diverted or timed out; restore and say so);
   read EDX:EAX (one ``g`` packet);
6. restore the code bytes (one ``M``) and whichever of RAX/RCX/RDX/RIP/RFLAGS changed (one
   ``P`` each), then re-read every register from QEMU (a fresh ``g`` packet, not gdb's cache)
   and the code bytes, and compare with the snapshot; a mismatch raises
   :class:`TargetError` naming the register or byte (and drops gdb's register cache).

Packets go straight to the stub (``maintenance packet``; gdb's ``set $reg`` costs several
round trips). gdb's own register cache is never written: it still holds the
snapshot, which the final comparison proves equal to the CPU's registers again, so gdb needs
no re-read afterwards. A value read by injection is kept until the guest next runs
(:data:`STOP_CACHE`, keyed by the general registers too), so a second ``kd pat`` at the same
stop runs no code; the method note says which happened.

A CPU that was halted (HLT) resumes after the ``hlt`` instead of sleeping until its next
interrupt (the step woke it); the method note says so.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import gdb  # type: ignore[import-not-found]

from kdiag._record import replace
from kdiag.errors import (
    InputError,
    MemoryReadError,
    MsrUnavailable,
    TargetError,
    TargetGone,
    TranslationError,
)
from kdiag.qemulog.regdump import parse_register_dump
from kdiag.x86.msr import Msr, msr_name
from kdiag.x86.state import CpuState

T = TypeVar("T")

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15")
# The integer registers of QEMU's x86-64 register set: snapshot and verified by the injection.
INT_REGS = (*GPRS, "rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs", "fs_base", "gs_base",
            "k_gs_base", "cr0", "cr2", "cr3", "cr4", "cr8", "efer")
PMEMSAVE_MIN = 64 * 1024
MEMSAVE_MIN = 1024  # a virtual read this big costs more as packets than as one memsave
VCACHE_MAX = 1 << 20  # bytes of virtual memory kept per command
PACKET = 4096
PAGE = 4096
_RECEIVED = re.compile(r'received: "(.*)"', re.S)
_STATUS = re.compile(r"VM status:\s*(.*)")
_DR = re.compile(r"\b(DR[0-7])=([0-9a-fA-F]+)")

MSR_EFER = 0xC0000080
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_KERNEL_GS_BASE = 0xC0000102
PASSIVE_MSRS = {MSR_EFER: "efer", MSR_FS_BASE: "fs_base", MSR_GS_BASE: "gs_base",
                MSR_KERNEL_GS_BASE: "k_gs_base"}
KNOWN_MSRS = frozenset(int(m) for m in Msr)
# MSRs whose value changes while the guest is stopped or that count time: never cached.
UNCACHED_MSRS = frozenset({int(Msr.IA32_TSC)})


class _StopCache:
    """Facts that hold until the guest next runs, shared by the commands typed at one stop.

    Cleared on every gdb ``cont``/``stop``/``exited`` event, when the connection changes and
    when the user changes memory or a register through gdb (``memory_changed``,
    ``register_changed``). Holds QEMU's PhyMemMode and single-step flags (which only a user's
    own ``maintenance packet`` changes: the injection verifies its outcome anyway), QEMU's
    memory map, and MSR values read by injection, keyed by CPU, index *and* the general
    registers at the time (a guest resumed behind gdb's back, e.g. over QMP, changes them and
    misses the cache).
    """

    def __init__(self) -> None:
        self.values: dict[object, object] = {}
        self.connected = False

    def clear(self, *_: object) -> None:
        self.values.clear()

    def connect(self) -> None:
        if self.connected:
            return
        for name in ("cont", "stop", "exited", "new_inferior", "inferior_deleted",
                     "connection_removed", "new_thread", "memory_changed", "register_changed"):
            event = getattr(gdb.events, name, None)
            if event is not None:
                event.connect(self.clear)
        self.connected = True

    def key(self, *parts: object) -> tuple[object, ...]:
        inf = gdb.selected_inferior()
        conn = getattr(inf, "connection_num", None)
        return (inf.num, inf.pid, conn, *parts)

    def remember(self, name: str, kind: type[T], compute: Callable[[], T]) -> T:
        """The value cached under ``name`` at this stop (of type ``kind``), else
        ``compute()``, cached until the guest next runs."""
        key = self.key(name)
        value = self.values.get(key)
        if not isinstance(value, kind):
            value = self.values[key] = compute()
        return value


STOP_CACHE = _StopCache()
# Facts about one gdb connection (QEMU process): CPU count, the remote register layout, whether
# QEMU's files (memsave/pmemsave) reach this process. Keyed by _conn_key().
_CONN: dict[tuple[object, ...], dict[str, Any]] = {}
_FILES: dict[str, str] = {}


def _conn_key() -> tuple[object, ...]:
    inf = gdb.selected_inferior()
    return (inf.num, inf.pid, getattr(inf, "connection_num", None))


def _conn() -> dict[str, Any]:
    return _CONN.setdefault(_conn_key(), {})


def forget() -> None:
    """Drop everything cached for the current stop (benchmarks call this for cold runs)."""
    STOP_CACHE.clear()


def _private_dir() -> str:
    """One private (0700) directory per gdb process for QEMU's memsave/pmemsave files, on a
    tmpfs when there is one (creating a file there costs less), removed at exit."""
    path = _FILES.get("dir")
    if path is None or not os.path.isdir(path):
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) \
            else None
        path = tempfile.mkdtemp(prefix="kdiag-gdb-", dir=base)  # mode 0700
        _FILES["dir"] = path
        if not _FILES.get("atexit"):
            atexit.register(_remove_private_dir)
            _FILES["atexit"] = "1"
    return path


def _remove_private_dir() -> None:
    _close_dump_fd()
    path = _FILES.pop("dir", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)


_DUMP_FD: list[int] = []  # the open descriptor of _FILES["file"], once created


def _dump_fd() -> int | None:
    """The descriptor of QEMU's memsave/pmemsave file in the private directory, created
    empty (0600) on first use and kept open; None if it cannot be created."""
    if _DUMP_FD:
        return _DUMP_FD[0]
    path = os.path.join(_private_dir(), "mem.bin")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError:
        return None
    _FILES["file"] = path
    _DUMP_FD.append(fd)
    return fd


def _close_dump_fd() -> None:
    _FILES.pop("file", None)
    while _DUMP_FD:
        with contextlib.suppress(OSError):
            os.close(_DUMP_FD.pop())


def _read_replaced_file() -> bytes:
    """What QEMU wrote when the file at our path is no longer the one we hold open (it was
    deleted and QEMU created a new one): read and empty it by name, then hold that one."""
    path = _FILES.get("file", "")
    _close_dump_fd()
    with open(path, "r+b") as f:
        data = f.read()
        f.truncate(0)
    _FILES["file"] = path
    _DUMP_FD.append(os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC))
    return data


def _execute(cmd: str) -> str:
    try:
        return str(gdb.execute(cmd, to_string=True))
    except gdb.error as err:
        raise _target_error(cmd, err) from err


def _target_error(what: str, err: BaseException) -> TargetError:
    text = str(err)
    if "Remote connection closed" in text or "not being run" in text or \
            "The program has no registers" in text:
        return TargetGone(f"gdb lost the target ({text}); reconnect with "
                          "`target remote 127.0.0.1:PORT`")
    return TargetError(f"`{what}` failed: {text}")


def _send(payload: str) -> str:
    """Send one raw remote packet and return the reply, through ``maintenance packet``.
    (Python's ``RemoteTargetConnection.send_packet`` costs the same round trip but makes gdb
    drop its frame cache: the next register read then re-reads the stack, about 0.2 ms.)"""
    out = _execute(f"maintenance packet {payload}")
    m = _RECEIVED.search(out)
    if not m:
        raise TargetError(f"no reply to packet {payload!r}: {out.strip()[:80]!r}")
    return m.group(1)


@dataclass(frozen=True)
class MsrRead:
    """What one injected (or passive) MSR read did, for the output's method line."""

    index: int
    value: int
    method: str


def _gdb_registers(names: Iterable[str]) -> dict[str, int]:
    """gdb's (cached) values of ``names`` in the newest frame, as unsigned 64-bit integers;
    a register this architecture lacks is left out. No packet after a stop."""
    frame = gdb.newest_frame()
    out: dict[str, int] = {}
    for name in names:
        try:
            out[name] = int(frame.read_register(name)) & (2**64 - 1)
        except (ValueError, gdb.error):
            continue
    return out


class GdbTarget:
    """A Target for the gdb-selected CPU of a QEMU attached over the gdbstub.

    Create one per command: it caches the register state and the memory it read, and must
    not outlive a resume of the guest.
    """

    name = "gdb"
    msr_reads_are_passive = False  # most MSR reads step the guest (see read_msr)
    bulk_read_max = 16 << 20

    def __init__(self, use_pmemsave: bool = True) -> None:
        self._check_connected()
        STOP_CACHE.connect()
        self._conn = _conn()  # this connection's facts (looked up once: the command is short)
        self._local: bool | None = None
        self._state: CpuState | None = None
        self._dump: str | None = None
        self._dumped: CpuState | None = None
        self._user_phys_mode: bool | None = None
        self._cur_phys: bool | None = None  # QEMU's PhyMemMode as kdiag left it
        self._hold = 0  # physical_reads() depth
        self._ram: list[object] | None = None
        self._use_pmemsave = use_pmemsave
        self._vcache: list[tuple[int, bytes]] = []
        self._last_dump_error = ""
        self._vcache_bytes = 0
        self._regs: dict[str, int] | None = None
        self.msr_method = ""
        self.last_msr: MsrRead | None = None
        # Decided up front, so the first page-table read of a stop already reads ahead: with
        # QEMU on this host one pmemsave brings a whole window of tables (checked on first use;
        # if QEMU's files do not reach us the hints drop back to 0 and packets are used).
        bulk = use_pmemsave and self._files_ok() is not False and self._local_qemu()
        self.bulk_read_gap = 256 * 1024 if bulk else 0
        self.table_readahead: int | None = None if bulk else 0  # None: TableCache's default

    # -- plumbing -------------------------------------------------------------------------------
    @staticmethod
    def _check_connected() -> None:
        inf = gdb.selected_inferior()
        if inf is None or inf.pid == 0 or gdb.selected_thread() is None:
            raise TargetError("not connected to a QEMU: run `target remote 127.0.0.1:PORT` "
                              "(after `set architecture i386:x86-64`)")
        th = gdb.selected_thread()
        if th.is_running():
            raise TargetError("the guest is running: interrupt it first (Ctrl-C) or use "
                              "all-stop mode")
        if th.is_exited():
            raise TargetGone("the selected thread has exited")

    def packet(self, payload: str) -> str:
        """Send a raw remote packet; return the reply payload."""
        return _send(payload)

    def monitor(self, command: str) -> str:
        try:
            return _execute(f"monitor {command}")
        except TargetGone:
            raise
        except TargetError as err:
            raise TargetError(f"`monitor {command}` failed: is this QEMU's gdbstub? ({err})") \
                from err

    @property
    def thread_ptid(self) -> tuple[int, int, int]:
        return tuple(gdb.selected_thread().ptid)  # type: ignore[return-value]

    @property
    def cpu_index(self) -> int:
        """QEMU numbers gdb threads cpu_index + 1."""
        return max(0, self.thread_ptid[1] - 1)

    def cpu_count(self) -> int:
        """QEMU's CPU count, from ``monitor info cpus`` once per connection (``Inferior.threads``
        refreshes gdb's thread list, which costs several round trips and drops gdb's caches)."""
        conn = self._conn
        if "cpus" not in conn:
            text = self.monitor("info cpus")
            conn["cpus"] = max(1, len(re.findall(r"(?m)^\W*CPU #\d+", text)))
        return int(conn["cpus"])

    def vm_status(self) -> str:
        m = _STATUS.search(self.monitor("info status"))
        return m.group(1).strip() if m else "unknown"

    # -- registers ----------------------------------------------------------------------------
    def monitor_dump(self) -> str:
        """The ``info registers`` block of the selected thread's CPU (cached)."""
        if self._dump is None:
            multi = self.cpu_count() > 1
            text = self.monitor("info registers -a" if multi else "info registers")
            if multi:
                blocks = re.split(r"(?m)^(?=CPU#\d+)", text)
                want = f"CPU#{self.cpu_index}"
                chosen = [b for b in blocks if b.strip().startswith(want)]
                if not chosen:
                    raise TargetError(f"`monitor info registers -a` has no {want} block")
                text = chosen[0]
            self._dump = text
        return self._dump

    def registers(self) -> dict[str, int]:
        """gdb's (cached) integer registers of the newest frame; no packet after a stop."""
        if self._regs is None:
            self._regs = _gdb_registers(INT_REGS)
        return self._regs

    def dumped_state(self) -> CpuState:
        """QEMU's own register dump, parsed (before gdb's registers are laid over it)."""
        if self._dumped is None:
            try:
                self._dumped = parse_register_dump(self.monitor_dump())
            except InputError as err:
                raise TargetError(f"cannot parse QEMU's register dump: {err}") from err
        return self._dumped

    def state(self) -> CpuState:
        """QEMU's dump of this CPU, plus CR8 and KERNEL_GS_BASE from gdb's registers (the dump
        lacks them). The dump's general registers, RIP, RFLAGS, CR0-4, EFER and segment bases
        are the values gdb's ``g`` packet carries (QEMU's ``x86_cpu_gdb_read_register`` and
        ``x86_cpu_dump_state`` read the same ``env`` fields, both masked to 32 bits outside
        64-bit code); gdb's copy is only older if the guest ran behind gdb's back. Reading two
        registers instead of 33 saves a sixth of a table command's time."""
        if self._state is not None:
            return self._state
        dumped = self.dumped_state()
        extra = _gdb_registers(("cr8", "k_gs_base"))
        st = replace(dumped, cr8=extra.get("cr8", dumped.cr8),
                     kernel_gs_base=extra.get("k_gs_base", dumped.kernel_gs_base),
                     cpu_index=self.cpu_index)
        self._state = st
        return st

    def invalidate(self) -> None:
        self._state = None
        self._dump = None
        self._dumped = None
        self._regs = None
        self._vcache.clear()
        self._vcache_bytes = 0

    # -- virtual memory -------------------------------------------------------------------------
    def read_virt(self, va: int, size: int) -> bytes:
        if size <= 0:
            return b""
        hit = self._vcache_get(va, size)
        if hit is not None:
            return hit
        data = self._read_virt_uncached(va, size)
        self._vcache_put(va, data)
        return data

    def _vcache_get(self, va: int, size: int) -> bytes | None:
        for start, data in self._vcache:
            off = va - start
            if 0 <= off and off + size <= len(data):
                return data[off:off + size]
        return None

    def _vcache_put(self, va: int, data: bytes) -> None:
        if self._vcache_bytes + len(data) <= VCACHE_MAX:
            self._vcache.append((va, data))
            self._vcache_bytes += len(data)

    def _read_virt_uncached(self, va: int, size: int) -> bytes:
        if size >= MEMSAVE_MIN and self._memsave_usable():
            data = self._memsave(va, size)
            if data is not None:
                return data
        with self._virtual_mode():
            try:
                return bytes(gdb.selected_inferior().read_memory(va, size))
            except gdb.MemoryError as err:
                raise TranslationError(f"cannot read virtual {va:#x}+{size:#x}: {err}",
                                       va=va) from err
            except gdb.error as err:
                raise MemoryReadError(f"virtual read {va:#x}+{size:#x} failed: {err}",
                                      addr=va, size=size, physical=False) from err

    def prefetch_virt(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Read these (va, size) ranges ahead, merging the ones that share pages, so the reads
        that follow in this command cost no round trip. Merged spans never touch a page that
        no requested range touches; a span that cannot be read is simply not cached (the real
        read then reports the exact error)."""
        want = sorted((va, va + size) for va, size in ranges
                      if size > 0 and self._vcache_get(va, size) is None)
        if not want:
            return
        # One memsave costs the same for 8 bytes or a few pages; through 2 KiB packets a wide
        # gap costs packets of its own, so only near neighbours are merged then.
        max_gap = VCACHE_MAX if self._memsave_usable() else 256
        spans: list[list[int]] = []
        for start, end in want:
            if spans and (start >> 12) <= ((spans[-1][1] - 1) >> 12) + 1 and \
                    start - spans[-1][1] <= max_gap and end - spans[-1][0] <= VCACHE_MAX:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
        for start, end in spans:
            try:
                self.read_virt(start, end - start)
            except (TranslationError, MemoryReadError):
                continue

    def probe_mapped(self, vas: Iterable[int]) -> dict[int, bool | None]:
        """Page number -> whether one byte of it reads through the guest's paging (None:
        unknown). Pages already read in this command cost nothing; two adjacent pages are
        probed with one 2-byte read across their boundary."""
        pages = sorted({(va & (2**64 - 1)) >> 12 for va in vas})
        out: dict[int, bool | None] = {}
        todo = []
        for p in pages:
            if self._vcache_get(p << 12, 1) is not None or any(
                    start >> 12 <= p <= (start + len(data) - 1) >> 12
                    for start, data in self._vcache):
                out[p] = True
            else:
                todo.append(p)
        i = 0
        while i < len(todo):
            p = todo[i]
            if i + 1 < len(todo) and todo[i + 1] == p + 1:
                try:
                    self.read_virt(((p + 1) << 12) - 1, 2)
                    out[p] = out[p + 1] = True
                    i += 2
                    continue
                except (TranslationError, MemoryReadError):
                    pass
            out[p] = self._mapped_one(p << 12)
            i += 1
        return out

    def _mapped_one(self, va: int) -> bool | None:
        try:
            self.read_virt(va, 1)
            return True
        except (TranslationError, MemoryReadError):
            return False
        except TargetGone:
            raise
        except TargetError:
            return None

    # -- physical memory ------------------------------------------------------------------------
    def read_phys(self, pa: int, size: int) -> bytes:
        if size < 0 or pa < 0:
            raise MemoryReadError(f"bad physical read {pa:#x}+{size:#x}", addr=pa, size=size)
        if size == 0:
            return b""
        self._check_ram(pa, size)
        if size >= PMEMSAVE_MIN and self._pmemsave_usable():
            data = self._pmemsave(pa, size)
            if data is not None:
                return data
        with self._physical_mode():
            try:
                return bytes(gdb.selected_inferior().read_memory(pa, size))
            except (gdb.MemoryError, gdb.error) as err:
                raise MemoryReadError(f"physical read {pa:#x}+{size:#x} failed: {err}",
                                      addr=pa, size=size) from err

    def _phys_mode_now(self) -> bool:
        """The user's PhyMemMode (kdiag restores it after each switch), asked once per stop."""
        if self._user_phys_mode is None:
            def ask() -> bool:
                try:
                    return self.packet("qqemu.PhyMemMode").strip() == "1"
                except TargetGone:
                    raise
                except TargetError:
                    return False

            self._user_phys_mode = STOP_CACHE.remember("phys-mode", bool, ask)
        return self._user_phys_mode

    def _mode_now(self) -> bool:
        if self._cur_phys is None:
            self._cur_phys = self._phys_mode_now()
        return self._cur_phys

    def _set_phys_mode(self, on: bool) -> None:
        reply = self.packet(f"Qqemu.PhyMemMode:{int(on)}")
        if reply != "OK":
            raise TargetError(f"QEMU refused PhyMemMode:{int(on)} ({reply!r}): physical reads "
                              "need QEMU's gdbstub (QEMU >= 4.2)")
        self._cur_phys = on
        # gdb caches code/stack memory (and frames built from it): what it read in the other
        # mode must not survive the switch.
        with contextlib.suppress(TargetError):
            _execute("maintenance flush dcache")
        if not on:
            _execute("maintenance flush register-cache")

    @contextlib.contextmanager
    def _in_mode(self, phys: bool) -> Iterator[None]:
        prev = self._mode_now()
        if prev == phys:
            yield
            return
        self._set_phys_mode(phys)
        try:
            yield
        finally:
            if not (phys and self._hold):  # inside physical_reads(): stay physical
                self._set_phys_mode(prev)

    def _physical_mode(self) -> contextlib.AbstractContextManager[None]:
        return self._in_mode(True)

    def _virtual_mode(self) -> contextlib.AbstractContextManager[None]:
        return self._in_mode(False)

    @contextlib.contextmanager
    def physical_reads(self) -> Iterator[None]:
        """Keep QEMU's physical mode on across the reads inside (one switch on, one back),
        instead of switching around each read; the user's mode is restored at the end."""
        self._hold += 1
        try:
            yield
        finally:
            self._hold -= 1
            # Nothing to undo unless a packet read switched the mode (pmemsave needs none).
            if not self._hold and self._cur_phys is not None and \
                    self._cur_phys != self._phys_mode_now():
                self._set_phys_mode(self._phys_mode_now())

    def _check_ram(self, pa: int, size: int) -> None:
        """QEMU's physical mode reads zeros outside RAM; refuse instead of inventing bytes."""
        ram = self.memory_map()
        if ram:
            from qmp_tools.target import check_readable

            check_readable(ram, pa, size)  # type: ignore[arg-type]

    def memory_map(self) -> list[object]:
        """QEMU's flat memory map (``monitor info mtree -f``), read once per stop; empty when
        it cannot be parsed (then reads are not checked against it)."""
        if self._ram is None:
            def read() -> list[object]:
                try:
                    from qmp_tools.target import parse_mtree_flat

                    return list(parse_mtree_flat(self.monitor("info mtree -f")))
                except TargetGone:
                    raise
                except Exception:  # no parser or odd output: no check rather than a false error
                    return []

            self._ram = STOP_CACHE.remember("mtree", list, read)
        return self._ram

    # -- QEMU's file dumps (memsave/pmemsave) ---------------------------------------------------
    def _local_qemu(self) -> bool:
        """Whether gdb's connection is to this host (loopback or a unix socket)."""
        if self._local is None:
            conn = getattr(gdb.selected_inferior(), "connection", None)
            details = str(getattr(conn, "details", "") or "")
            host = details.rsplit(":", 1)[0].strip("[]") if ":" in details else details
            self._local = host in ("127.0.0.1", "localhost", "::1", "") or \
                host.startswith("127.") or details.startswith("/")
        return self._local

    def _files_ok(self) -> bool | None:
        """Whether QEMU's memsave/pmemsave files reach this process (per connection; None:
        not tried yet)."""
        value = self._conn.get("files")
        return value if isinstance(value, bool) else None

    @property
    def _pmem_ok(self) -> bool | None:
        return self._files_ok() if self._use_pmemsave else False

    def _files_usable(self) -> bool:
        return self._use_pmemsave and self._files_ok() is not False and self._local_qemu()

    def _set_files_ok(self, ok: bool) -> None:
        self._conn["files"] = ok
        if not ok:
            self.bulk_read_gap = 0
            self.table_readahead = 0

    def _memsave_usable(self) -> bool:
        """``monitor memsave`` reads with the monitor's CPU (the first one unless the user
        chose another): used only when QEMU has one CPU."""
        return self._files_usable() and self.cpu_count() == 1

    def _pmemsave_usable(self) -> bool:
        if not self._files_usable():
            return False
        if self._files_ok() is None:
            try:
                probe_pa = self._ram_probe_address()
                a = self._dump_file("pmemsave", probe_pa, PACKET)
                with self._physical_mode():
                    b = bytes(gdb.selected_inferior().read_memory(probe_pa, PACKET))
                self._set_files_ok(a is not None and a == b)
            except TargetGone:
                raise
            except Exception:
                self._set_files_ok(False)
        return bool(self._files_ok())

    def _ram_probe_address(self) -> int:
        for r in self._ram or []:
            if getattr(r, "kind", "") == "ram":
                return int(getattr(r, "start", 0))
        return 0

    def _dump_file(self, cmd: str, addr: int, size: int) -> bytes | None:
        """Run ``monitor memsave|pmemsave ADDR SIZE FILE`` and return the file's bytes, or
        None when QEMU refused (bad address: it prints an error) or the file did not reach us.

        The file stays in the private directory between reads, open here, emptied after each
        one (the bytes of the guest do not linger, and tmpfs frees them): QEMU's
        ``fopen(.., "wb")`` of an existing file truncates the same inode, so one ``pread`` on
        the descriptor kept open reads what QEMU wrote, and no open, create or unlink follows
        (a 4 KiB memsave: 150-170 us, against 180-200 us opening the file by name each time;
        the monitor command alone is 140-150 us). QEMU writes nothing only when it also prints an
        error (``qmp_memsave``/``qmp_pmemsave``, QEMU 7.2 ``softmmu/cpus.c``), which refuses
        the read."""
        fd = _dump_fd()
        if fd is None:
            return None
        out = self.monitor(f'{cmd} {addr:#x} {size:#x} "{_FILES["file"]}"')
        self._last_dump_error = out.strip()
        try:
            data = os.pread(fd, size + 1, 0)
            if data:
                os.ftruncate(fd, 0)
            elif out.strip():
                if os.fstat(fd).st_nlink == 0:
                    _close_dump_fd()  # the directory was removed: start anew next time
            elif size:
                data = _read_replaced_file()  # the file was replaced (tmp cleaner): by name
        except OSError:
            _close_dump_fd()
            data = b""
        if out.strip() or len(data) != size:
            return None
        return data

    def _memsave(self, va: int, size: int) -> bytes | None:
        data = self._dump_file("memsave", va, size)
        if self._files_ok() is None:
            # First file of this connection: QEMU must have written it where we read it, with
            # the bytes gdb reads at the same address.
            if data is None:
                if "Invalid addr" not in self._last_dump_error:
                    self._set_files_ok(False)  # QEMU cannot write there or we cannot read it
                return None  # a bad address: the packet read decides; try files again later
            with self._virtual_mode():
                try:
                    check = bytes(gdb.selected_inferior().read_memory(va, min(size, 256)))
                except gdb.error:
                    return None
            self._set_files_ok(check == data[:len(check)])
            if not self._files_ok():
                return None
        return data

    def _pmemsave(self, pa: int, size: int, verify: bool = True) -> bytes | None:
        data = self._dump_file("pmemsave", pa, size)
        if data is None and verify:
            raise MemoryReadError(f"pmemsave {pa:#x}+{size:#x} failed", addr=pa, size=size)
        return data

    def close(self) -> None:
        self._vcache.clear()

    # -- MSRs -------------------------------------------------------------------------------------
    def read_msr(self, index: int, force: bool = False) -> int:
        """Read MSR ``index``: passively for EFER/FS/GS/KERNEL_GS bases, else by injection."""
        result = self.read_msrs([index], force=force)[index]
        if isinstance(result, str):
            raise MsrUnavailable(result, msr=index)
        return result.value

    def read_msrs(self, indices: list[int], force: bool = False) -> dict[int, MsrRead | str]:
        """Read several MSRs; the ones that need injection share one (see
        :func:`inject_rdmsrs`). Returns index -> :class:`MsrRead` or the reason it could not be
        read; raises :class:`MsrUnavailable` when no injection can run now.
        ``last_msr``/``msr_method`` describe the last index read."""
        out: dict[int, MsrRead | str] = {}
        keys: dict[int, object] = {}
        need: list[int] = []
        regs: tuple[tuple[str, int], ...] | None = None
        for index in dict.fromkeys(indices):
            if index in PASSIVE_MSRS:
                reg = PASSIVE_MSRS[index]
                try:
                    value = int(gdb.newest_frame().read_register(reg)) & (2**64 - 1)
                    out[index] = MsrRead(index, value,
                                         f"from gdb's ${reg} register; no code was run")
                except (ValueError, gdb.error) as err:
                    out[index] = f"gdb has no ${reg} register here: {err}"
                continue
            if index not in UNCACHED_MSRS:
                # The registers are in gdb's cache after a stop: the key costs no packet.
                if regs is None:
                    snap = self.registers()
                    regs = tuple((n, snap[n]) for n in (*GPRS, "rip", "eflags") if n in snap)
                keys[index] = STOP_CACHE.key("msr", self.cpu_index, index, regs)
                hit = STOP_CACHE.values.get(keys[index])
                if isinstance(hit, MsrRead) and (force or index in KNOWN_MSRS):
                    out[index] = replace(hit, method=hit.method + "; earlier at this stop (the "
                                         "guest has not run since), so this time no code was run")
                    continue
            need.append(index)
        if need:
            self._vcache.clear()  # the injection writes code bytes (and restores them)
            self._vcache_bytes = 0
            got = inject_rdmsrs(self, need, force=force)
            for index in need:
                read = got[index]
                out[index] = read
                if isinstance(read, MsrRead) and index in keys:
                    STOP_CACHE.values[keys[index]] = read
            if self._state is not None and self._state.halted:
                self.invalidate()  # the step woke the CPU from HLT: the cached dump says HLT=1
            # Otherwise the cached state stays valid: the restore was verified register by
            # register, and rdmsr changes no segment cache or system register.
        last = out[indices[-1]] if indices else None
        if isinstance(last, MsrRead):
            self.last_msr = last
            self.msr_method = last.method
        return out


# --------------------------------------------------------------------------------------------
# rdmsr injection


def _parse_drs(dump: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2), 16) for m in _DR.finditer(dump)}


def _exec_breakpoint_at(drs: dict[str, int], linear: int) -> str | None:
    """A guest debug register that breaks on executing ``linear`` (SDM Vol. 3B 17.2.4)."""
    dr7 = drs.get("DR7", 0)
    for i in range(4):
        enabled = dr7 >> (2 * i) & 3
        rw = dr7 >> (16 + 4 * i) & 3
        if enabled and rw == 0 and drs.get(f"DR{i}") == linear:
            return f"DR{i}"
    return None


def _gdb_breakpoint_at(addr: int) -> str | None:
    for bp in gdb.breakpoints() or ():
        if not bp.enabled or bp.type not in (gdb.BP_BREAKPOINT, getattr(gdb, "BP_HARDWARE_BREAKPOINT", -1)):
            continue
        for loc in getattr(bp, "locations", None) or ():
            if getattr(loc, "enabled", True) and getattr(loc, "address", None) == addr:
                return f"breakpoint {bp.number}"
        where = str(bp.location or "")
        if where.startswith("*"):
            with contextlib.suppress(ValueError, gdb.error):
                if int(gdb.parse_and_eval(where[1:])) == addr:
                    return f"breakpoint {bp.number}"
    return None


def _stale_registers(target: GdbTarget) -> str | None:
    """gdb's cached registers against QEMU's own dump of this command (low 32 bits: a 32-bit
    dump has only those): a difference means the guest ran behind gdb's back (QMP ``cont``),
    and restoring gdb's values would corrupt it."""
    dumped = target.dumped_state().gpr
    regs = target.registers()
    for name in (*GPRS, "rip"):
        if name in dumped and name in regs and (dumped[name] ^ regs[name]) & 0xFFFFFFFF:
            return (f"gdb's ${name} ({regs[name]:#x}) differs from QEMU's ({dumped[name]:#x}): "
                    "the guest ran behind gdb's back; run `maintenance flush register-cache` "
                    "(or stop it through gdb) first")
    return None


def refusal(target: GdbTarget, index: int, force: bool) -> str | None:
    """Why an rdmsr injection must not run now, or None."""
    status = target.vm_status()
    if "shutdown" in status:
        return ("QEMU reports 'paused (shutdown)': the guest triple-faulted, and a single step "
                "would hang (QEMU 7.2); MSRs cannot be read in this state")
    if not status.startswith("paused"):
        return f"QEMU is not paused (VM status: {status})"
    st = target.state()
    if st.effective_cpl != 0:
        return (f"the CPU is at CPL {st.effective_cpl}: rdmsr would raise #GP in the guest; "
                "stop it in kernel code (CPL 0) first")
    if st.rflags & (1 << 17):
        return "the CPU is in virtual-8086 mode (rdmsr would raise #GP)"
    dump = target.monitor_dump()
    if re.search(r"\bSMM=1\b", dump):
        return "the CPU is in system-management mode"
    if st.halted and not st.rflags & (1 << 9):
        return ("the CPU is halted (HLT) with interrupts disabled (IF=0): nothing would wake it "
                "to execute the injected instruction")
    sstep = STOP_CACHE.remember("sstep", str, lambda: target.packet("qqemu.sstep").strip())
    with contextlib.suppress(ValueError):
        if not int(sstep.removeprefix("sstep="), 16) & 0x2:
            return (f"QEMU's single-step flags ({sstep}) let interrupts in during a step; "
                    "set them with `maintenance packet Qqemu.sstep=0x7`")
    if index not in KNOWN_MSRS and not force:
        return (f"MSR {index:#x} is not one kdiag knows; if the CPU lacks it, rdmsr raises #GP "
                "inside the guest (kdiag would restore the registers, but the exception frame "
                "stays on the handler's stack). Use --force to read it anyway")
    linear = _code_address(st)
    dr = _exec_breakpoint_at(_parse_drs(dump), linear)
    if dr:
        return f"the guest's {dr} holds an instruction breakpoint at RIP (#DB would divert the step)"
    if str(gdb.parameter("breakpoint always-inserted")).lower() in ("on", "true"):
        bp = _gdb_breakpoint_at(st.rip)
        if bp:
            return f"gdb's {bp} is inserted at RIP (always-inserted on); the step would stop on it"
    return _stale_registers(target)


def _code_address(st: CpuState) -> int:
    """Linear address of the instruction at RIP: CS.base + RIP outside 64-bit mode."""
    if st.mode == "long":
        return st.rip
    cs = st.segments.get("cs")
    return ((cs.base if cs else 0) + st.rip) & 0xFFFFFFFF


def _set_reg(name: str, value: int) -> None:
    _execute(f"set ${name} = {value:#x}")


_REMOTE_REG = re.compile(
    r"^[ \t]*(\w+)[ \t]+\d+[ \t]+\d+[ \t]+\d+[ \t]+(\d+)[ \t]+\S+[ \t]+(\d+)[ \t]+(\d+)", re.M)


def _remote_layout() -> dict[str, tuple[int, int, int]]:
    """gdb register name -> (remote number, size, offset in the ``g`` packet), from
    ``maint print remote-registers`` (parsed once per connection)."""
    conn = _conn()
    if "layout" not in conn:
        out = _execute("maintenance print remote-registers")
        conn["layout"] = {m.group(1): (int(m.group(3)), int(m.group(2)), int(m.group(4)))
                          for m in _REMOTE_REG.finditer(out)}
    return conn["layout"]  # type: ignore[no-any-return]


class _RawRegs:
    """Registers straight from/to the stub: ``P`` writes one, ``g`` reads all of them fresh
    from QEMU (gdb's register cache is neither used nor changed)."""

    def __init__(self, target: GdbTarget) -> None:
        self.target = target
        self.layout = _remote_layout()
        self.through_gdb = False  # a register outside the layout went through gdb's cache

    def put(self, name: str, value: int) -> None:
        if name not in self.layout:
            _set_reg(name, value)
            self.through_gdb = True
            return
        num, size, _ = self.layout[name]
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little").hex()
        reply = self.target.packet(f"P{num:x}={data}")
        if reply != "OK":
            raise TargetError(f"QEMU refused to set ${name} (P packet reply {reply!r})")

    def all(self, names: Iterable[str]) -> dict[str, int]:
        """The registers ``names`` from one fresh ``g`` packet (a register the layout or the
        reply lacks is read with a ``p`` packet)."""
        names = list(names)
        reply = self.target.packet("g") if any(n in self.layout for n in names) else ""
        if reply.startswith("E") and len(reply) <= 3:
            raise TargetError(f"QEMU refused to send the registers (g reply {reply!r})")
        out: dict[str, int] = {}
        for name in names:
            where = self.layout.get(name)
            if where is None:  # not in the remote layout: ask gdb, afresh
                self.through_gdb = True
                _execute("maintenance flush register-cache")
                try:
                    out[name] = int(gdb.newest_frame().read_register(name)) & (2**64 - 1)
                except (ValueError, gdb.error) as err:
                    raise TargetError(f"cannot read ${name}: {err}") from err
                continue
            _, size, off = where
            text = reply[2 * off:2 * (off + size)]
            if len(text) != 2 * size or "x" in text:
                out[name] = self.get(name)
                continue
            out[name] = int.from_bytes(bytes.fromhex(text), "little")
        return out

    def get(self, name: str) -> int:
        reply = self.target.packet(f"p{self.layout[name][0]:x}")
        try:
            return int.from_bytes(bytes.fromhex(reply), "little")
        except ValueError as err:
            raise TargetError(f"bad reply to reading ${name}: {reply!r}") from err


def _read_code(target: GdbTarget, addr: int, size: int) -> bytes:
    reply = target.packet(f"m{addr:x},{size:x}")
    try:
        data = bytes.fromhex(reply)
    except ValueError:
        data = b""
    if len(data) != size:
        raise TargetError(f"cannot read the code bytes at {addr:#x} (m reply {reply[:16]!r})")
    return data


def _write_code(target: GdbTarget, addr: int, data: bytes) -> None:
    reply = target.packet(f"M{addr:x},{len(data):x}:{data.hex()}")
    if reply != "OK":
        raise TargetError(f"cannot write the code bytes at {addr:#x} (M reply {reply!r})")


def inject_rdmsr(target: GdbTarget, index: int, force: bool = False) -> MsrRead:
    """Execute ``rdmsr`` at RIP for ``index`` and restore everything (see module docstring)."""
    result = inject_rdmsrs(target, [index], force)[index]
    if isinstance(result, str):
        raise MsrUnavailable(result, msr=index)
    return result


def inject_rdmsrs(target: GdbTarget, indices: list[int],
                  force: bool = False) -> dict[int, MsrRead | str]:
    """Read several MSRs with one injection: the checks, the code-byte swap, the restore and
    the verification happen once; each MSR costs one step (ECX and RIP reset in between).

    Returns index -> :class:`MsrRead`, or the reason it could not be read. Raises
    :class:`MsrUnavailable` when nothing can be injected now (the shared refusals) and
    :class:`TargetError` when the restore cannot be verified.
    """
    out: dict[int, MsrRead | str] = {}
    todo: list[int] = []
    for index in dict.fromkeys(indices):
        if index not in KNOWN_MSRS and not force:
            out[index] = (f"cannot read {msr_name(index)} ({index:#x}): "
                          + str(refusal(target, index, force)))
        else:
            todo.append(index)
    if not todo:
        return out
    why = refusal(target, todo[0], force)
    if why:
        raise MsrUnavailable(f"cannot read {msr_name(todo[0])} ({todo[0]:#x}): {why}",
                             msr=todo[0])
    st = target.state()
    halted = bool(st.halted)
    code = _code_address(st)
    pid, lwp, _ = target.thread_ptid
    before = dict(target.registers())  # gdb's cache, just checked against QEMU's dump
    missing = [n for n in ("rax", "rcx", "rdx", "rip", "eflags") if n not in before]
    if missing:
        raise MsrUnavailable(f"cannot read {msr_name(todo[0])} ({todo[0]:#x}): gdb has no "
                             f"${', $'.join(missing)} here (set architecture i386:x86-64)",
                             msr=todo[0])
    raw = _RawRegs(target)
    values: dict[int, int] = {}
    with target._virtual_mode():
        try:
            saved = _read_code(target, code, 2)
        except TargetGone:
            raise
        except TargetError as err:
            raise MsrUnavailable(f"cannot read the code bytes at RIP ({code:#x}): {err}",
                                 msr=todo[0]) from err
        clean = True
        after: dict[str, int] = {}
        try:
            try:
                _write_code(target, code, b"\x0f\x32")
            except TargetGone:
                raise
            except TargetError as err:
                raise MsrUnavailable(f"cannot write at RIP ({code:#x}): {err}",
                                     msr=todo[0]) from err
            if _read_code(target, code, 2) != b"\x0f\x32":
                raise MsrUnavailable(f"the code at RIP ({code:#x}) is not writable (ROM/flash?)",
                                     msr=todo[0])
            if before["eflags"] & (1 << 8):
                raw.put("eflags", before["eflags"] & ~(1 << 8))  # no TF during the step
            old_timeout = str(gdb.parameter("remotetimeout"))
            if old_timeout != "2":  # gdb's default is already 2 s
                _execute("set remotetimeout 2")
            try:
                for n, index in enumerate(todo):
                    if n:
                        raw.put("rip", before["rip"])  # back onto the injected rdmsr
                    raw.put("rcx", index)
                    # A stop reply with RIP unchanged means nothing executed (a stale or
                    # spurious stop); stepping again is safe: the bytes and ECX are in place.
                    for _attempt in range(2):
                        reply = target.packet(f"vCont;s:p{pid:x}.{lwp:x}")
                        after = raw.all(("rip", "rax", "rdx"))
                        if after["rip"] != before["rip"] or not reply.startswith(("T05", "S05")):
                            break
                    name = f"{msr_name(index)} ({index:#x})"
                    if after["rip"] == before["rip"] + 2 and reply.startswith(("T05", "S05")):
                        values[index] = (after["rdx"] & 0xFFFFFFFF) << 32 | \
                            (after["rax"] & 0xFFFFFFFF)
                        continue
                    clean = False
                    if after["rip"] == before["rip"]:
                        out[index] = (f"cannot read {name}: the step did not execute (stop reply "
                                      f"{reply!r}): the CPU did not wake within 2 s or a "
                                      "breakpoint held it")
                    else:
                        out[index] = (f"cannot read {name}: the step was diverted to "
                                      f"{after['rip']:#x} (stop reply {reply!r}): rdmsr probably "
                                      "raised #GP; registers restored, the exception frame pushed "
                                      "by the CPU remains below the stack pointer")
                    for rest in todo[n + 1:]:
                        out[rest] = (f"cannot read {msr_name(rest)} ({rest:#x}): not tried after "
                                     f"{name} failed")
                    break
            finally:
                if old_timeout != "2":
                    _execute(f"set remotetimeout {old_timeout}")
        finally:
            # After clean rdmsr steps only RIP, RCX (ours), RAX and RDX changed (RDMSR affects
            # no flag; RFLAGS was written only to clear TF); anything else: restore all five.
            clean = clean and len(values) == len(todo)
            unchanged = {n for n in ("rax", "rdx") if clean and after.get(n) == before[n]}
            if clean and not before["eflags"] & (1 << 8):
                unchanged.add("eflags")
            problems = _restore(target, code, saved, before, raw, unchanged)
        if problems:
            with contextlib.suppress(TargetError):  # gdb must show the CPU's real registers
                _execute("maintenance flush register-cache")
            raise TargetError("RESTORE FAILED after rdmsr injection: " + "; ".join(problems)
                              + ". Fix them by hand (set $reg = value) before continuing.")
    target._vcache_put(code, saved)  # verified in place again: the code page is mapped
    note = (f"read by injecting rdmsr at RIP {before['rip']:#x}; code bytes {saved.hex(' ')} and "
            f"RAX/RCX/RDX/RIP/RFLAGS restored, all registers verified")
    if halted:
        note += ("; the CPU was halted (HLT) and now resumes after the hlt instead of waiting "
                 "for its next interrupt")
    for index, value in values.items():
        out[index] = MsrRead(index, value, note)
    return out


def _restore(target: GdbTarget, code: int, saved: bytes, before: dict[str, int],
             raw: _RawRegs, unchanged: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Put back the code bytes and RAX/RCX/RDX/RFLAGS/RIP (those not known ``unchanged``),
    then re-read every register of the snapshot from QEMU (a fresh ``g`` packet) and the
    bytes, and list what differs: the verification covers all of them whatever was written."""
    problems: list[str] = []
    try:
        _write_code(target, code, saved)
    except TargetGone:
        raise
    except TargetError as err:
        problems.append(f"code bytes at {code:#x} (write {saved.hex(' ')}): {err}")
    for name in ("rax", "rcx", "rdx", "eflags", "rip"):
        if name in unchanged:
            continue
        try:
            raw.put(name, before[name])
        except TargetGone:
            raise
        except TargetError as err:
            problems.append(f"${name} = {before[name]:#x}: {err}")
    try:
        now = raw.all(before)
        for name, val in before.items():
            if now.get(name) != val:
                problems.append(f"${name} is {now.get(name, 0):#x}, was {val:#x}")
        back = _read_code(target, code, len(saved))
        if back != saved:
            problems.append(f"code bytes at {code:#x} are {back.hex(' ')}, were {saved.hex(' ')}")
    except TargetGone:
        raise
    except TargetError as err:
        problems.append(f"verification read failed: {err}")
    if raw.through_gdb:  # gdb's cache saw intermediate values: let it read the restored ones
        with contextlib.suppress(TargetError):
            _execute("maintenance flush register-cache")
    return problems
