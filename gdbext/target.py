"""GdbTarget: the Target protocol over gdb attached to QEMU's gdbstub (QEMU 7.2, gdb 13).

Sources:

- general registers, RIP, RFLAGS, CR0/2/3/4/8, EFER and the FS/GS/KERNEL_GS bases: gdb's own
  registers of the selected thread (one ``g`` packet; read from the newest frame, so ``up``
  does not change them);
- GDTR, IDTR, TR, LDTR, segment caches, CPL and the HLT state: ``monitor info registers``
  (``-a`` when there are several CPUs; the block of the selected thread's CPU), parsed by
  :func:`kdiag.qemulog.regdump.parse_register_dump`;
- virtual memory: gdb's ``read_memory`` (QEMU translates with the CPU's own page tables);
- physical memory: ``maintenance packet Qqemu.PhyMemMode:1`` around the read, the previous
  mode restored afterwards (then ``maintenance flush register-cache``); reads of 64 KiB or
  more go through ``monitor pmemsave`` into a private (0700) temporary directory when QEMU
  runs on this host (checked once against a packet read). QEMU's physical mode returns
  zeros for addresses outside RAM, so reads are checked against ``monitor info mtree -f``;
- MSRs: EFER and the FS/GS/KERNEL_GS bases from gdb's registers; any other MSR by *injecting*
  ``rdmsr`` (:meth:`GdbTarget.read_msr`).

MSR injection (Intel SDM Vol. 2B RDMSR; executes only at CPL 0):

1. refuse, with the reason, when: QEMU is not paused or is in ``paused (shutdown)`` after a
   triple fault (a step would hang); CPL is not 0; the CPU is in virtual-8086 mode or SMM;
   the CPU is halted with RFLAGS.IF=0 (nothing would wake it); QEMU's single-step flags let
   interrupts in (``qqemu.sstep`` lacks NOIRQ); a gdb breakpoint or a guest debug register
   (DR0-3/DR7) is set on the instruction at RIP; the MSR is not one kdiag knows (reading an
   MSR the CPU lacks raises #GP inside the guest) unless ``force``;
2. save RAX, RCX, RDX, RIP, RFLAGS and the two code bytes at CS.base+RIP; snapshot every
   general register for the final comparison;
3. write ``0f 32`` at RIP and read it back (refuse if it did not stick: ROM/flash);
4. set ECX = index, clear RFLAGS.TF, single-step only this CPU with a raw
   ``vCont;s:pP.T`` packet under a 2 s ``remotetimeout`` (a raw step bypasses gdb's stop
   machinery: no hooks, no MI ``*stopped``, no breakpoint insertion); QEMU's NOIRQ step flag
   keeps interrupts from being delivered during the step;
5. require RIP = old RIP + 2 (else: the step was diverted or timed out; restore and say so);
   read EDX:EAX;
6. restore the code bytes and RAX/RCX/RDX/RIP/RFLAGS, then re-read everything and compare with
   the snapshot; a mismatch raises :class:`TargetError` naming the register or byte.

Registers are written and read with single-register ``P``/``p`` packets (one round trip each;
gdb's ``set $reg`` costs several) and gdb's register cache is flushed before the final
comparison, which reads all registers afresh through gdb. A value read by injection is kept
until the guest next runs (:data:`STOP_CACHE`, keyed by the general registers too), so a
second ``kd pat`` at the same stop runs no code; the method note says which happened.

A CPU that was halted (HLT) resumes after the ``hlt`` instead of sleeping until its next
interrupt (the step woke it); the method note says so.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace

import gdb  # type: ignore[import-not-found]

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

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15")
PMEMSAVE_MIN = 64 * 1024
PACKET = 4096
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

    Cleared on every gdb ``cont``/``stop``/``exited`` event and when the connection changes.
    Holds the CPU count, QEMU's PhyMemMode and single-step flags (which only a user's own
    ``maintenance packet`` changes: the injection verifies its outcome anyway), and MSR values
    read by injection, keyed by CPU, index *and* the general registers at the time (a guest
    resumed behind gdb's back, e.g. over QMP, changes them and misses the cache).
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
                     "connection_removed", "new_thread"):
            event = getattr(gdb.events, name, None)
            if event is not None:
                event.connect(self.clear)
        self.connected = True

    def key(self, *parts: object) -> tuple[object, ...]:
        inf = gdb.selected_inferior()
        conn = getattr(inf, "connection_num", None)
        return (inf.num, inf.pid, conn, *parts)


STOP_CACHE = _StopCache()
_CPU_COUNT: dict[tuple[object, ...], int] = {}


def forget() -> None:
    """Drop everything cached for the current stop (benchmarks call this for cold runs)."""
    STOP_CACHE.clear()


def _execute(cmd: str) -> str:
    try:
        return str(gdb.execute(cmd, to_string=True))
    except gdb.error as err:
        text = str(err)
        if "Remote connection closed" in text or "not being run" in text or \
                "The program has no registers" in text:
            raise TargetGone(f"gdb lost the target ({text}); reconnect with "
                             "`target remote 127.0.0.1:PORT`") from err
        raise TargetError(f"`{cmd}` failed: {text}") from err


@dataclass(frozen=True)
class MsrRead:
    """What one injected (or passive) MSR read did, for the output's method line."""

    index: int
    value: int
    method: str


