"""Parse QEMU's x86 register dump into a :class:`kdiag.x86.state.CpuState`.

QEMU 7.2 prints the dump from ``x86_cpu_dump_state`` (``target/i386/cpu-dump.c``) in three
places, all handled here:

- after every ``-d int`` interrupt record (flag ``CPU_DUMP_CCOP``: adds ``CCS=/CCD=/CCO=``);
- after ``CPU Reset (CPU n)`` with ``-d cpu_reset`` (``CPU_DUMP_FPU | CPU_DUMP_CCOP``: adds the
  ``FCW=``/``FPR``/``XMM`` lines); the state is the one from *before* the reset;
- the HMP ``info registers`` command (also via gdb ``monitor`` or QMP ``human-monitor-command``):
  a leading ``CPU#n`` line, no ``CCS=`` line, FPU/XMM lines.

Layouts. The general registers are printed 64-bit (``RAX=`` .. ``R15=``, ``RIP=``/``RFL=``)
when the CPU executes 64-bit code (CS.L=1 with EFER.LMA=1), otherwise 32-bit (``EAX=`` ..,
``EIP=``/``EFL=``). Segment bases, ``GDT=``/``IDT=`` bases and CR2/CR3 are printed with 16 digits
whenever EFER.LMA=1 (so a compatibility-mode dump mixes ``EAX=`` with 16-digit bases), else 8.
Protected-mode segment lines end with ``DPL=n`` and a type (``CS64 [-R-]``, ``DS [-WA]``,
``TSS64-busy``); real-mode ones stop after the flags word. Example (64-bit, ``-d int``)::

    RAX=1122334455667788 RBX=0000000040000000 RCX=00000000c0000080 RDX=00000000000000e9
    RSI=000000000010012e RDI=0000000000001000 RBP=0000000000000000 RSP=0000000000109000
    R8 =0000000000000000 R9 =0000000000000000 R10=0000000000000000 R11=0000000000000000
    R12=0000000000000000 R13=0000000000000000 R14=0000000000000000 R15=0000000000000000
    RIP=00000000001000ec RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0
    ES =0010 0000000000000000 00000000 00009300 DPL=0 DS   [-WA]
    CS =0008 0000000000000000 00000000 00209a00 DPL=0 CS64 [-R-]
    ...
    LDT=0000 0000000000000000 0000ffff 00008200 DPL=0 LDT
    TR =0000 0000000000000000 0000ffff 00008b00 DPL=0 TSS64-busy
    GDT=     0000000000100130 00000017
    IDT=     0000000000000000 00000000
    CR0=80000011 CR2=0000000040000000 CR3=0000000000101000 CR4=00000020
    DR0=... DR6=... DR7=...
    CCS=0000000000000200 CCD=0000000080000000 CCO=LOGICB
    EFER=0000000000000500

:class:`DumpBuilder` consumes lines one at a time (the streaming log parser uses it to collect
the dump that follows a record); :func:`parse_register_dump` is the one-shot form for a block of
text (gdb/QMP backends).
"""

from __future__ import annotations

import re

from kdiag._record import field, record
from kdiag.errors import InputError
from kdiag.x86.state import CpuState, SegmentCache, TableRegister

__all__ = ["DumpBuilder", "ParsedDump", "is_dump_line", "parse_dump", "parse_register_dump"]

_HEX = r"[0-9a-fA-F]+"
_PAIR = re.compile(r"([A-Z][A-Z0-9]*)\s?=(" + _HEX + r")")
_SEG = re.compile(
    r"^\s*(ES|CS|SS|DS|FS|GS|LDT|TR)\s*=\s*(" + _HEX + r")\s+(" + _HEX + r")\s+(" + _HEX
    + r")\s+(" + _HEX + r")(?:\s+DPL=(\d))?\s*(.*)$")
_TABLE = re.compile(r"^\s*(GDT|IDT)\s*=\s*(" + _HEX + r")\s+(" + _HEX + r")\s*$")
_CPU = re.compile(r"^\s*CPU#(\d+)")
_CCO = re.compile(r"CCO=(\S+)")

