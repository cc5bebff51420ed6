"""QMP side of kdiag: session, QMP Target, launcher, triple-fault watch, monitor shell."""
