"""kdiag ide: JSONC reading, merging by name, backups, and the generated configurations."""

from __future__ import annotations

import datetime as dt
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kdiag.cli import main
from kdiag.errors import InputError, UsageError
from kdiag.ide import clion, vscode
from kdiag.ide.files import backup_path, write_with_backup
from kdiag.ide.jsonc import loads_jsonc, strip_jsonc
from kdiag.ide.spec import IdeSpec

ROOT = Path("/opt/kdiag")
SPEC = IdeSpec(project_root=ROOT, elf=ROOT / "kernel/build/kernel-x86_64.elf",
               scenario="idt-missing", port=1234, python="/opt/kdiag/.venv/bin/python",
               gdb="/usr/bin/gdb")
# what the launcher prints once the stub listens (kdiag/commands/run.py)
WAITING = "kdiag: waiting for gdb on 127.0.0.1:1234 (QEMU is paused until gdb continues)"


# ------------------------------------------------------------------------------------------
# JSON with comments

@pytest.mark.parametrize("text, value", [
    ('{"a": 1, // one\n "b": [1, 2,],}', {"a": 1, "b": [1, 2]}),
    ('/* head */ {"url": "http://x//y", "s": "a /* not */ b"}',
     {"url": "http://x//y", "s": "a /* not */ b"}),
    ('{"q": "say \\"hi\\" // still string",}', {"q": 'say "hi" // still string'}),
    ('[1, 2, /* c */ ]', [1, 2]),
    ("", None),
])
def test_loads_jsonc(text: str, value: object) -> None:
    assert loads_jsonc(text) == value


def test_strip_keeps_line_numbers_for_errors() -> None:
    text = '{\n  /* a\n  b */\n  "x": 1\n  "y": 2\n}'
    assert strip_jsonc(text).count("\n") == text.count("\n")
    with pytest.raises(InputError, match="line 5"):
        loads_jsonc(text, "launch.json")


# ------------------------------------------------------------------------------------------
# the VS Code configuration

def test_launch_configuration_runs_the_four_steps_in_order() -> None:
    cfg = vscode.launch_configuration(SPEC)
    texts = [c["text"] for c in cfg["setupCommands"]]
    assert texts == ["set architecture i386:x86-64",
                     "file /opt/kdiag/kernel/build/kernel-x86_64.elf",
                     "source /opt/kdiag/gdbext/init.py",
                     "target remote 127.0.0.1:1234"]
    assert cfg["type"] == "cppdbg" and cfg["MIMode"] == "gdb"
    assert cfg["customLaunchSetupCommands"] == []  # cppdbg must not connect a second time
    assert cfg["launchCompleteCommand"] == "exec-continue"
    assert cfg["preLaunchTask"] == SPEC.task_label
    assert cfg["miDebuggerServerAddress"] == "127.0.0.1:1234"


def test_start_task_is_an_argument_list_ending_at_the_waiting_line() -> None:
    task = vscode.start_task(SPEC)
    assert task["type"] == "process" and task["isBackground"] is True
    assert [task["command"], *task["args"]] == [
        "/opt/kdiag/.venv/bin/python", "-m", "kdiag", "run", "--wait-gdb", "--gdb",
        "127.0.0.1:1234", "--kernel", "x86_64", "--scenario", "idt-missing"]
    bg = task["problemMatcher"]["background"]
    assert re.search(bg["endsPattern"], WAITING)
    assert not re.search(bg["endsPattern"], WAITING.replace("1234", "12345").replace(
        "127.0.0.1", "127.0.0.10"))
    assert re.search(bg["beginsPattern"], "kdiag: run directory /tmp/kdiag-run-x")


