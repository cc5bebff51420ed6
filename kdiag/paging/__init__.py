"""Page tables over any Target: translate, walk, dump (merged, filtered), anomaly checks.

- ``kdiag.paging.translate.translate(target, va, state=None) -> int``: one address.
- ``kdiag.paging.walker.walk(target, va, config) -> Walk``: one address, every level shown.
- ``kdiag.paging.dump.dump(target, config, filters=...) -> Dump``: the whole address space.
- ``kdiag.paging.checks.check(dump, options) -> list[Anomaly]``: what looks wrong.
- ``kdiag.paging.config.resolve_config(target, ...)``: CR3, mode and PAT for the current stop.
"""
