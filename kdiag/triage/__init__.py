"""Triple-fault triage: fatal-chain reconstruction and root-cause rules -> Diagnosis.

Pipeline (each step pure and separately testable):

1. records (:mod:`kdiag.qemulog`) -> :func:`kdiag.triage.chain.analyze_records` -> FatalChain
   (outcome, trigger, exceptions, folded ones, terminal, decisive register dump);
2. FatalChain + optional Target + optional kernel ELF -> :class:`kdiag.triage.facts.Facts`;
3. Facts -> :data:`kdiag.triage.rules.RULES` (a table of small functions) -> causes;
4. causes -> :func:`kdiag.triage.rank.rank` -> ranked causes in a :class:`~kdiag.triage.model.Diagnosis`;
5. Diagnosis -> :mod:`kdiag.render.triage` (text / JSON).

Entry points (:mod:`kdiag.triage.engine`):

- ``triage_path(path, image=None, count_all_resets=False)``: a QEMU ``-d int,cpu_reset`` log,
  read from its end;
- ``triage_state(state, target=None, image=None, chain=None)``: a stopped CPU (gdb ``kd triage``,
  the QMP watch): rules read the IDT, GDT, TSS and page tables through ``target``;
- ``diagnose(chain, image=None, target=None)``: a chain from a log plus a live target.

``image`` is a :class:`kdiag.triage.location.KernelImage` (``--elf FILE[@BIAS]``). The cause-id
vocabulary is in :mod:`kdiag.triage.causes`.
"""
