"""Unwinders over the Target protocol and a Symbolizer.

- :func:`unwind` -> :class:`Backtrace`: CFI, frame pointers, and the step across interrupt and
  exception frames (:mod:`kdiag.unwind.unwinder`, :mod:`kdiag.unwind.stubs`);
- :func:`jos_walk` -> :class:`JosTrace`: the naive EBP-chain walk of JOS's ``mon_backtrace``,
  reproduced exactly (:mod:`kdiag.unwind.jos`).

Both are bounded and never raise for a bad stack: they stop with a reason.
"""

from kdiag.unwind.frames import Backtrace, Frame, InterruptBoundary
from kdiag.unwind.jos import JosRow, JosTrace, jos_walk
from kdiag.unwind.stubs import StubLayout, register_stub
from kdiag.unwind.unwinder import unwind

__all__ = ["Backtrace", "Frame", "InterruptBoundary", "JosRow", "JosTrace", "StubLayout",
           "jos_walk", "register_stub", "unwind"]
