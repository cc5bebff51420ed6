"""Page tables of the bundled x86-64 kernel, live: kdiag against QEMU's ``info mem`` /
``info tlb`` and against what the kernel reports about itself (KDIAG lines on serial).

One VM for the module: the ``pt-stress`` scenario, which is the healthy boot (W^X kernel
image, physmap in 1 GiB pages, user code and stack, WC framebuffer, LAPIC UC, lower half
unmapped) plus 1 GiB at 0xffffc00000000000 mapped with 262,144 read-only NX 4 KiB PTEs over
16 frames (512 page tables). gdb stops the CPU at CPL 0 (``isr_common``) and holds it; the
same stop is then read four ways: gdb's ``kd``/``info tab``, kdiag's engine over QMP, the CLI
with ``--qmp`` and with ``--core`` (a dump-guest-memory core of the stop), and QEMU's own
monitor (``info tlb`` through a raw HMP socket: ~11 MB of text).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kdiag.cli import main as kdiag_main
from kdiag.paging.checks import AnomalyKind, CheckOptions, Severity, check
from kdiag.paging.config import PAT_FROM_MSR, resolve_config
from kdiag.paging.dump import Dump, dump, reverse_lookup
from kdiag.paging.tables import TableCache
from kdiag.paging.walker import StopReason, walk
from kdiag.x86.pat import MemoryType
from kdiag.x86.pte import PagingMode
from qmp_tools import launcher as L
from tests.integration._qemu_ref import (
    RawHmp,
    dump_as_info_mem,
    dump_pages,
    parse_info_mem,
    parse_info_tlb,
    tlb_flags,
)
from tests.integration.gdb_session import MiGdb, kdiag_lines

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed")

STRESS = 0xFFFFC00000000000
GIB = 1 << 30


def h(text: str) -> int:
    return int(text, 16)


class Env:
    vm: L.QemuInstance
    gdb: MiGdb
    kd: dict[str, dict[str, str]]
    pat: int
    dump: Dump
    info_mem: str
    info_tlb: str
    core: Path
    gdb_pt: dict
    gdb_pt_seconds: float


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    L.build_kernel("x86_64")
    e = Env()
    run = Path(tempfile.mkdtemp(prefix="kdiag-ptlive-"))  # 0700
    hmp = run / "hmp.sock"
    cfg = L.QemuConfig(scenario="pt-stress", gdb_port=0, build=False, log_items="",
                       extra_args=["-monitor", f"unix:{hmp},server=on,wait=off"])
    e.vm = L.QemuInstance.start(cfg, run_dir=run)
    gdb = None
    target = None
    try:
        e.vm.wait_serial(r"\[kernel\] ready", timeout=240)
        e.kd = kdiag_lines(e.vm.serial_text())
        e.pat = h(e.kd["MSR"]["PAT"])
        gdb = MiGdb(e.vm.gdb_port)
        gdb.cont_to("isr_common")  # a timer tick: CPL 0, where rdmsr can be injected
        e.gdb = gdb
        t0 = time.perf_counter()
        e.gdb_pt = gdb.json("kd pt --json")  # cold: reads every table, IA32_PAT by rdmsr
        e.gdb_pt_seconds = time.perf_counter() - t0
        from qmp_tools.target import QmpTarget

        target = QmpTarget.connect(str(e.vm.qmp_path))
        cfgp = resolve_config(target, pat=e.pat)
        e.dump = dump(target, cfgp, collect_segments=True)
        e.info_mem = e.vm.hmp("info mem")
        with RawHmp(hmp) as mon:
            e.info_tlb = mon.cmd("info tlb")
        target.close()
        target = None
        e.core = run / "stop.elf"
        e.vm.qmp("dump-guest-memory", paging=False, protocol=f"file:{e.core}")
        yield e
    finally:
        if target is not None:
            target.close()
        if gdb is not None:
            gdb.close()
        e.vm.stop()
        shutil.rmtree(run, ignore_errors=True)


def qmp_target(e: Env):  # noqa: ANN201 - a QmpTarget, imported lazily
    from qmp_tools.target import QmpTarget

    return QmpTarget.connect(str(e.vm.qmp_path))


@pytest.fixture
def t(env: Env) -> Iterator[Any]:
    """A QmpTarget on the stopped VM for one test (QMP's socket takes one client at a time:
    the CLI tests connect on their own)."""
    target = qmp_target(env)
    try:
        yield target
    finally:
        target.close()


def mapping_at(d: Dump, va: int):  # noqa: ANN201
    return next(m for m in d.mappings if m.contains(va))


# -- against QEMU's own views -----------------------------------------------------------------
def test_dump_agrees_with_info_mem(env: Env) -> None:
    qemu = parse_info_mem(env.info_mem)
    assert len(qemu) >= 5, env.info_mem
    assert dump_as_info_mem(env.dump) == qemu


def test_every_page_agrees_with_info_tlb(env: Env) -> None:
    qemu = parse_info_tlb(env.info_tlb)
    ours = dump_pages(env.dump)
    assert len(qemu) > 262_144  # the stress region alone has that many leaves
    assert set(ours) == set(qemu)
    bad = [va for va, (pa, _) in ours.items() if qemu[va][0] != pa]
    assert not bad, [hex(v) for v in bad[:5]]


def test_leaf_flags_agree_with_info_tlb(env: Env, t: Any) -> None:
    qemu = parse_info_tlb(env.info_tlb)
    cache = TableCache(t)
    cfg = env.dump.config
    vas = sorted(qemu)
    for va in vas[:: max(1, len(vas) // 400)] + vas[-3:]:
        w = walk(t, va, cfg, cache=cache)
        assert w.ok and w.pa == qemu[va][0], hex(va)
        leaf = w.steps[-1].entry
        assert tlb_flags(leaf.raw, not leaf.level.last) == qemu[va][1], hex(va)


# -- against the kernel's own report ------------------------------------------------------
def test_mode_cr3_and_pat_match_the_kernel(env: Env) -> None:
    doc = env.gdb_pt
    assert doc["mode"] == "4-level" and doc["truncated"] is None
    assert h(doc["cr3"]) == h(env.kd["CR"]["cr3"])
    assert doc["pat"] == {"value": f"{env.pat:#x}", "source": PAT_FROM_MSR, "note": None}
    assert env.dump.config.mode is PagingMode.LEVEL4 and env.dump.truncated is None


def test_kernel_image_is_w_xor_x(env: Env) -> None:
    k = env.kd["KERNEL"]
    text = [h(x) for x in k["text"].split("-")]
    rodata = [h(x) for x in k["rodata"].split("-")]
    data = [h(x) for x in k["data"].split("-")]
    d = env.dump
    for lo, hi, rwx in ((*text, "r-x"), (*rodata, "r--"), (*data, "rw-")):
        for va in range(lo & ~0xFFF, hi, 0x1000):
            m = mapping_at(d, va) if any(m.contains(va) for m in d.mappings) else None
            if m is None:  # the stacks' guard pages inside .bss are unmapped on purpose
                guards = {h(v["guard"]) for k_, v in env.kd.items() if k_.startswith("STACK")}
                assert va in guards, hex(va)
                continue
            assert (m.rwx, m.user, m.memtype) == (rwx, False, MemoryType.WB), hex(va)
    assert mapping_at(d, text[0]).pa == h(k["phys"])
    assert not [m for m in d.mappings if m.wx]  # W^X everywhere, not only in the image


def test_physmap_in_1g_pages(env: Env, t: Any) -> None:
    k = env.kd["KERNEL"]
    base, end = h(k["physmap"]), h(k["physmap_end"])
    m = mapping_at(env.dump, base)
    assert (m.va, m.size, m.pa) == (base, end, 0)
    assert m.page_sizes == (GIB,) and m.rwx == "rw-" and not m.user
    w = walk(t, base + 0x12345678, env.dump.config)
    assert w.pa == 0x12345678 and w.page_size == GIB


def test_user_pages(env: Env, t: Any) -> None:
    u = env.kd["USER"]
    d = env.dump
    code = mapping_at(d, h(u["code"]))
    assert code.user and code.rwx == "r-x"
    stack = mapping_at(d, h(u["stack_base"]))
    assert stack.user and stack.rwx == "rw-" and stack.contains(h(u["stack"]) - 8)
    assert {m.va for m in d.mappings if m.user} <= {code.va, stack.va}
    # the user code's frame is also the kernel image's copy at `load`: two aliases
    pa = walk(t, h(u["code"]), d.config).pa
    hits, _ = reverse_lookup(t, d.config, pa)
    assert {h(u["code"]), h(u["load"])} <= {x.va for x in hits}


def test_framebuffer_is_write_combining(env: Env, t: Any) -> None:
    fb = env.kd["FB"]
    va, pa, size = h(fb["va"]), h(fb["pa"]), h(fb["size"])
    m = mapping_at(env.dump, va)
    assert (m.va, m.pa, m.memtype) == (va, pa, MemoryType.WC) and m.size >= size
    assert m.rwx == "rw-" and not m.user
    big = walk(t, va, env.dump.config)
    assert big.page_size == 2 << 20 and big.steps[-1].entry.pat  # PAT bit 12
    tail = walk(t, va + size - 1, env.dump.config)
    assert tail.pa == pa + size - 1 and tail.memtype is MemoryType.WC
    if size % (2 << 20):
        assert tail.page_size == 4096 and tail.steps[-1].entry.pat  # PAT bit 7


def test_known_addresses_walk_to_what_the_kernel_says(env: Env, t: Any) -> None:
    cfg = env.dump.config
    lapic = walk(t, h(env.kd["LAPIC"]["va"]), cfg)
    assert lapic.pa == h(env.kd["LAPIC"]["pa"]) and lapic.memtype is MemoryType.UC
    bi = env.kd["BOOTINFO"]
    assert walk(t, h(bi["va"]), cfg).pa == h(bi["pa"])
    for key, st in env.kd.items():
        if key.startswith("STACK"):
            g = walk(t, h(st["guard"]), cfg)
            assert g.stop is StopReason.NOT_PRESENT and g.stop_level.name == "PT"  # type: ignore
            assert walk(t, h(st["top"]) - 8, cfg).ok
    lower = [m for m in env.dump.mappings if m.va < 0x400000000000]
    assert lower == []  # "[kernel] lower half unmapped"


def test_stress_region(env: Env) -> None:
    s = env.kd["PTSTRESS"]
    base, size = h(s["base"]), h(s["size"])
    assert (base, size) == (STRESS, GIB) and int(s["ptes"]) == 262_144
    m = mapping_at(env.dump, base)
    assert (m.va, m.size, m.pa, m.pages) == (base, size, None, 262_144)  # 16 frames: scattered
    assert m.rwx == "r--" and not m.user and m.page_sizes == (4096,)
    frames = {pa for sg in env.dump.segments or () if base <= sg.va < base + size
              for pa in range(sg.pa, sg.pa + sg.size, 4096)}
    assert len(frames) == 16
    assert env.dump.stats.tables >= 512 + 5


def test_check_is_clean_with_the_live_pat_and_the_framebuffer(env: Env) -> None:
    fb = env.kd["FB"]
    opts = CheckOptions(ram=((0, h(env.kd["KERNEL"]["ram"])),),
                        framebuffer=(h(fb["pa"]), h(fb["size"])))
    found = check(env.dump, opts)
    assert [a for a in found if a.severity is not Severity.INFO] == [], found


def test_check_flags_the_framebuffer_with_the_power_on_pat(env: Env, t: Any) -> None:
    """Over QMP (no MSR read) and without --pat, PA4 is WB: the check says why."""
    fb = env.kd["FB"]
    d = dump(t, resolve_config(t), collect_segments=True)
    kinds = {a.kind: a for a in check(d, CheckOptions(framebuffer=(h(fb["pa"]), h(fb["size"]))))}
    assert AnomalyKind.FRAMEBUFFER_NOT_WC in kinds and AnomalyKind.PAT_ASSUMED in kinds
    assert kinds[AnomalyKind.FRAMEBUFFER_NOT_WC].severity is Severity.INFO


# -- gdb ---------------------------------------------------------------------------------------
def test_gdb_kd_pt_equals_the_engine(env: Env) -> None:
    from kdiag.render.paging import mapping_to_json

    assert env.gdb_pt["mappings"] == [mapping_to_json(m) for m in env.dump.mappings]
    print(f"kd pt in gdb, cold, pt-stress: {env.gdb_pt_seconds * 1e3:.1f} ms")


def test_gdb_info_tab_and_filters(env: Env) -> None:
    text = env.gdb.console("info tab")
    assert text.startswith("4-level paging, EFER.NXE=1, CR3 ")
    assert "0xffffc00000000000-0xffffc00040000000     1 GiB  scattered" in text
    fb = env.kd["FB"]
    wc = env.gdb.json("kd pt --json -t WC")["mappings"]
    assert [(x["va"], x["pa"]) for x in wc] == [(fb["va"], fb["pa"])]
    assert env.gdb.json("kd pt --json --wx")["mappings"] == []
    user_x = env.gdb.json("kd pt --json -u -x")["mappings"]
    assert [x["va"] for x in user_x] == [env.kd["USER"]["code"]]
    rng = env.gdb.json(f"kd pt --json -s --nx -r {STRESS:#x}+0x3000")["mappings"]
    assert [(x["va"], x["end"]) for x in rng] == [(f"{STRESS:#x}", f"{STRESS + 0x3000:#x}")]
    has = env.gdb.json(f"kd pt --json --contains {int(fb['va'], 16) + 5:#x}")["mappings"]
    assert [x["va"] for x in has] == [fb["va"]]


def test_gdb_walk_p2v_and_v2p(env: Env) -> None:
    fb = env.kd["FB"]
    w = env.gdb.json(f"kd walk --json {fb['va']}")
    assert w["ok"] and w["pa"] == fb["pa"] and w["memtype"] == "WC"
    assert [s["level"] for s in w["steps"]] == ["PML4", "PDPT", "PD"]
    text = env.gdb.console("kd walk $pc")
    assert "effective: r-x supervisor" in text and "PT   @" in text
    p = env.gdb.json(f"kd p2v --json {fb['pa']}")
    assert fb["va"] in [x["va"] for x in p["hits"]]
    out = env.gdb.console(f"p/x $kd_v2p({env.kd['BOOTINFO']['va']})")
    assert out.strip().endswith(env.kd["BOOTINFO"]["pa"])
    # --check finds RAM and the framebuffer (vga.vram) in QEMU's memory map by itself
    doc = env.gdb.json("kd pt --check --json")
    bad = [a for a in doc["anomalies"] if a["severity"] != "info"]
    assert bad == [], bad
    text = env.gdb.console(f"kd pt --check --framebuffer {fb['pa']}+{fb['size']}")
    assert "no anomalies found" in text, text


# -- the CLI: --qmp and --core -----------------------------------------------------------------
def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = kdiag_main(argv)
    out, _ = capsys.readouterr()
    return rc, out


def test_cli_qmp_and_core_equal_the_engine(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    from kdiag.render.paging import mapping_to_json

    want = [mapping_to_json(m) for m in env.dump.mappings]
    pat = f"{env.pat:#x}"
    for src in (["--qmp", str(env.vm.qmp_path)], ["--core", str(env.core)]):
        rc, out = cli(["pt", *src, "--pat", pat, "--json"], capsys)
        assert rc == 0 and json.loads(out)["mappings"] == want, src
        fb = env.kd["FB"]
        rc, out = cli(["walk", *src, "--pat", pat, "--json", fb["va"]], capsys)
        assert rc == 0 and json.loads(out)["memtype"] == "WC"
        rc, out = cli(["p2v", *src, "--json", env.kd["BOOTINFO"]["pa"]], capsys)
        assert rc == 0 and env.kd["BOOTINFO"]["va"] in [x["va"] for x in json.loads(out)["hits"]]
        rc, out = cli(["pt", *src, "--pat", pat, "--check", "--framebuffer",
                       f"{fb['pa']}+{fb['size']}"], capsys)
        assert rc == 0, out
    # over QMP without --pat: under the assumed power-on PAT the framebuffer (found in the
    # memory map) is WB; said as information, not as a problem
    rc, out = cli(["pt", "--qmp", str(env.vm.qmp_path), "--check", "--json"], capsys)
    sev = {a["kind"]: a["severity"] for a in json.loads(out)["anomalies"]}
    assert rc == 0 and sev == {"framebuffer-not-wc": "info", "pat-assumed": "info"}, sev
