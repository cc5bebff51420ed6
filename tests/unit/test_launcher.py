"""The launcher's QEMU command line and its safety rules: loopback only, private dirs, no -s."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from kdiag.cli import main
from kdiag.errors import LaunchError, ToolMissing, UsageError
from qmp_tools import launcher as L


@pytest.fixture
def fake_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Pretend the kernel and loader are built, and OVMF exists, without touching the host."""
    efi = tmp_path / "BOOTX64.EFI"
    efi.write_bytes(b"MZ")
    elf = tmp_path / "kernel.elf"
    elf.write_bytes(b"\x7fELF")
    code = tmp_path / "OVMF_CODE_4M.fd"
    vars_ = tmp_path / "OVMF_VARS_4M.fd"
    code.write_bytes(b"c")
    vars_.write_bytes(b"v")
    monkeypatch.setattr(L, "LOADER_EFI", efi)
    monkeypatch.setattr(L, "find_ovmf", lambda: (code, vars_))
    return elf


def argv_for(cfg: L.QemuConfig, run: Path, elf: Path, port: int | None = None) -> list[str]:
    run.mkdir(exist_ok=True)
    return L.QemuInstance._argv("qemu-system-x86_64", cfg, run, elf, port)


def test_argv_has_debug_plumbing_and_tcg(tmp_path: Path, fake_build: Path) -> None:
    argv = argv_for(L.QemuConfig(gdb_port=1234), tmp_path / "run", fake_build, 1234)
    joined = " ".join(argv)
    assert ["-accel", "tcg"] == argv[1:3]
    for opt in ("-no-reboot", "-no-shutdown", "-net none", "-machine q35",
                "-d int,cpu_reset", "-gdb tcp:127.0.0.1:1234", "isa-debugcon.iobase=0xe9"):
        assert opt in joined
    assert "-s" not in argv
    assert f"unix:{tmp_path / 'run' / 'qmp.sock'},server=on,wait=off" in argv


def test_argv_without_gdb_has_no_gdbstub(tmp_path: Path, fake_build: Path) -> None:
    argv = argv_for(L.QemuConfig(), tmp_path / "run", fake_build)
    assert "-gdb" not in argv and "-s" not in argv and "-S" not in argv


def test_wait_gdb_starts_paused(tmp_path: Path, fake_build: Path) -> None:
    argv = argv_for(L.QemuConfig(gdb_port=1, wait_gdb=True), tmp_path / "run", fake_build, 1)
    assert "-S" in argv


def test_esp_layout_and_scenario_file(tmp_path: Path, fake_build: Path) -> None:
    run = tmp_path / "run"
    argv_for(L.QemuConfig(scenario="idt-missing"), run, fake_build)
    assert (run / "esp/EFI/BOOT/BOOTX64.EFI").read_bytes() == b"MZ"
    assert (run / "esp/kernel.elf").read_bytes() == b"\x7fELF"
    assert (run / "esp/kdiag.cfg").read_text() == "scenario=idt-missing\n"
    assert (run / "OVMF_VARS.fd").read_bytes() == b"v"  # a private copy, never the system one


def test_i386_uses_multiboot_kernel_and_append(tmp_path: Path, fake_build: Path) -> None:
    argv = argv_for(L.QemuConfig(kernel="i386", scenario="healthy"), tmp_path / "run", fake_build)
    assert argv[argv.index("-kernel") + 1] == str(fake_build)
    assert argv[argv.index("-append") + 1] == "scenario=healthy"
    assert "pflash" not in " ".join(argv)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_accepted(host: str) -> None:
    assert L.check_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.org", "::"])
def test_non_loopback_hosts_refused(host: str) -> None:
    with pytest.raises(UsageError, match="loopback"):
        L.check_loopback(host)


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:1234", ("127.0.0.1", 1234)),
    (":1234", ("127.0.0.1", 1234)),
    ("1234", ("127.0.0.1", 1234)),
    ("[::1]:99", ("::1", 99)),
    ("localhost:0", ("127.0.0.1", 0)),
])
def test_parse_gdb_address(text: str, expected: tuple[str, int]) -> None:
    assert L.parse_gdb_address(text) == expected


@pytest.mark.parametrize("text", ["0.0.0.0:1234", "127.0.0.1:x", "127.0.0.1:70000"])
def test_parse_gdb_address_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        L.parse_gdb_address(text)


def test_port_in_use_is_reported() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LaunchError, match=f"port {port} .* in use"):
            L.pick_port("127.0.0.1", port)


def test_free_port_is_picked() -> None:
    assert L.pick_port("127.0.0.1", 0) > 0


def test_qmp_dir_must_be_private(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    with pytest.raises(UsageError, match="private"):
        L.private_dir_for(shared / "qmp.sock")


def test_qmp_dir_created_private(tmp_path: Path) -> None:
    L.private_dir_for(tmp_path / "new" / "qmp.sock")
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


def test_unknown_scenario_lists_known(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--scenario", "no-such-bug", "--batch", "--no-build"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdiag: error: unknown scenario 'no-such-bug'")
    assert "healthy" in err and err.count("\n") == 1


def test_batch_and_wait_gdb_exclude(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--batch", "--wait-gdb", "--no-build"]) == 2
    assert "exclude" in capsys.readouterr().err


def test_missing_qemu_names_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(L.shutil, "which", lambda name: None)
    with pytest.raises(Exception, match="qemu-system-x86"):
        L.QemuInstance.start(L.QemuConfig())


def test_missing_ovmf_names_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(L, "OVMF_DIRS", (tmp_path / "nowhere",))
    with pytest.raises(ToolMissing, match="'ovmf'") as info:
        L.find_ovmf()
    assert "\n" not in str(info.value)
