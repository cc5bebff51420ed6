"""Lazy logging for the paths a short-lived ``kdiag`` process rarely takes.

``import logging`` costs a ``kdiag triage`` start several milliseconds (it pulls in threading,
traceback, string, ...), which is a measurable share of triaging a 1 GiB log. Modules on the
triage path report their rare warnings through :func:`warning`, which imports logging only
then. The ``kdiag`` logger gets a ``NullHandler`` (the library convention: silent unless the
application configures logging).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's constant without importing typing (start-up cost: kdiag._record)
if TYPE_CHECKING:
    import logging


def _logger(name: str) -> logging.Logger:
    import logging

    root = logging.getLogger("kdiag")
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    return logging.getLogger(name)


def warning(name: str, msg: str, *args: object) -> None:
    """``logging.getLogger(name).warning(msg, *args)``, importing logging on first use."""
    _logger(name).warning(msg, *args)


def exception(name: str, msg: str, *args: object) -> None:
    """``logging.getLogger(name).exception(msg, *args)`` (inside an ``except``), lazily."""
    _logger(name).exception(msg, *args)