_GPR64 = {"RAX": "rax", "RBX": "rbx", "RCX": "rcx", "RDX": "rdx", "RSI": "rsi", "RDI": "rdi",
          "RBP": "rbp", "RSP": "rsp", "R8": "r8", "R9": "r9", "R10": "r10", "R11": "r11",
          "R12": "r12", "R13": "r13", "R14": "r14", "R15": "r15", "RIP": "rip", "RFL": "rflags"}
_GPR32 = {"EAX": "rax", "EBX": "rbx", "ECX": "rcx", "EDX": "rdx", "ESI": "rsi", "EDI": "rdi",
          "EBP": "rbp", "ESP": "rsp", "EIP": "rip", "EFL": "rflags"}
_GPR_FIRST = ("RAX=", "RSI=", "R8 =", "R12=", "RIP=", "EAX=", "ESI=", "EIP=")
# Lines that belong to a dump but carry nothing CpuState keeps.
_SKIP_PREFIXES = ("DR0=", "DR6=", "CCS=", "FCW=", "FPR", "XMM", "YMM", "ZMM", "PKRU=", "Opmask",
                  "BND", "MXCSR")


def is_dump_line(line: str) -> bool:
    """True if ``line`` can be part of a QEMU register dump (used to delimit dumps in logs)."""
    s = line.lstrip()
    if s.startswith(_GPR_FIRST) or s.startswith(_SKIP_PREFIXES):
        return True
    if s.startswith(("CR0=", "EFER=")):
        return True
    return bool(_SEG.match(s) or _TABLE.match(s) or _CPU.match(s))


@record
class ParsedDump:
    """What one dump held, before it becomes a CpuState.

    ``width`` is 64 for the ``RAX=`` layout, 32 for ``EAX=``, 0 if no general registers were
    seen. ``extras`` keeps the dump fields CpuState has no place for (``II``, ``A20``, ``SMM``,
    ``CCO``...). ``seen`` names the parts present: ``gpr``, ``rip``, ``segments``, ``tables``,
    ``cr``, ``efer``, ``fpu``, ``cpu``.
    """

    gpr: dict[str, int] = field(default_factory=dict)
    width: int = 0
    segments: dict[str, SegmentCache] = field(default_factory=dict)
    seg_types: dict[str, str] = field(default_factory=dict)
    tr: SegmentCache | None = None
    ldtr: SegmentCache | None = None
    gdtr: TableRegister | None = None
    idtr: TableRegister | None = None
    cr: dict[str, int] = field(default_factory=dict)
    efer: int | None = None
    cpl: int | None = None
    halted: bool | None = None
    cpu_index: int | None = None
    extras: dict[str, int | str] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        """All the parts a ``-d`` dump always has: registers, RIP, segments, tables, CRs, EFER."""
        return {"gpr", "rip", "segments", "tables", "cr", "efer"} <= self.seen

    def to_state(self, cpu_index: int = 0) -> CpuState:
        idx = self.cpu_index if self.cpu_index is not None else cpu_index
        return CpuState(
            gpr=dict(self.gpr), cr0=self.cr.get("cr0", 0), cr2=self.cr.get("cr2", 0),
            cr3=self.cr.get("cr3", 0), cr4=self.cr.get("cr4", 0), efer=self.efer or 0,
            segments=dict(self.segments), gdtr=self.gdtr, idtr=self.idtr, tr=self.tr,
            ldtr=self.ldtr, fs_base=self.segments["fs"].base if "fs" in self.segments else None,
            gs_base=self.segments["gs"].base if "gs" in self.segments else None,
            cpl=self.cpl, cpu_index=idx, halted=self.halted)