class GdbTarget:
    """A Target for the gdb-selected CPU of a QEMU attached over the gdbstub.

    Create one per command: it caches the register state, the memory map and the physical
    mode it found, and must not outlive a resume of the guest.
    """

    name = "gdb"
    msr_reads_are_passive = False  # most MSR reads step the guest (see read_msr)

    def __init__(self, use_pmemsave: bool = True) -> None:
        self._check_connected()
        STOP_CACHE.connect()
        self._state: CpuState | None = None
        self._dump: str | None = None
        self._user_phys_mode: bool | None = None
        self._ram: list[object] | None = None
        self._use_pmemsave = use_pmemsave
        self._pmem_ok: bool | None = None
        self._pmem_dir: str | None = None
        self.bulk_read_gap = 0
        self.msr_method = ""
        self.last_msr: MsrRead | None = None

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
        out = _execute(f"maintenance packet {payload}")
        m = _RECEIVED.search(out)
        if not m:
            raise TargetError(f"no reply to packet {payload!r}: {out.strip()[:80]!r}")
        return m.group(1)

    def monitor(self, command: str) -> str:
        try:
            return _execute(f"monitor {command}")
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
        inf = gdb.selected_inferior()
        key = (inf.num, inf.pid, getattr(inf, "connection_num", None))
        if key not in _CPU_COUNT:
            text = self.monitor("info cpus")
            _CPU_COUNT[key] = max(1, len(re.findall(r"(?m)^\W*CPU #\d+", text)))
        return _CPU_COUNT[key]

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

    def _gdb_registers(self) -> dict[str, int]:
        frame = gdb.newest_frame()
        out: dict[str, int] = {}
        for name in (*GPRS, "rip", "eflags", "cr0", "cr2", "cr3", "cr4", "cr8", "efer", "fs_base",
                     "gs_base", "k_gs_base"):
            try:
                out[name] = int(frame.read_register(name)) & (2**64 - 1)
            except (ValueError, gdb.error):
                continue
        return out

    def state(self) -> CpuState:
        if self._state is not None:
            return self._state
        try:
            dumped = parse_register_dump(self.monitor_dump())
        except InputError as err:
            raise TargetError(f"cannot parse QEMU's register dump: {err}") from err
        regs = self._gdb_registers()
        gpr = dict(dumped.gpr)
        for name in GPRS:
            if name in regs:
                gpr[name] = regs[name]
        if "rip" in regs:
            gpr["rip"] = regs["rip"]
        if "eflags" in regs:
            gpr["rflags"] = regs["eflags"]
        st = replace(
            dumped, gpr=gpr,
            cr0=regs.get("cr0", dumped.cr0), cr2=regs.get("cr2", dumped.cr2),
            cr3=regs.get("cr3", dumped.cr3), cr4=regs.get("cr4", dumped.cr4),
            efer=regs.get("efer", dumped.efer), cr8=regs.get("cr8", dumped.cr8),
            fs_base=regs.get("fs_base", dumped.fs_base),
            gs_base=regs.get("gs_base", dumped.gs_base),
            kernel_gs_base=regs.get("k_gs_base", dumped.kernel_gs_base),
            cpu_index=self.cpu_index)
        self._state = st
        return st

    def invalidate(self) -> None:
        self._state = None
        self._dump = None

    # -- memory ---------------------------------------------------------------------------------
    def read_virt(self, va: int, size: int) -> bytes:
        if size <= 0:
            return b""
        with self._virtual_mode():
            try:
                return bytes(gdb.selected_inferior().read_memory(va, size))
            except gdb.MemoryError as err:
                raise TranslationError(f"cannot read virtual {va:#x}+{size:#x}: {err}",
                                       va=va) from err
            except gdb.error as err:
                raise MemoryReadError(f"virtual read {va:#x}+{size:#x} failed: {err}",
                                      addr=va, size=size, physical=False) from err

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
            key = STOP_CACHE.key("phys-mode")
            cached = STOP_CACHE.values.get(key)
            if isinstance(cached, bool):
                self._user_phys_mode = cached
            else:
                try:
                    self._user_phys_mode = self.packet("qqemu.PhyMemMode").strip() == "1"
                except TargetError:
                    self._user_phys_mode = False
                STOP_CACHE.values[key] = self._user_phys_mode
        return self._user_phys_mode

    def _set_phys_mode(self, on: bool) -> None:
        reply = self.packet(f"Qqemu.PhyMemMode:{int(on)}")
        if reply != "OK":
            raise TargetError(f"QEMU refused PhyMemMode:{int(on)} ({reply!r}): physical reads "
                              "need QEMU's gdbstub (QEMU >= 4.2)")
        _execute("maintenance flush register-cache")
        with contextlib.suppress(TargetError):
            _execute("maintenance flush dcache")

    @contextlib.contextmanager
    def _physical_mode(self) -> Iterator[None]:
        if self._phys_mode_now():
            yield
            return
        self._set_phys_mode(True)
        try:
            yield
        finally:
            self._set_phys_mode(False)

    @contextlib.contextmanager
    def _virtual_mode(self) -> Iterator[None]:
        if not self._phys_mode_now():
            yield
            return
        self._set_phys_mode(False)
        try:
            yield
        finally:
            self._set_phys_mode(True)

    def _check_ram(self, pa: int, size: int) -> None:
        """QEMU's physical mode reads zeros outside RAM; refuse instead of inventing bytes."""
        if self._ram is None:
            try:
                from qmp_tools.target import parse_mtree_flat

                self._ram = list(parse_mtree_flat(self.monitor("info mtree -f")))
            except Exception:  # no parser or odd output: no check rather than a false error
                self._ram = []
        if self._ram:
            from qmp_tools.target import check_readable

            check_readable(self._ram, pa, size)  # type: ignore[arg-type]

    def _local_qemu(self) -> bool:
        conn = getattr(gdb.selected_inferior(), "connection", None)
        details = str(getattr(conn, "details", "") or "")
        host = details.rsplit(":", 1)[0].strip("[]") if ":" in details else details
        return host in ("127.0.0.1", "localhost", "::1", "") or host.startswith("127.") or \
            details.startswith("/")

    def _pmemsave_usable(self) -> bool:
        if not self._use_pmemsave:
            return False
        if self._pmem_ok is None:
            self._pmem_ok = False
            if self._local_qemu():
                try:
                    probe_pa = self._ram_probe_address()
                    a = self._pmemsave(probe_pa, PACKET, verify=False)
                    with self._physical_mode():
                        b = bytes(gdb.selected_inferior().read_memory(probe_pa, PACKET))
                    self._pmem_ok = a is not None and a == b
                except Exception:
                    self._pmem_ok = False
            if self._pmem_ok:
                self.bulk_read_gap = 256 * 1024
        return bool(self._pmem_ok)

    def _ram_probe_address(self) -> int:
        for r in self._ram or []:
            if getattr(r, "kind", "") == "ram":
                return int(getattr(r, "start", 0))
        return 0

    def _pmemsave(self, pa: int, size: int, verify: bool = True) -> bytes | None:
        if self._pmem_dir is None:
            self._pmem_dir = tempfile.mkdtemp(prefix="kdiag-gdb-")  # mode 0700
        path = os.path.join(self._pmem_dir, "pmem.bin")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        out = self.monitor(f'pmemsave {pa:#x} {size:#x} "{path}"')
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            if verify:
                self._pmem_ok = False
            return None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if len(data) != size:
            if verify:
                raise MemoryReadError(f"pmemsave {pa:#x}+{size:#x} wrote {len(data)} bytes: "
                                      f"{out.strip()[:80]}", addr=pa, size=size)
            return None
        return data

    def close(self) -> None:
        if self._pmem_dir:
            shutil.rmtree(self._pmem_dir, ignore_errors=True)
            self._pmem_dir = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

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
                    regs = tuple(_read_all().items())
                keys[index] = STOP_CACHE.key("msr", self.cpu_index, index, regs)
                hit = STOP_CACHE.values.get(keys[index])
                if isinstance(hit, MsrRead) and (force or index in KNOWN_MSRS):
                    out[index] = replace(hit, method=hit.method + "; earlier at this stop (the "
                                         "guest has not run since), so this time no code was run")
                    continue
            need.append(index)
        if need:
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
    skey = STOP_CACHE.key("sstep")
    sstep = STOP_CACHE.values.get(skey)
    if not isinstance(sstep, str):
        sstep = target.packet("qqemu.sstep").strip()
        STOP_CACHE.values[skey] = sstep
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
    return None


