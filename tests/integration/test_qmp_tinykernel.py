"""QMP session and target on a real QEMU running a tiny multiboot kernel (boots in ~0.1 s).

The kernel (nasm, flat binary with a multiboot a.out-kludge header) enters long mode with an
identity map of 1 GiB (2 MiB pages), loads a 3-entry GDT and an IDT with limit 0, then reads
0x40000000: #PF -> #GP (no IDT) -> #DF -> triple fault. QEMU runs with ``-no-reboot
-no-shutdown`` so the machine freezes; ``-S`` and a second "control" QMP socket let a test
choose when it starts (kdiag itself never resumes a guest).

:class:`TinyQemu` is reused by the other QMP integration tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kdiag.errors import MemoryReadError, MsrUnavailable, TargetGone, TranslationError
from qmp_tools.session import QmpSession, is_triple_fault
from qmp_tools.target import QmpTarget

TF_ASM = r"""
bits 32
org 0x100000
MB_MAGIC equ 0x1BADB002
MB_FLAGS equ (1<<16)
hdr:
    dd MB_MAGIC, MB_FLAGS, -(MB_MAGIC+MB_FLAGS)
    dd hdr, hdr, load_end, bss_end, start
start:
    cli
    mov esp, stack_top
    mov dword [pml4], pdpt + 3
    mov dword [pdpt], pd + 3
    xor ecx, ecx
.fill:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov [pd + ecx*8], eax
    inc ecx
    cmp ecx, 512
    jne .fill
    mov eax, pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 1<<5
    mov cr4, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 1<<8
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax
    lgdt [gdtr]
    jmp 0x08:long_entry
bits 64
long_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    lidt [idtr]
    mov rax, 0x1122334455667788
    mov rbx, 0x40000000
fault:
    mov rcx, [rbx]
    hlt
align 8
gdt:
    dq 0
    dq 0x00af9a000000ffff
    dq 0x00cf92000000ffff
gdt_end:
gdtr:
    dw gdt_end - gdt - 1
    dd gdt
idtr:
    dw 0
    dq 0
align 16
marker: db "KDIAGMARK", 0
load_end:
align 4096
pml4: resb 4096
pdpt: resb 4096
pd:   resb 4096
resb 4096
stack_top:
bss_end:
"""
MARKER = b"KDIAGMARK"


def build_tiny_kernel(directory: Path) -> Path:
    """Assemble the kernel into ``directory``; return the binary's path."""
    nasm = shutil.which("nasm")
    if nasm is None:
        pytest.fail("nasm is required (apt-get install nasm)")
    src = directory / "tf.asm"
    src.write_text(TF_ASM)
    out = directory / "tf.bin"
    subprocess.run([nasm, "-w-zeroing", "-f", "bin", "-o", str(out), str(src)], check=True)
    return out


