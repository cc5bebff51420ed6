"""kdiag's gdb extension: ``source gdbext/init.py`` inside gdb (see init.py and README.md).

This package is the only code that imports ``gdb``; importing ``gdbext`` itself (this file)
does not, so tools can locate it from plain Python.
"""
