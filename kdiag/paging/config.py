"""Which page tables to read and how: CR3, the paging mode, IA32_PAT, from a CpuState.

The mode comes from the live registers (SDM Vol. 3A Table 4-1) unless overridden: a user
debugging a half-built hierarchy can walk it with ``cr3=`` and ``mode=`` before the kernel
loads it into CR3. The PAT comes from ``target.read_msr(0x277)``; when that is unavailable the
power-on default is used and ``pat_source`` says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kdiag._record import replace
from kdiag.errors import KdiagError, UsageError
from kdiag.x86.pat import PAT_MSR, POWER_ON_PAT, MemoryType, decode_pat, is_valid_pat
from kdiag.x86.pte import PagingMode, PagingParams

if TYPE_CHECKING:
    from kdiag.target.base import Target
    from kdiag.x86.state import CpuState

log = logging.getLogger(__name__)

PAT_FROM_MSR = "msr"
PAT_DEFAULT = "power-on default"
PAT_GIVEN = "given"

MODE_CHOICES = ("32", "32-pse", "32-nopse", "pae", "4level", "5level")
_MODE_ALIASES = {
    "32": (PagingMode.BITS32, None), "32-bit": (PagingMode.BITS32, None),
    "32bit": (PagingMode.BITS32, None), "legacy": (PagingMode.BITS32, None),
    "32-pse": (PagingMode.BITS32, True), "pse": (PagingMode.BITS32, True),
    "32-nopse": (PagingMode.BITS32, False), "nopse": (PagingMode.BITS32, False),
    "pae": (PagingMode.PAE, None),
    "4": (PagingMode.LEVEL4, None), "4level": (PagingMode.LEVEL4, None),
    "4-level": (PagingMode.LEVEL4, None), "long": (PagingMode.LEVEL4, None),
    "5": (PagingMode.LEVEL5, None), "5level": (PagingMode.LEVEL5, None),
    "5-level": (PagingMode.LEVEL5, None), "la57": (PagingMode.LEVEL5, None),
}


def parse_mode(text: str) -> tuple[PagingMode, bool | None]:
    """Parse a ``--mode`` value: ``32``, ``32-pse``, ``32-nopse``, ``pae``, ``4level``, ``5level``.

    Returns the mode and the PSE override (None: take CR4.PSE).
    """
    try:
        return _MODE_ALIASES[text.strip().lower()]
    except KeyError:
        raise UsageError(f"unknown paging mode {text!r}; use one of: "
                         f"{', '.join(MODE_CHOICES)}") from None


@dataclass(frozen=True)
class PagingConfig:
    """A complete description of one address space to read.

    ``cr3`` is the raw CR3 value (flag bits included); ``top`` is the physical address of the
    table it selects. ``pat`` is the IA32_PAT value used for memory types, ``pat_source`` one of
    ``msr``, ``power-on default`` or ``given``, ``pat_note`` why the default was used.
    """

    params: PagingParams
    cr3: int
    pat: int = POWER_ON_PAT
    pat_source: str = PAT_DEFAULT
    pat_note: str | None = None
    overridden: bool = False

    @property
    def mode(self) -> PagingMode:
        return self.params.mode

    @property
    def top(self) -> int:
        """Physical address of the top-level table (SDM Vol. 3A 4.3, 4.4.1, 4.5 / Table 4-12)."""
        mode = self.params.mode
        if mode is PagingMode.BITS32:
            return self.cr3 & 0xFFFFF000
        if mode is PagingMode.PAE:
            return self.cr3 & 0xFFFFFFE0
        m = max(32, min(self.params.maxphyaddr, 52))
        return self.cr3 & ((1 << m) - 1) & ~0xFFF

    @property
    def pat_types(self) -> tuple[MemoryType, ...] | None:
        """The decoded PAT, or None when ``pat`` holds a reserved encoding."""
        return decode_pat(self.pat) if is_valid_pat(self.pat) else None


def config_from_state(state: CpuState, *, cr3: int | None = None, mode: str | None = None,
                      pat: int | None = None, maxphyaddr: int = 52,
                      gbpages: bool = True) -> PagingConfig:
    """Build a PagingConfig from registers, with optional ``cr3``/``mode``/``pat`` overrides.

    ``mode`` is a :func:`parse_mode` string. Without it the mode follows CR0.PG, CR4.PAE/PSE/
    LA57 and EFER.LMA; with paging off and no override the mode is ``none``.
    """
    params = PagingParams.from_registers(state.cr0, state.cr4, state.efer,
                                         maxphyaddr=maxphyaddr, gbpages=gbpages)
    overridden = False
    if mode is not None:
        pmode, pse = parse_mode(mode)
        params = replace(params, mode=pmode, pse=params.pse if pse is None else pse)
        overridden = True
    if cr3 is not None:
        overridden = True
    cfg = PagingConfig(params=params, cr3=state.cr3 if cr3 is None else cr3,
                       overridden=overridden)
    if pat is not None:
        cfg = replace(cfg, pat=pat, pat_source=PAT_GIVEN)
    return cfg


def with_target_pat(cfg: PagingConfig, target: Target) -> PagingConfig:
    """Fill in IA32_PAT from ``target.read_msr(0x277)``; keep the power-on default, noting why,
    when the backend cannot read it. A ``given`` PAT is kept."""
    if cfg.pat_source == PAT_GIVEN:
        return cfg
    try:
        value = target.read_msr(PAT_MSR)
    except KdiagError as err:
        log.debug("IA32_PAT unavailable: %s", err)
        return replace(cfg, pat=POWER_ON_PAT, pat_source=PAT_DEFAULT,
                       pat_note=f"IA32_PAT unreadable ({err}); assuming the power-on default")
    except NotImplementedError:
        return replace(cfg, pat=POWER_ON_PAT, pat_source=PAT_DEFAULT,
                       pat_note="this backend cannot read MSRs; assuming the power-on default")
    if not is_valid_pat(value):
        return replace(cfg, pat=POWER_ON_PAT, pat_source=PAT_DEFAULT,
                       pat_note=f"IA32_PAT reads {value:#018x}, not a valid PAT; "
                                "assuming the power-on default")
    return replace(cfg, pat=value, pat_source=PAT_FROM_MSR, pat_note=None)


def resolve_config(target: Target, *, state: CpuState | None = None, cr3: int | None = None,
                   mode: str | None = None, pat: int | None = None, read_pat: bool = True,
                   maxphyaddr: int | None = None) -> PagingConfig:
    """The PagingConfig for ``target``'s current stop (registers, then the PAT MSR)."""
    state = state if state is not None else target.state()
    if maxphyaddr is None:
        maxphyaddr = int(getattr(target, "maxphyaddr", 52) or 52)
    cfg = config_from_state(state, cr3=cr3, mode=mode, pat=pat, maxphyaddr=maxphyaddr)
    return with_target_pat(cfg, target) if read_pat else cfg
