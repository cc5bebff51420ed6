"""On-disk cache of :class:`~kdiag.symbols.elfindex.ElfIndex` files.

Directory: ``$KDIAG_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/kdiag``, else
``~/.cache/kdiag``; one file ``<key>.idx`` per ELF, where the key (see
:func:`kdiag.symbols.elffile.file_key`) hashes the GNU build-id (or, without one, the whole
file), the size and the section headers, so a rebuilt or stripped ELF never reuses a stale
index. ``KDIAG_CACHE_DIR=off`` (or ``none``) disables the disk cache. Writes are atomic
(temporary file + rename); an unreadable or outdated entry is rebuilt, never an error.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "KDIAG_CACHE_DIR"


def cache_dir() -> Path | None:
    """The index cache directory, or None when disabled."""
    env = os.environ.get(ENV)
    if env is not None:
        if env.strip().lower() in ("", "off", "none", "0"):
            return None
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "kdiag"


def load(key: str) -> bytes | None:
    d = cache_dir()
    if d is None:
        return None
    try:
        return (d / f"{key}.idx").read_bytes()
    except OSError:
        return None


def store(key: str, data: bytes) -> None:
    d = cache_dir()
    if d is None:
        return
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".idx-", dir=d)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, d / f"{key}.idx")
        except BaseException:
            with_suppress_unlink(tmp)
            raise
    except OSError as err:  # a read-only home must not break symbolization
        log.debug("index cache not written: %s", err)


def with_suppress_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def clear() -> int:
    """Delete every cached index; return how many files were removed."""
    d = cache_dir()
    if d is None or not d.is_dir():
        return 0
    n = 0
    for p in d.glob("*.idx"):
        try:
            p.unlink()
            n += 1
        except OSError:
            pass
    return n
