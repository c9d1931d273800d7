"""Periodic-table data the interpretation needs: group, (row, column) position, symbol, covalent radius."""

from __future__ import annotations

from functools import lru_cache

from voltmodels.config import VoltmodelsError
from voltmodels.graphs.encoding import COVALENT_RADII_PYYKKO, MAX_ATOMIC_NUMBER


_PERIOD_ENDS = (2, 10, 18, 36, 54, 86, 118)


def _period_and_offset(z: int) -> tuple[int, int]:
    if not 1 <= z <= MAX_ATOMIC_NUMBER:
        raise VoltmodelsError(f"atomic number {z} is outside 1..{MAX_ATOMIC_NUMBER}")
    start = 1
    for period, end in enumerate(_PERIOD_ENDS, start=1):
        if z <= end:
            return period, z - start
        start = end + 1
    raise AssertionError(z)


def periodic_group(z: int) -> int:
    """Group 1..18; 0 for the f block (La-Yb, Ac-No), as in the input encoding (Lu, Lr: group 3)."""
    period, offset = _period_and_offset(z)
    if period == 1:
        return 1 if z == 1 else 18
    if period in (2, 3):
        return offset + 1 if offset < 2 else offset + 11
    if period in (4, 5):
        return offset + 1
    # periods 6 and 7: s pair, 14 f elements (La..Yb / Ac..No), then Lu/Lr in group 3 onwards
    if offset < 2:
        return offset + 1
    if offset < 16:
        return 0
    return offset - 13


def periodic_position(z: int) -> tuple[int, int]:
    """(row, column), 0-based, in an 18-column table; the f block sits below in rows 8 (La-Yb) and
    9 (Ac-No), columns 2-15, leaving row 7 empty as a gap."""
    period, offset = _period_and_offset(z)
    group = periodic_group(z)
    if group == 0:
        return period + 2, offset  # La (offset 2) -> column 2
    return period - 1, group - 1


@lru_cache(maxsize=None)
def element_symbol(z: int) -> str:
    from pymatgen.core.periodic_table import Element

    return Element.from_Z(int(z)).symbol


def covalent_radius(z: int) -> float:
    """Single-bond covalent radius in Angstrom (Pyykkoe & Atsumi 2009), the radius the encoding bins."""
    _period_and_offset(z)
    return float(COVALENT_RADII_PYYKKO[z - 1])


def group_label(group: int) -> str:
    return "f block" if group == 0 else f"group {group}"
