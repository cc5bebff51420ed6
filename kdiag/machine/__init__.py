"""Machine state read through a Target: descriptor tables (``tables``) and checks (``checks``).

``kdiag.x86`` decodes bytes; this package knows where the bytes are (GDTR, IDTR, TR, LDTR from
``Target.state()``) and what combinations of entries will fault (``checks``). Nothing here
prints; ``kdiag.render`` turns the results into text and JSON.
"""