def test_merge_keeps_the_users_configurations_and_comments_are_tolerated() -> None:
    existing = """{
      // mine
      "version": "0.2.0",
      "configurations": [
        {"name": "my app", "type": "cppdbg", "request": "launch",},
        {"name": "kdiag: debug QEMU (x86_64, idt-missing)", "type": "old"},
        {"name": "other", "type": "python",},
      ],
      "compounds": [],
    }"""
    doc = vscode.merge_launch(existing, SPEC)
    names = [c["name"] for c in doc["configurations"]]
    assert names == ["my app", SPEC.config_name, "other"]  # replaced in place
    assert doc["configurations"][1]["type"] == "cppdbg"
    assert doc["compounds"] == [] and doc["version"] == "0.2.0"


def test_tasks_merge_by_label_and_inputs_by_id() -> None:
    first = vscode.dumps(vscode.merge_tasks('{"tasks": [{"label": "build"}]}', SPEC))
    again = vscode.merge_tasks(first, SPEC)
    assert [t["label"] for t in again["tasks"]] == ["build", SPEC.task_label, SPEC.stop_label]
    assert len(again["inputs"]) == 1
    assert again["inputs"][0]["args"] == SPEC.task_label
    other = IdeSpec(project_root=ROOT, elf=SPEC.elf, scenario=None, python=SPEC.python)
    both = vscode.merge_tasks(vscode.dumps(again), other)
    assert len(both["tasks"]) == 5 and len(both["inputs"]) == 2


@pytest.mark.parametrize("bad, words", [('{"configurations": {}}', "not a list"),
                                        ("[1]", "top level"), ("{nope", "not valid JSON")])
def test_unusable_existing_file_is_an_input_error(bad: str, words: str) -> None:
    with pytest.raises(InputError, match=words):
        vscode.merge_launch(bad, SPEC)


def test_write_creates_then_is_idempotent_then_backs_up(tmp_path: Path) -> None:
    first = vscode.write(tmp_path, SPEC)
    assert all(r.created and r.changed for r in first)
    assert all(not r.changed for r in vscode.write(tmp_path, SPEC))  # nothing to do, no backup
    launch = tmp_path / ".vscode" / "launch.json"
    launch.write_text(launch.read_text().replace("exec-continue", "None"))
    third = vscode.write(tmp_path, SPEC)
    assert third[0].backup == tmp_path / ".vscode" / "launch.json.bak"
    assert "None" in third[0].backup.read_text()
    assert json.loads(launch.read_text())["configurations"][0]["launchCompleteCommand"] == \
        "exec-continue"


def test_backup_names(tmp_path: Path) -> None:
    p = tmp_path / "launch.json"
    assert backup_path(p) == tmp_path / "launch.json.bak"
    (tmp_path / "launch.json.bak").write_text("old")
    now = dt.datetime(2024, 5, 1, 12, 30, 45)
    assert backup_path(p, now) == tmp_path / "launch.json.bak-20240501-123045"
    (tmp_path / "launch.json.bak-20240501-123045").write_text("older")
    assert backup_path(p, now) == tmp_path / "launch.json.bak-20240501-123045-2"
    p.write_text("v1")
    r = write_with_backup(p, "v2", now)
    assert r.backup == tmp_path / "launch.json.bak-20240501-123045-2"
    assert r.backup.read_text() == "v1" and p.read_text() == "v2"
    assert (tmp_path / "launch.json.bak").read_text() == "old"  # never overwritten


def test_spec_refuses_unsafe_values() -> None:
    for kw in ({"scenario": "a b"}, {"scenario": "$(rm -rf)"}, {"port": 0},
               {"host": "0.0.0.0"}, {"kernel": "arm"}):
        with pytest.raises(UsageError):
            IdeSpec(project_root=ROOT, elf=SPEC.elf, **kw)  # type: ignore[arg-type]


def test_paths_with_spaces_are_quoted_for_gdb() -> None:
    spec = IdeSpec(project_root=Path("/my dir/kdiag"), elf=Path("/my dir/k.elf"))
    assert spec.gdb_setup_commands()[1] == 'file "/my dir/k.elf"'
    assert spec.gdb_setup_commands()[2] == 'source "/my dir/kdiag/gdbext/init.py"'


# ------------------------------------------------------------------------------------------
# CLion / RustRover