class DumpBuilder:
    """Feed dump lines one by one; ``feed`` returns False for a line that is not part of a dump.

    Values are parsed leniently: a malformed number drops that field, never the dump.
    """

    def __init__(self) -> None:
        self.dump = ParsedDump()
        self.lines = 0

    def feed(self, line: str) -> bool:
        s = line.strip()
        if not s:
            return False
        d = self.dump
        if s.startswith(_SKIP_PREFIXES):  # first: half the lines of an HMP dump (FPU, XMM)
            if s.startswith("CCS="):
                m2 = _CCO.search(s)
                if m2:
                    d.extras["CCO"] = m2.group(1)
            else:
                d.seen.add("fpu")
            self.lines += 1
            return True
        if s.startswith("CPU#"):
            m = _CPU.match(s)
            if m:
                d.cpu_index = int(m.group(1))
                d.seen.add("cpu")
                self.lines += 1
                return True
        if s.startswith(_GPR_FIRST):
            self._gpr_line(s)
            self.lines += 1
            return True
        if s.startswith("CR0="):
            for name, val in _PAIR.findall(s):
                if name in ("CR0", "CR2", "CR3", "CR4"):
                    d.cr[name.lower()] = int(val, 16)
            d.seen.add("cr")
            self.lines += 1
            return True
        if s.startswith("EFER="):
            for name, val in _PAIR.findall(s):
                if name == "EFER":
                    d.efer = int(val, 16)
            d.seen.add("efer")
            self.lines += 1
            return True
        m = _SEG.match(s)
        if m:
            name = m.group(1).lower()
            try:
                sc = SegmentCache(selector=int(m.group(2), 16), base=int(m.group(3), 16),
                                  limit=int(m.group(4), 16), flags=int(m.group(5), 16))
            except ValueError:
                return True
            rest = (m.group(7) or "").strip()
            if name == "tr":
                d.tr = sc
            elif name == "ldt":
                d.ldtr = sc
            else:
                d.segments[name] = sc
                d.seen.add("segments")
            if rest:
                d.seg_types[name] = " ".join(rest.split())
            self.lines += 1
            return True
        m = _TABLE.match(s) if s.startswith(("GDT", "IDT")) else None
        if m:
            tr = TableRegister(base=int(m.group(2), 16), limit=int(m.group(3), 16))
            if m.group(1) == "GDT":
                d.gdtr = tr
            else:
                d.idtr = tr
            d.seen.add("tables")
            self.lines += 1
            return True
        return False

    def _gpr_line(self, s: str) -> None:
        d = self.dump
        for name, val in _PAIR.findall(s):
            v = int(val, 16)
            if name in _GPR64:
                d.gpr[_GPR64[name]] = v
                d.width = 64
            elif name in _GPR32:
                d.gpr[_GPR32[name]] = v
                if d.width == 0:
                    d.width = 32
            elif name == "CPL":
                d.cpl = v & 3
            elif name == "HLT":
                d.halted = bool(v)
            elif name in ("II", "A20", "SMM"):
                d.extras[name] = v
        if s.startswith(("RIP=", "EIP=")):
            d.seen.add("rip")
        else:
            d.seen.add("gpr")


