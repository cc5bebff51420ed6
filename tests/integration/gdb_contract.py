"""Run the Target contract suite *inside gdb*: GdbTarget against a core dumped at the same stop.

Called from tests/integration/test_gdb_commands.py as
``python import tests.integration.gdb_contract as c; c.run(CORE, OUT)``; writes a JSON report
(each check's name and "ok" or the assertion text) because pytest's assertion machinery lives
in the other process.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path


def run(core_path: str, out_path: str) -> None:
    from gdbext.target import GdbTarget
    from kdiag.paging.translate import translate
    from kdiag.target.core import CoreTarget
    from tests.unit import test_target_contract as C

    results: dict[str, str] = {}
    core = CoreTarget.from_path(core_path)
    gdbt = GdbTarget()
    nopmem = GdbTarget(use_pmemsave=False)
    st = core.state()
    gdt_pa = translate(core, st.gdtr.base, st) if st.gdtr else 0
    probes = C.Probes(
        phys=[(st.cr3 & ~0xFFF, 4096), (gdt_pa, 0x38), (0x100000 - 8, 16),
              (0x200000, 200 * 1024), (0x1000, 3 * 4096 + 5)],
        virt=[(st.gdtr.base, 0x38) if st.gdtr else (0, 0),
              (st.idtr.base, 4096) if st.idtr else (0, 0), (st.rip, 64), (st.rsp - 64, 64)],
        unmapped_va=0x0000000000001000,  # the lower half is unmapped once the kernel is up
        beyond_ram_pa=0x7F000000,
    )
    checks = {
        "is_a_target": lambda: C.contract_is_a_target(gdbt),
        # `kd core` saved the real EFER beside the core: every bit must match.
        "state": lambda: C.contract_state(gdbt, core),
        "core_efer_is_real": lambda: _assert(not core.efer_inferred,
                                             core.sidecar_note or "no MSR file beside the core"),
        "read_phys": lambda: C.contract_read_phys(gdbt, core, probes),
        "read_phys_packets": lambda: C.contract_read_phys(nopmem, core, probes),
        "read_virt": lambda: C.contract_read_virt(gdbt, core, probes),
        "msr_unavailable": lambda: _msr_unavailable(gdbt),
        "tables": lambda: C.contract_tables(gdbt, core),
        "msrs": lambda: _assert(all(gdbt.read_msr(i) == core.read_msr(i)
                                    for i in (0x277, 0xC0000080, 0xC0000081, 0xC0000082)),
                                "MSRs differ between gdb and the core's MSR file"),
        "pmemsave_used": lambda: _assert(gdbt._pmem_ok is True, "pmemsave path not taken"),
    }
    for name, fn in checks.items():
        try:
            fn()
            results[name] = "ok"
        except BaseException as err:  # noqa: BLE001 - report everything to the test
            results[name] = f"{type(err).__name__}: {err}\n{traceback.format_exc()[-800:]}"
    gdbt.close()
    nopmem.close()
    core.close()
    Path(out_path).write_text(json.dumps(results, indent=1))


def _assert(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


def _msr_unavailable(gdbt: object) -> None:
    """GdbTarget refuses an unknown MSR (without --force) with MsrUnavailable naming it."""
    from tests.unit import test_target_contract as C

    C.contract_msr_unavailable(gdbt)  # type: ignore[arg-type]
