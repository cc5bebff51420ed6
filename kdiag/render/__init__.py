"""Text and JSON renderers shared by the CLI, the gdb commands and the QMP shell.

One module per topic, each with ``to_text``-style functions returning ``str`` and ``to_json``-
style functions returning JSON-ready dicts/lists (addresses as ``"0x..."`` strings). Values
never format themselves, and nothing here writes to a terminal.
"""