def _code_address(st: CpuState) -> int:
    """Linear address of the instruction at RIP: CS.base + RIP outside 64-bit mode."""
    if st.mode == "long":
        return st.rip
    cs = st.segments.get("cs")
    return ((cs.base if cs else 0) + st.rip) & 0xFFFFFFFF


def _read_all() -> dict[str, int]:
    frame = gdb.newest_frame()
    return {r: int(frame.read_register(r)) & (2**64 - 1) for r in (*GPRS, "rip", "eflags")}


def _set_reg(name: str, value: int) -> None:
    _execute(f"set ${name} = {value:#x}")


_REMOTE_REG = re.compile(
    r"^[ \t]*(\w+)[ \t]+\d+[ \t]+\d+[ \t]+\d+[ \t]+(\d+)[ \t]+\S+[ \t]+(\d+)[ \t]+\d+", re.M)
_REGNUMS: dict[object, dict[str, tuple[int, int]]] = {}


def _remote_regnums() -> dict[str, tuple[int, int]]:
    """gdb register name -> (remote number, size) from ``maint print remote-registers``
    (parsed once per connection): single-register ``p``/``P`` packets for the injection."""
    inf = gdb.selected_inferior()
    key = (inf.num, getattr(inf, "connection_num", None))
    if key not in _REGNUMS:
        out = _execute("maintenance print remote-registers")
        _REGNUMS[key] = {m.group(1): (int(m.group(3)), int(m.group(2)))
                         for m in _REMOTE_REG.finditer(out)}
    return _REGNUMS[key]


