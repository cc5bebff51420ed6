"""``kdiag`` subcommands, one module each (discovered by ``kdiag.cli``)."""
