"""On-disk cache of :class:`~kdiag.symbols.elfindex.ElfIndex` files.

Directory: ``$KDIAG_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/kdiag``, else
``~/.cache/kdiag``; one file ``<key>.idx`` per ELF, where the key (see
:func:`kdiag.symbols.elffile.file_key`) hashes the GNU build-id (or, without one, the whole
file), the size and the section headers, so a rebuilt or stripped ELF never reuses a stale
index. ``KDIAG_CACHE_DIR=off`` (or ``none``) disables the disk cache. Writes are atomic
(temporary file + rename); an unreadable or outdated entry is rebuilt, never an error.

Plain ``os.path`` strings and lazy imports (``tempfile``, ``logging``) only on the write
side: a warm ``kdiag symbolize`` reads one file, and importing ``pathlib``, ``tempfile`` and
``logging`` cost it more than the read.
"""

from __future__ import annotations

import os

ENV = "KDIAG_CACHE_DIR"


def cache_dir() -> str | None:
    """The index cache directory, or None when disabled."""
    env = os.environ.get(ENV)
    if env is not None:
        if env.strip().lower() in ("", "off", "none", "0"):
            return None
        return env
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = xdg if xdg else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kdiag")


def load(key: str) -> bytes | None:
    d = cache_dir()
    if d is None:
        return None
    try:
        with open(os.path.join(d, f"{key}.idx"), "rb") as f:
            return f.read()
    except OSError:
        return None


def store(key: str, data: bytes) -> None:
    d = cache_dir()
    if d is None:
        return
    import tempfile

    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".idx-", dir=d)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(d, f"{key}.idx"))
        except BaseException:
            with_suppress_unlink(tmp)
            raise
    except OSError as err:  # a read-only home must not break symbolization
        import logging

        logging.getLogger(__name__).debug("index cache not written: %s", err)


def with_suppress_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def clear() -> int:
    """Delete every cached index; return how many files were removed."""
    d = cache_dir()
    if d is None or not os.path.isdir(d):
        return 0
    n = 0
    for name in os.listdir(d):
        if not name.endswith(".idx"):
            continue
        try:
            os.unlink(os.path.join(d, name))
            n += 1
        except OSError:
            pass
    return n
