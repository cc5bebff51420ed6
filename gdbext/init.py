"""kdiag for gdb: ``source /path/to/kdiag/gdbext/init.py`` from a plain ``gdb``.

What it does, in order (nothing reads the target; commands read it when run):

1. checks gdb's Python (>= 3.11; Debian 12's gdb 13 embeds 3.11) and gdb (>= 12);
2. puts the project root on ``sys.path`` and adds the project's virtualenv site-packages
   (``<root>/.venv/lib/python3.X/site-packages``, found relative to this file; override with
   ``KDIAG_VENV=/path/to/venv``) with ``site.addsitedir``, so pyelftools and capstone import;
3. imports every ``gdbext/cmd_*.py`` module in name order and calls its ``register()``, which
   instantiates the command classes (gdb registers a command when it is constructed).

Adding a command group is adding a file: create ``gdbext/cmd_<topic>.py`` with
:class:`gdbext.common.KdCommand` subclasses and a ``register()`` that instantiates them (see
``gdbext/common.py``). Sourcing this file again reloads every module,
so edits take effect without restarting gdb.

Attach to QEMU (gdb must know the architecture before connecting)::

    (gdb) set architecture i386:x86-64
    (gdb) file kernel/build/kernel-x86_64.elf
    (gdb) source gdbext/init.py
    (gdb) target remote 127.0.0.1:1234
    (gdb) kd gdt
"""

import gdb  # type: ignore[import-not-found]


def _kdiag_load() -> None:
    import glob
    import importlib
    import os
    import site
    import sys

    def say(text: str, stream: int = gdb.STDOUT) -> None:
        gdb.write(f"kdiag: {text}\n", stream)

    if sys.version_info < (3, 11):  # noqa: UP036 - gdb may embed an older Python
        say(f"gdb's Python is {sys.version.split()[0]}; kdiag needs 3.11 or newer "
            "(gdb 13 on Debian 12 has it). Not loaded.", gdb.STDERR)
        return
    try:
        major = int(gdb.VERSION.split(".")[0].split()[-1])
    except (ValueError, IndexError):
        major = 0
    if major and major < 12:
        say(f"gdb {gdb.VERSION} is older than 12; some commands may fail", gdb.STDERR)

    # Not __file__: when `source` runs inside another Python script, __main__.__file__ still
    # names the outer script. The code object knows which file it was compiled from.
    here = os.path.dirname(os.path.abspath(sys._getframe().f_code.co_filename))
    root = os.path.dirname(here)
    if root not in sys.path:
        sys.path.insert(0, root)

    venv = os.environ.get("KDIAG_VENV") or os.path.join(root, ".venv")
    want = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [os.path.join(venv, "lib", want, "site-packages")]
    candidates += sorted(glob.glob(os.path.join(venv, "lib", "python3.*", "site-packages")))
    sitedir = next((c for c in candidates if os.path.isdir(c)), None)
    if sitedir is None:
        say(f"no virtualenv at {venv} (run `make setup`); continuing with gdb's own "
            "site-packages", gdb.STDERR)
    else:
        if want not in sitedir:
            say(f"the virtualenv is for {sitedir.split(os.sep)[-2]} but gdb runs {want}; "
                "compiled packages (capstone) may not load", gdb.STDERR)
        if sitedir not in sys.path:
            site.addsitedir(sitedir)

    try:
        importlib.import_module("kdiag")
    except ImportError as err:
        say(f"cannot import kdiag from {root}: {err}. Not loaded.", gdb.STDERR)
        return

    loaded = []
    for path in sorted(glob.glob(os.path.join(here, "cmd_*.py"))):
        name = "gdbext." + os.path.splitext(os.path.basename(path))[0]
        try:
            if name in sys.modules:
                mod = importlib.reload(sys.modules[name])
            else:
                mod = importlib.import_module(name)
            register = getattr(mod, "register", None)
            if register is None:
                say(f"{name} has no register(); skipped", gdb.STDERR)
                continue
            register()
            loaded.append(name.split(".cmd_")[1])
        except Exception as err:  # one broken module must not take the others down
            say(f"{name} failed to load: {type(err).__name__}: {err}", gdb.STDERR)
    common = importlib.import_module("gdbext.common")
    common.KdDebug()
    common.connect_events()
    say(f"loaded ({', '.join(loaded)}): `help kd` lists the commands")


_kdiag_load()
del _kdiag_load
