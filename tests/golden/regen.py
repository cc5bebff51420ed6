"""Regenerate the expected outputs of the triage golden tests (run from the project root).

    .venv/bin/python tests/golden/regen.py

Review the diff before committing: the golden files are the reviewed contract of the output.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from kdiag.cli import main  # noqa: E402
from tests.golden.cases import CASES  # noqa: E402


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    return rc, out.getvalue()


if __name__ == "__main__":
    os.chdir(ROOT)
    for name, argv in CASES.items():
        rc, text = run(argv)
        (ROOT / "tests" / "golden" / "expected" / name).write_text(f"exit {rc}\n{text}")
        print(f"{name}: exit {rc}")
