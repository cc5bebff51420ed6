"""Write generated IDE files without losing the user's: backups and atomic replacement."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WriteResult:
    """What happened to one file: ``changed`` False when it already had this content."""

    path: Path
    changed: bool
    created: bool
    backup: Path | None = None


def backup_path(path: Path, now: _dt.datetime | None = None) -> Path:
    """``NAME.bak``, or ``NAME.bak-YYYYmmdd-HHMMSS[-N]`` when ``NAME.bak`` already exists."""
    plain = path.with_name(path.name + ".bak")
    if not plain.exists():
        return plain
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.bak-{stamp}-{n}")
    return candidate


def write_with_backup(path: Path, text: str, now: _dt.datetime | None = None) -> WriteResult:
    """Write ``text`` to ``path`` atomically; copy an existing different file to a backup first.

    Nothing is written (and no backup made) when the file already holds ``text``.
    """
    path = Path(path)
    old: str | None = None
    if path.exists():
        old = path.read_text(encoding="utf-8", errors="surrogateescape")
        if old == text:
            return WriteResult(path, changed=False, created=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    if old is not None:
        backup = backup_path(path, now)
        backup.write_text(old, encoding="utf-8", errors="surrogateescape")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if old is not None:
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return WriteResult(path, changed=True, created=old is None, backup=backup)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

