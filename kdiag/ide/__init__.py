"""IDE run configurations for remote-debugging a kernel in QEMU (pure file generation).

``kdiag ide vscode|clion --project DIR`` uses these modules; they only build and merge files,
never start anything. :mod:`kdiag.ide.spec` says what every configuration does (the four gdb
steps and the ``kdiag run --wait-gdb`` command), :mod:`kdiag.ide.vscode` and
:mod:`kdiag.ide.clion` write them in each IDE's format, :mod:`kdiag.ide.jsonc` reads VS Code's
JSON-with-comments, and :mod:`kdiag.ide.files` keeps backups of what it replaces.
"""

from kdiag.ide.spec import IdeSpec

__all__ = ["IdeSpec"]
