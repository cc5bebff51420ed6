"""The CLI's error contract: one line on stderr and a defined exit code, never a traceback."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kdiag import cli


def _fake_command(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def build(argv: list[str] | None = None) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog="kdiag")
        parser.add_argument("--traceback", action="store_true")

        def run(args: argparse.Namespace) -> int:
            raise exc

        parser.set_defaults(_run=run)
        return parser

    monkeypatch.setattr(cli, "build_parser", build)


@pytest.mark.parametrize(("exc", "code", "text"), [
    (FileNotFoundError(2, "No such file or directory", "/x/.vscode"), 2,
     "kdiag: error: /x/.vscode: No such file or directory"),
    (PermissionError(13, "Permission denied"), 2, "kdiag: error: Permission denied"),
    (ZeroDivisionError("division by zero"), cli.EXIT_INTERNAL,
     "kdiag: internal error: ZeroDivisionError: division by zero"),
])
def test_unexpected_errors_are_one_line(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str],
                                        exc: BaseException, code: int, text: str) -> None:
    _fake_command(monkeypatch, exc)
    assert cli.main([]) == code
    err = capsys.readouterr().err
    assert err.startswith(text) and err.count("\n") == 1, err


def test_traceback_flag_reraises(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_command(monkeypatch, ZeroDivisionError("x"))
    with pytest.raises(ZeroDivisionError):
        cli.main(["--traceback"])


def test_unwritable_project_dir_is_one_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope" / "deeper"
    (tmp_path / "nope").write_text("a file where a directory should be")
    assert cli.main(["ide", "vscode", "--project", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdiag: error: ") and err.count("\n") == 1, err


def test_version_and_top_level_help_stay_light() -> None:
    """`kdiag --version` imports no command; `kdiag --help` lists every command without loading
    the shell's prompt_toolkit (its long description is built only for `kdiag shell --help`)."""
    import subprocess
    import sys

    probe = ("import sys, contextlib, io; from kdiag import cli\n"
             "with contextlib.redirect_stdout(io.StringIO()) as out: rc = cli.main({argv!r})\n"
             "print(rc, {mod!r} in sys.modules, 'shell' in out.getvalue())")
    for argv, mod, listed in ((["--version"], "kdiag.commands.triage", False),
                              (["--help"], "prompt_toolkit", True)):
        r = subprocess.run([sys.executable, "-c", probe.format(argv=argv, mod=mod)],
                           capture_output=True, text=True, check=True)
        assert r.stdout.split() == ["0", "False", str(listed)], (argv, r.stdout, r.stderr)
    r = subprocess.run([sys.executable, "-m", "kdiag", "shell", "--help"], capture_output=True,
                       text=True, check=True)
    assert "What a line means" in r.stdout  # the shell's own manual, built on demand