class _RawRegs:
    """Read and write single registers with raw ``p``/``P`` packets (one round trip each;
    gdb's ``set $reg`` costs several). gdb's register cache is stale after a write: callers
    flush it (``maintenance flush register-cache``) before reading registers through gdb."""

    def __init__(self, target: GdbTarget) -> None:
        self.target = target
        self.nums = _remote_regnums()

    def put(self, name: str, value: int) -> None:
        if name not in self.nums:
            _set_reg(name, value)
            return
        num, size = self.nums[name]
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little").hex()
        reply = self.target.packet(f"P{num:x}={data}")
        if reply != "OK":
            raise TargetError(f"QEMU refused to set ${name} (P packet reply {reply!r})")

    def get(self, name: str) -> int:
        if name not in self.nums:
            _execute("maintenance flush register-cache")
            return int(gdb.newest_frame().read_register(name)) & (2**64 - 1)
        reply = self.target.packet(f"p{self.nums[name][0]:x}")
        try:
            return int.from_bytes(bytes.fromhex(reply), "little")
        except ValueError as err:
            raise TargetError(f"bad reply to reading ${name}: {reply!r}") from err


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
    inf = gdb.selected_inferior()
    code = _code_address(st)
    pid, lwp, _ = target.thread_ptid
    before = _read_all()
    raw = _RawRegs(target)
    values: dict[int, int] = {}
    with target._virtual_mode():
        try:
            saved = bytes(inf.read_memory(code, 2))
        except gdb.error as err:
            raise MsrUnavailable(f"cannot read the code bytes at RIP ({code:#x}): {err}",
                                 msr=todo[0]) from err
        clean = True
        after: dict[str, int] = {}
        try:
            try:
                inf.write_memory(code, b"\x0f\x32")
            except gdb.error as err:
                raise MsrUnavailable(f"cannot write at RIP ({code:#x}): {err}",
                                     msr=todo[0]) from err
            if bytes(inf.read_memory(code, 2)) != b"\x0f\x32":
                raise MsrUnavailable(f"the code at RIP ({code:#x}) is not writable (ROM/flash?)",
                                     msr=todo[0])
            if before["eflags"] & (1 << 8):
                raw.put("eflags", before["eflags"] & ~(1 << 8))  # no TF during the step
            old_timeout = str(gdb.parameter("remotetimeout"))
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
                        after = {name: raw.get(name) for name in ("rip", "rax", "rdx")}
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
                _execute(f"set remotetimeout {old_timeout}")
        finally:
            # After clean rdmsr steps only RIP, RCX (ours), RAX and RDX changed (RDMSR affects
            # no flag; RFLAGS was written only to clear TF); anything else: restore all five.
            clean = clean and len(values) == len(todo)
            unchanged = {n for n in ("rax", "rdx") if clean and after.get(n) == before[n]}
            if clean and not before["eflags"] & (1 << 8):
                unchanged.add("eflags")
            problems = _restore(inf, code, saved, before, raw, unchanged)
        if problems:
            raise TargetError("RESTORE FAILED after rdmsr injection: " + "; ".join(problems)
                              + ". Fix them by hand (set $reg = value) before continuing.")
    note = (f"read by injecting rdmsr at RIP {before['rip']:#x}; code bytes {saved.hex(' ')} and "
            f"RAX/RCX/RDX/RIP/RFLAGS restored, all registers verified")
    if halted:
        note += ("; the CPU was halted (HLT) and now resumes after the hlt instead of waiting "
                 "for its next interrupt")
    for index, value in values.items():
        out[index] = MsrRead(index, value, note)
    return out