def parse_dump(lines: list[str] | str) -> ParsedDump:
    """Parse every dump line in ``lines`` (other lines are ignored) into a :class:`ParsedDump`."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    b = DumpBuilder()
    for line in lines:
        b.feed(line)
    return b.dump


# One dump exactly as ``x86_cpu_dump_state`` prints it (QEMU 7.2 ``target/i386/cpu-dump.c``),
# from the optional ``CPU#n`` line to ``EFER=`` (the FPU/XMM block cut off before): the general
# registers in the 64-bit (``RAX=``) or 32-bit (``EAX=``) layout, the eight segment lines in
# their fixed order (``DPL=`` and the type only in protected mode), GDT/IDT, CR0-4, the two DR
# lines, ``CCS=`` for ``-d`` dumps. Anything else takes the line-by-line parser.
_X = "([0-9a-f]+)"
_NL = r"\r?\n"  # the monitor ends lines with CRLF (gdb ``monitor``, QMP ``human-monitor-command``)
_SEG_LINE = "{}=" + " ".join([_X] * 4) + r"(?: DPL=\d[^\n]*)?" + _NL
_DUMP_TAIL = ("".join(_SEG_LINE.format(n) for n in ("ES ", "CS ", "SS ", "DS ", "FS ", "GS ",
                                                     "LDT", "TR "))
              + f"GDT= +{_X} {_X}{_NL}IDT= +{_X} {_X}{_NL}CR0={_X} CR2={_X} CR3={_X} CR4={_X}{_NL}"
              + r"DR0=[^\n]*\nDR6=[^\n]*\n(?:CCS=[^\n]*\n)?" + f"EFER={_X}" + r"\s*\Z")
_FLAGS = r" \[[^\]\n]*\] CPL=(\d) II=\d A20=\d SMM=\d HLT=(\d)" + _NL


def _layout(names: str) -> re.Pattern[str]:
    lines = [" ".join(f"{n.replace('_', ' ')}={_X}" for n in line.split())
             for line in names.split("/")]
    return re.compile(r"\s*(?:CPU#(\d+)" + _NL + ")?" + _NL.join(lines) + _FLAGS + _DUMP_TAIL)


_EXACT64 = _layout("RAX RBX RCX RDX/RSI RDI RBP RSP/R8_ R9_ R10 R11/R12 R13 R14 R15/RIP RFL")
_EXACT32 = _layout("EAX EBX ECX EDX/ESI EDI EBP ESP/EIP EFL")
_NAMES64 = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15", "rip", "rflags")
_NAMES32 = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "rip", "rflags")


def _parse_exact(head: str) -> CpuState | None:
    """The state of a dump in exactly QEMU's layout, in one regular-expression match (24 us
    against the line parser's 55 us for an HMP dump: every ``kd`` command parses one); None
    for anything else. Gives what :func:`parse_dump` gives for the same text (tests compare
    them)."""
    m = (_EXACT64 if "RAX=" in head[:40] else _EXACT32).match(head)
    if m is None:
        return None
    v = m.groups()
    names = _NAMES64 if m.re is _EXACT64 else _NAMES32
    n = len(names)
    gpr = {name: int(x, 16) for name, x in zip(names, v[1:n + 1], strict=True)}
    cpl, hlt = v[n + 1], v[n + 2]
    i = n + 3
    seg = [SegmentCache(int(v[j], 16), int(v[j + 1], 16), int(v[j + 2], 16), int(v[j + 3], 16))
           for j in range(i, i + 32, 4)]
    t = [int(x, 16) for x in v[i + 32:]]  # GDT base, limit, IDT base, limit, CR0-4, EFER
    segments = dict(zip(("es", "cs", "ss", "ds", "fs", "gs"), seg[:6], strict=True))
    return CpuState(gpr=gpr, cr0=t[4], cr2=t[5], cr3=t[6], cr4=t[7], efer=t[8],
                    segments=segments, gdtr=TableRegister(t[0], t[1]),
                    idtr=TableRegister(t[2], t[3]), tr=seg[7], ldtr=seg[6],
                    fs_base=seg[4].base, gs_base=seg[5].base, cpl=int(cpl) & 3,
                    cpu_index=int(v[0]) if v[0] is not None else 0, halted=hlt != "0")


def parse_register_dump(text: str) -> CpuState:
    """Parse a QEMU register dump (``-d int``/``cpu_reset`` or HMP ``info registers``).

    Accepts the 64-bit and 32-bit layouts, real and protected mode, with or without the
    ``CPU#n``, ``CCS=``, DR and FPU/XMM lines. Raises :class:`InputError` when the text has no
    instruction pointer line (``RIP=``/``EIP=``) or no control-register line (``CR0=``): without
    them it is not a register dump. Other missing parts are left at their defaults (segments
    empty, GDTR/IDTR None, EFER 0).
    """
    # The FPU/XMM block (HMP ``info registers``, ``-d cpu_reset``) follows the EFER line and
    # holds nothing a CpuState keeps: cut it before the line-by-line parse (half the lines).
    cut = text.find("\nFCW=")
    head = text[:cut] if cut >= 0 else text
    exact = _parse_exact(head)
    if exact is not None:
        return exact
    d = parse_dump(head)
    if cut >= 0:
        d.seen.add("fpu")
    missing = [what for what, key in (("RIP=/EIP= line", "rip"), ("CR0= line", "cr"))
               if key not in d.seen]
    if missing:
        first = text.strip().splitlines()[0][:60] if text.strip() else "(empty)"
        raise InputError(f"not a QEMU register dump (no {' and no '.join(missing)}; "
                         f"starts with {first!r})")
    return d.to_state()


_HALT_RE = re.compile(r"(?:RFL|EFL)=([0-9a-f]+).*?HLT=(\d)")


def halted_for_good(info_registers: str) -> bool:
    """True when every CPU dump in ``info_registers`` (HMP ``info registers -a``, 64- or 32-bit)
    sits in HLT with RFLAGS.IF=0: nothing but an NMI wakes it, the way a panic or an exception
    handler's ``cli; hlt`` ends. False when no dump is found."""
    cpus = _HALT_RE.findall(info_registers)
    return bool(cpus) and all(h == "1" and not int(f, 16) & 0x200 for f, h in cpus)