def test_clion_remote_configuration() -> None:
    root = ET.fromstring(clion.merge_run_xml(None, clion.remote_configuration(SPEC), "x"))
    cfg = root.find("configuration")
    assert cfg is not None and cfg.get("type") == "CLion_Remote"
    assert cfg.get("remoteCommand") == "127.0.0.1:1234"
    assert cfg.get("symbolFile") == str(SPEC.elf) and cfg.get("sysroot") == str(ROOT)
    task = cfg.find("method/option")
    assert task is not None and task.get("name") == "RunConfigurationTask"
    assert task.get("run_configuration_name") == SPEC.task_label
    assert task.get("run_configuration_type") == "ShConfigurationType"


def test_clion_start_configuration_has_no_shell_text() -> None:
    cfg = clion.start_configuration(SPEC)
    opts = {o.get("name"): o.get("value") for o in cfg.findall("option")}
    assert opts["EXECUTE_SCRIPT_FILE"] == "true" and opts["SCRIPT_TEXT"] == ""
    assert opts["INTERPRETER_PATH"] == SPEC.python
    assert opts["SCRIPT_PATH"] == "/opt/kdiag/.venv/bin/kdiag"
    assert str(opts["SCRIPT_OPTIONS"]).split() == ["ide", "start", "--gdb", "127.0.0.1:1234",
                                              "--kernel", "x86_64", "--scenario", "idt-missing"]


def test_clion_merge_keeps_other_configurations() -> None:
    existing = ('<component name="ProjectRunConfigurationManager">'
                '<configuration name="mine" type="CMakeRunConfiguration" />'
                f'<configuration name="{SPEC.config_name}" type="stale" /></component>')
    root = ET.fromstring(clion.merge_run_xml(existing, clion.remote_configuration(SPEC), "x"))
    assert [(c.get("name"), c.get("type")) for c in root] == [
        ("mine", "CMakeRunConfiguration"), (SPEC.config_name, "CLion_Remote")]
    with pytest.raises(InputError, match="not valid XML"):
        clion.merge_run_xml("<component", clion.remote_configuration(SPEC), "x")


def test_gdbinit_block_is_replaced_not_duplicated() -> None:
    user = "set pagination off\n"
    once = clion.merge_gdbinit(user, SPEC)
    assert once.startswith(user) and "set architecture i386:x86-64" in once
    moved = IdeSpec(project_root=Path("/elsewhere"), elf=SPEC.elf)
    twice = clion.merge_gdbinit(once + "set confirm off\n", moved)
    assert twice.count("set architecture") == 1 and "/elsewhere/gdbext/init.py" in twice
    assert twice.startswith(user) and twice.endswith("set confirm off\n")


def test_clion_write(tmp_path: Path) -> None:
    (tmp_path / ".gdbinit").write_text("set pagination off")
    results = clion.write(tmp_path, SPEC)
    assert [r.path.name for r in results] == ["kdiag-qemu.run.xml", "kdiag-qemu-start.run.xml",
                                              ".gdbinit"]
    assert results[2].backup is not None and results[2].backup.read_text() == "set pagination off"
    assert all(not r.changed for r in clion.write(tmp_path, SPEC))


# ------------------------------------------------------------------------------------------
# the command

def test_cli_vscode_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ide", "vscode", "--project", str(tmp_path), "--gdb", "127.0.0.1:1240",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["gdb_setup"][-1] == "target remote 127.0.0.1:1240"
    assert [Path(f["path"]).name for f in doc["files"]] == ["launch.json", "tasks.json"]
    launch = json.loads((tmp_path / ".vscode" / "launch.json").read_text())
    assert launch["configurations"][0]["name"] == "kdiag: debug QEMU (x86_64)"


def test_cli_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ide", "vscode", "--project", str(tmp_path / "missing")]) == 2
    assert main(["ide", "vscode", "--project", str(tmp_path), "--gdb", "0.0.0.0:1234"]) == 2
    assert main(["ide", "clion"]) == 2
    assert main(["ide", "vscode", "--project", str(tmp_path), "--gdb", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "loopback" in err and "--project" in err
