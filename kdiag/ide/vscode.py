"""VS Code: a ``cppdbg`` remote-gdb configuration plus the task that starts QEMU.

``.vscode/launch.json`` gets one configuration (merged by ``name``)::

    type cppdbg, request launch, MIMode gdb, program = the kernel ELF,
    setupCommands: set architecture i386:x86-64 / file ELF / source gdbext/init.py /
                   target remote 127.0.0.1:PORT
    customLaunchSetupCommands: []      (cppdbg's own file + -target-select are replaced by
                                        nothing: the setup commands already attached)
    launchCompleteCommand: exec-continue   (QEMU waits paused under -S)
    preLaunchTask: "kdiag: start QEMU (...)", postDebugTask: "kdiag: stop QEMU (...)"

The MI engine (microsoft/MIEngine) sends each setup command that does not start with ``-`` as
``-interpreter-exec console "TEXT"``, then the custom launch commands, then ``-exec-continue``.

``.vscode/tasks.json`` gets a background ``process`` task (merged by ``label``; an argument
list, never a shell string) running ``python -m kdiag run --wait-gdb --gdb 127.0.0.1:PORT
[--scenario NAME]`` whose problem matcher ends at the launcher's ``waiting for gdb on
127.0.0.1:PORT`` line, so the debugger attaches only once the stub listens; and a stop task
that terminates it through ``workbench.action.tasks.terminate`` (an ``inputs`` entry).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdiag.errors import InputError
from kdiag.ide.files import WriteResult, write_with_backup
from kdiag.ide.jsonc import loads_jsonc
from kdiag.ide.spec import IdeSpec

LAUNCH_VERSION = "0.2.0"
TASKS_VERSION = "2.0.0"


def _input_id(spec: IdeSpec) -> str:
    return "kdiagStopQemu-" + "-".join(p for p in (spec.kernel, spec.scenario) if p)


def launch_configuration(spec: IdeSpec) -> dict[str, Any]:
    """The cppdbg configuration for ``spec``."""
    descriptions = ("x86-64 register layout before connecting (QEMU's stub is 64-bit)",
                    "kernel symbols", "kdiag gdb extension (kd ... commands)",
                    "attach to QEMU's gdbstub (loopback)")
    setup = [{"description": d, "text": t, "ignoreFailures": False}
             for d, t in zip(descriptions, spec.gdb_setup_commands(), strict=True)]
    return {
        "name": spec.config_name,
        "type": "cppdbg",
        "request": "launch",
        "program": str(spec.elf),
        "cwd": str(spec.project_root),
        "MIMode": "gdb",
        "miDebuggerPath": spec.gdb,
        "miDebuggerServerAddress": spec.address,
        "targetArchitecture": "x86_64",
        "stopAtEntry": False,
        "externalConsole": False,
        "setupCommands": setup,
        "customLaunchSetupCommands": [],
        "launchCompleteCommand": "exec-continue",
        "preLaunchTask": spec.task_label,
        "postDebugTask": spec.stop_label,
    }


def start_task(spec: IdeSpec) -> dict[str, Any]:
    """The background task that runs ``kdiag run --wait-gdb``."""
    argv = spec.kdiag_argv() + spec.run_args()
    return {
        "label": spec.task_label,
        "type": "process",
        "command": argv[0],
        "args": argv[1:],
        "options": {"cwd": str(spec.project_root)},
        "isBackground": True,
        "problemMatcher": {
            "owner": "kdiag",
            "source": "kdiag",
            "pattern": {"regexp": r"^kdiag: error: (.*)$", "message": 1},
            "background": {
                "activeBegins": True,
                "beginsPattern": r"^kdiag: run directory",
                "endsPattern": spec.ready_regex,
            },
        },
        "presentation": {"reveal": "always", "panel": "dedicated", "clear": True},
    }


def stop_task(spec: IdeSpec) -> dict[str, Any]:
    """Ends the start task (and with it QEMU) after the debug session."""
    return {
        "label": spec.stop_label,
        "type": "shell",
        "command": "echo",
        "args": ["${input:" + _input_id(spec) + "}"],
        "problemMatcher": [],
        "presentation": {"reveal": "never"},
    }


def stop_input(spec: IdeSpec) -> dict[str, Any]:
    return {"id": _input_id(spec), "type": "command",
            "command": "workbench.action.tasks.terminate", "args": spec.task_label}


def merge_named(existing: list[Any], new: list[dict[str, Any]], key: str) -> list[Any]:
    """Replace items whose ``key`` equals a new item's in place; append the others."""
    out = list(existing)
    for item in new:
        for i, old in enumerate(out):
            if isinstance(old, dict) and old.get(key) == item[key]:
                out[i] = item
                break
        else:
            out.append(item)
    return out


def _document(text: str | None, source: str, version: str) -> dict[str, Any]:
    doc = loads_jsonc(text, source) if text is not None else None
    if doc is None:
        return {"version": version}
    if not isinstance(doc, dict):
        raise InputError(f"{source}: expected a JSON object at the top level")
    return doc


def _list_field(doc: dict[str, Any], name: str, source: str) -> list[Any]:
    value = doc.get(name, [])
    if not isinstance(value, list):
        raise InputError(f"{source}: \"{name}\" is not a list")
    return value


def merge_launch(text: str | None, spec: IdeSpec, source: str = "launch.json") -> dict[str, Any]:
    """``launch.json`` content (``text``, JSONC or None) with our configuration merged in."""
    doc = _document(text, source, LAUNCH_VERSION)
    doc["configurations"] = merge_named(_list_field(doc, "configurations", source),
                                        [launch_configuration(spec)], "name")
    return doc


def merge_tasks(text: str | None, spec: IdeSpec, source: str = "tasks.json") -> dict[str, Any]:
    """``tasks.json`` content with our start/stop tasks (by label) and input (by id)."""
    doc = _document(text, source, TASKS_VERSION)
    doc["tasks"] = merge_named(_list_field(doc, "tasks", source),
                               [start_task(spec), stop_task(spec)], "label")
    doc["inputs"] = merge_named(_list_field(doc, "inputs", source), [stop_input(spec)], "id")
    return doc


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=4) + "\n"


def write(project: Path, spec: IdeSpec) -> list[WriteResult]:
    """Write/merge ``PROJECT/.vscode/launch.json`` and ``tasks.json`` (backups kept)."""
    vscode = Path(project) / ".vscode"
    results = []
    for name, merge in (("launch.json", merge_launch), ("tasks.json", merge_tasks)):
        path = vscode / name
        text = path.read_text(encoding="utf-8") if path.exists() else None
        results.append(write_with_backup(path, dumps(merge(text, spec, str(path)))))
    return results