class TinyQemu:
    """The tiny kernel under QEMU in a private 0700 directory: ``qmp_path`` for the code under
    test, ``control`` for the test itself (start the guest, check status)."""

    def __init__(self, directory: Path, paused: bool = True, no_shutdown: bool = True,
                 log: bool = True, tcp_port: int | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.kernel = build_tiny_kernel(self.dir)
        self.qmp_path = self.dir / "qmp.sock"
        self.control_path = self.dir / "control.sock"
        self.log_path = self.dir / "qemu.log"
        argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-kernel", str(self.kernel),
                "-display", "none", "-vga", "none", "-net", "none", "-no-reboot",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                "-qmp", f"unix:{self.control_path},server=on,wait=off"]
        if tcp_port is not None:  # a third monitor on loopback TCP
            argv += ["-qmp", f"tcp:127.0.0.1:{tcp_port},server=on,wait=off"]
        if no_shutdown:
            argv.append("-no-shutdown")
        if paused:
            argv.append("-S")
        if log:
            argv += ["-d", "int,cpu_reset", "-D", str(self.log_path)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not (self.qmp_path.exists() and self.control_path.exists()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("QEMU did not create its QMP sockets")
            time.sleep(0.02)

    def control(self, command: str) -> object:
        with QmpSession.connect(str(self.control_path)) as s:
            return s.execute(command)

    def wait_status(self, status: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        with QmpSession.connect(str(self.control_path)) as s:
            while s.status() != status:
                assert time.monotonic() < deadline, f"QEMU never reached {status}"
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def tiny_qemu(directory: Path, **kw: Any) -> Iterator[TinyQemu]:
    q = TinyQemu(directory, **kw)
    try:
        yield q
    finally:
        q.stop()


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyQemu]:
    """The tiny kernel after its triple fault, frozen."""
    with tiny_qemu(tmp_path_factory.mktemp("tiny") / "run") as q:
        q.control("cont")
        q.wait_status("shutdown")
        yield q


def test_events_of_a_triple_fault(tmp_path: Path) -> None:
    with tiny_qemu(tmp_path / "run", log=False) as q, QmpSession.connect(str(q.qmp_path)) as s:
        assert s.status() == "prelaunch"
        q.control("cont")
        ev = s.wait_event(is_triple_fault, timeout=30)
        assert ev is not None and ev["data"] == {"guest": True, "reason": "guest-reset"}
        assert s.wait_event("STOP", timeout=10) is not None
        assert s.status() == "shutdown"


def test_state_of_the_frozen_machine(frozen: TinyQemu) -> None:
    with QmpTarget.connect(str(frozen.qmp_path)) as t:
        st = t.state()
        assert st.gpr["rax"] == 0x1122334455667788 and st.gpr["rbx"] == 0x40000000
        assert st.cr2 == 0x40000000 and st.idtr is not None and st.idtr.limit == 0
        assert st.gdtr is not None and st.gdtr.limit == 0x17
        assert st.mode == "long" and st.efer & 0x500 == 0x500
        assert t.read_msr(0xC0000080) == st.efer
        with pytest.raises(MsrUnavailable):
            t.read_msr(0x277)


def test_memory_reads_match_the_kernel_image(frozen: TinyQemu) -> None:
    image = frozen.kernel.read_bytes()
    code_end = image.index((0x00AF9A000000FFFF).to_bytes(8, "little")) - 8  # the GDT follows
    marker = image.index(MARKER)
    with QmpTarget.connect(str(frozen.qmp_path)) as t:
        # the code as loaded (the CPU has since set the data descriptor's accessed bit)
        assert t.read_phys(0x100000, code_end) == image[:code_end]
        assert t.read_phys(0x100000 + marker, len(MARKER)) == MARKER
        st = t.state()
        assert t.read_virt(st.rip, 3) == image[st.rip - 0x100000:st.rip - 0x100000 + 3]
        assert st.gdtr is not None
        gdt = t.read_virt(st.gdtr.base, 24)
        assert gdt[8:16] == (0x00AF9A000000FFFF).to_bytes(8, "little")
        with pytest.raises(TranslationError):
            t.read_virt(0x40000000, 8)  # the address that faulted
        with pytest.raises(MemoryReadError):
            t.read_phys(512 << 20, 8)  # beyond RAM
        with pytest.raises(MemoryReadError, match="device"):
            t.read_phys(0xFEE00000, 4)  # LAPIC/MSI window: never read


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_session_over_loopback_tcp(tmp_path: Path) -> None:
    port = free_port()
    with tiny_qemu(tmp_path / "run", log=False, tcp_port=port) as q, \
            QmpSession.connect(f"tcp:127.0.0.1:{port}") as s:
        assert s.address == ("127.0.0.1", port) and s.qemu_version.startswith("7.2")
        assert s.status() == "prelaunch"
        assert "GDT=" in s.hmp("info registers")  # HMP passthrough
        q.control("cont")
        ev = s.wait_event(is_triple_fault, timeout=30)  # events over TCP too
        assert ev is not None and ev["data"]["reason"] == "guest-reset"


def test_kill_during_a_command_is_target_gone(tmp_path: Path) -> None:
    """QEMU dies while a command is in flight: one line, TargetGone, and the session stays gone.

    ``pmemsave`` opens its file in QEMU's main loop; on a FIFO nobody reads, that open blocks,
    so the command is certainly still running when the test kills QEMU.
    """
    with tiny_qemu(tmp_path / "run", log=False) as q, QmpSession.connect(str(q.qmp_path)) as s:
        fifo = q.dir / "stall.fifo"
        os.mkfifo(fifo, 0o600)
        killed = threading.Event()

        def kill() -> None:
            q.proc.kill()
            killed.set()

        timer = threading.Timer(0.5, kill)
        timer.start()
        t0 = time.monotonic()
        try:
            with pytest.raises(TargetGone) as info:
                s.execute("pmemsave", {"val": 0, "size": 4096, "filename": str(fifo)},
                          timeout=30)
        finally:
            timer.cancel()
        assert killed.is_set() and time.monotonic() - t0 < 10  # it waited, then saw the death
        msg = str(info.value)
        assert "gone" in msg and "pmemsave" in msg and "\n" not in msg
        with pytest.raises(TargetGone):
            s.status()


def test_cli_on_a_dead_qemu_is_one_line(tmp_path: Path) -> None:
    with tiny_qemu(tmp_path / "run", log=False) as q:
        q.proc.kill()
        q.proc.wait(5)
        assert q.qmp_path.exists()  # a killed QEMU leaves its socket file behind
        proc = subprocess.run([sys.executable, "-m", "kdiag", "gdt", "--qmp", str(q.qmp_path)],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("kdiag: error: ") and proc.stderr.count("\n") == 1, proc.stderr
