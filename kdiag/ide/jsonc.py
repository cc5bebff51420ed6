"""Read the JSON-with-comments dialect VS Code writes (``launch.json``, ``tasks.json``).

VS Code accepts ``//`` and ``/* */`` comments and trailing commas before ``]``/``}``; the
standard ``json`` module does not. :func:`strip_jsonc` removes both outside string literals
(a ``//`` inside ``"http://..."`` stays), keeping line structure so ``json`` error positions
still point at the user's line. Writing always produces plain JSON.
"""

from __future__ import annotations

import json
from typing import Any

from kdiag.errors import InputError


def strip_jsonc(text: str) -> str:
    """Remove comments and trailing commas outside strings; newlines are preserved."""
    out: list[str] = []
    i = 0
    n = len(text)
    in_string = False
    pending_comma: int | None = None  # index in ``out`` of a comma that may be trailing
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_string = False
            i += 1
            continue
        if c == '"':
            pending_comma = None
            in_string = True
            out.append(c)
            i += 1
            continue
        if c == "/" and i + 1 < n and text[i + 1] == "/":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == "/" and i + 1 < n and text[i + 1] == "*":
            j = text.find("*/", i + 2)
            end = n if j < 0 else j + 2
            out.append("".join(ch for ch in text[i:end] if ch == "\n"))  # keep line numbers
            i = end
            continue
        if c == ",":
            pending_comma = len(out)
            out.append(c)
            i += 1
            continue
        if c in "]}" and pending_comma is not None:
            out[pending_comma] = " "
        if not c.isspace():
            pending_comma = None
        out.append(c)
        i += 1
    return "".join(out)


def loads_jsonc(text: str, source: str = "JSON") -> Any:
    """Parse JSON with comments/trailing commas; InputError names ``source`` and the line."""
    if not text.strip():
        return None
    try:
        return json.loads(strip_jsonc(text))
    except json.JSONDecodeError as err:
        raise InputError(f"{source}: not valid JSON (line {err.lineno}, column {err.colno}: "
                         f"{err.msg}); fix or move it away and run again") from err