def _restore(inf: object, code: int, saved: bytes, before: dict[str, int],
             raw: _RawRegs, unchanged: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Put back the code bytes and RAX/RCX/RDX/RFLAGS/RIP (those not known ``unchanged``),
    then re-read every general register through gdb (fresh ``g`` packet) and the bytes, and
    list what differs: the verification covers all of them whatever was written."""
    problems: list[str] = []
    try:
        inf.write_memory(code, saved)  # type: ignore[attr-defined]
    except gdb.error as err:
        problems.append(f"code bytes at {code:#x} (write {saved.hex(' ')}): {err}")
    for name in ("rax", "rcx", "rdx", "eflags", "rip"):
        if name in unchanged:
            continue
        try:
            raw.put(name, before[name])
        except TargetError as err:
            problems.append(f"${name} = {before[name]:#x}: {err}")
    try:
        _execute("maintenance flush register-cache")
    except TargetError as err:
        problems.append(f"cannot flush gdb's register cache to verify: {err}")
    try:
        now = _read_all()
        for name, val in before.items():
            if now.get(name) != val:
                problems.append(f"${name} is {now.get(name, 0):#x}, was {val:#x}")
        back = bytes(inf.read_memory(code, len(saved)))  # type: ignore[attr-defined]
        if back != saved:
            problems.append(f"code bytes at {code:#x} are {back.hex(' ')}, were {saved.hex(' ')}")
    except gdb.error as err:
        problems.append(f"verification read failed: {err}")
    return problems
