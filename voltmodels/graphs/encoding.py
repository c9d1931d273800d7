"""CGCNN's 92-dimensional one-hot element encoding, generated from pymatgen's element data.

Each element is described by nine properties; each property is one-hot encoded in its own block and the
blocks are concatenated in this order (offsets in brackets):

====  =========================  =====  ===========================================================
bits  property                   bins   categories / binning
====  =========================  =====  ===========================================================
19    group              [0:19]  19     0 = lanthanides and actinides (f block, La-Yb, Ac-No), 1..18
7     period            [19:26]  7      1..7
10    electronegativity [26:36]  10     Pauling, linear 0.5 .. 4.0
10    covalent radius   [36:46]  10     single-bond radius (Pyykkoe 2009), linear 0.25 .. 2.5 Angstrom
12    valence electrons [46:58]  12     1..12: group number for s and d block (He: 2), group - 10 for the
                                        p block, 2 (the outer s pair) for the f block
10    1st ionization    [58:68]  10     ln(E / eV), linear 1.3 .. 3.3
10    electron affinity [68:78]  10     eV, linear -3.0 .. 3.7
4     block             [78:82]  4      s, p, d, f (He counts as s, as its 1s2 shell says)
10    atomic volume     [82:92]  10     ln(V / cm^3 mol^-1), linear 1.5 .. 4.3
====  =========================  =====  ===========================================================

Continuous properties use 10 equal-width bins on [low, high], right-closed: bin k holds
low + k*w < x <= low + (k+1)*w (the reference puts Pauling 1.9 and 1.2 in the lower bin, which only
right-closed bins reproduce); values outside the range go to the first or last bin. The ranges were
worked out by fitting against txie-93/cgcnn's ``atom_init.json``: wherever pymatgen's value is the one
the reference used, the bin is the reference's (covalent radius and ionization energy agree for all
100 elements).

Sources and fallbacks
---------------------
* Everything but the covalent radius comes from ``pymatgen.core.Element``. pymatgen's only covalent
  radii (Cordero 2008, in ``molecule_structure_comparator``) match the reference bins for 42 of 100
  elements, so the single-bond radii of Pyykkoe & Atsumi, Chem. Eur. J. 15, 186 (2009) -- the set the
  reference was evidently built from -- are tabulated below.
* A property pymatgen has no value for (no Pauling electronegativity for He, Ne, Ar; no molar volume
  for At, Fr, Fm, ...) leaves that property's block all zero, as the reference does for its gaps.
* A zero or negative electron affinity (no bound anion: noble gases, Be, Mg, Mn, Zn, Cd, Hg, ...) is
  treated as missing, again as the reference does for most of these elements.
* Remaining disagreements with the reference are differences in the underlying data, not in the
  binning: e.g. pymatgen's molar volumes of elements that are gases at room temperature are solid
  volumes at low temperature (H, N, F, Cl, noble gases land one bin lower than the reference), and
  the reference's Pauling values for Tc, W, Pt, Hg, Pb, Bi, U, some electron affinities (N, Be, Ga,
  In, Tl, lanthanides) and Pd's 12 valence electrons come from other tables or conventions.
  ``tests/test_graphs.py`` prints the agreement per property: over the 72 elements of the snapshot,
  95.8 % of (element, property) pairs and the whole vector of 48 elements (93 % of all sites) match.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Callable, NamedTuple

import numpy as np
from pymatgen.core.periodic_table import Element

ATOM_FEATURE_LEN = 92
MAX_ATOMIC_NUMBER = 100
#: Atomic numbers the encoding (and hence the featurizer) supports.
SUPPORTED_ELEMENTS: tuple[int, ...] = tuple(range(1, MAX_ATOMIC_NUMBER + 1))

# Pyykkoe & Atsumi (2009) single-bond covalent radii in Angstrom, Z = 1..100.
COVALENT_RADII_PYYKKO = (
    0.32, 0.46, 1.33, 1.02, 0.85, 0.75, 0.71, 0.63, 0.64, 0.67,
    1.55, 1.39, 1.26, 1.16, 1.11, 1.03, 0.99, 0.96, 1.96, 1.71,
    1.48, 1.36, 1.34, 1.22, 1.19, 1.16, 1.11, 1.10, 1.12, 1.18,
    1.24, 1.21, 1.21, 1.16, 1.14, 1.17, 2.10, 1.85, 1.63, 1.54,
    1.47, 1.38, 1.28, 1.25, 1.25, 1.20, 1.28, 1.36, 1.42, 1.40,
    1.40, 1.36, 1.33, 1.31, 2.32, 1.96, 1.80, 1.63, 1.76, 1.74,
    1.73, 1.72, 1.68, 1.69, 1.68, 1.67, 1.66, 1.65, 1.64, 1.70,
    1.62, 1.52, 1.46, 1.37, 1.31, 1.29, 1.22, 1.23, 1.24, 1.33,
    1.44, 1.44, 1.51, 1.45, 1.47, 1.42, 2.23, 2.01, 1.86, 1.75,
    1.69, 1.70, 1.71, 1.72, 1.66, 1.66, 1.68, 1.68, 1.65, 1.67,
)  # fmt: skip

_BLOCKS = ("s", "p", "d", "f")


class ElementProperty(NamedTuple):
    """One block of the encoding: ``category(element)`` gives the hot bit (0-based) or None if unknown."""

    name: str
    n_bins: int
    category: Callable[[Element], int | None]


def _binned(low: float, high: float, n_bins: int = 10, log: bool = False) -> Callable[[float | None], int | None]:
    """Equal-width right-closed bins on [low, high] (see module docstring); None/NaN -> None."""
    edges = np.linspace(low, high, n_bins + 1)

    def to_bin(value: float | None) -> int | None:
        if value is None or not math.isfinite(value) or (log and value <= 0):
            return None
        x = math.log(value) if log else value
        return int(np.clip(np.searchsorted(edges, x, side="left") - 1, 0, n_bins - 1))

    return to_bin


def _block(element: Element) -> str:
    return "s" if element.Z == 2 else element.block


def _group(element: Element) -> int:
    return 0 if _block(element) == "f" else int(element.group)


def _valence_electrons(element: Element) -> int:
    block = _block(element)
    if element.Z == 2:
        return 2
    if block == "p":
        return int(element.group) - 10
    if block == "f":
        return 2
    return int(element.group)


def _first_ionization_energy(element: Element) -> float | None:
    energies = element.ionization_energies
    return energies[0] if energies and energies[0] is not None else None


def _positive_electron_affinity(element: Element) -> float | None:
    affinity = element.electron_affinity
    return affinity if affinity is not None and affinity > 0 else None


def _molar_volume(element: Element) -> float | None:
    volume = element.molar_volume  # FloatWithUnit in cm^3/mol, or None (with a warning) when unknown
    return float(volume) if volume is not None else None


_electronegativity_bin = _binned(0.5, 4.0)
_covalent_radius_bin = _binned(0.25, 2.5)
_ionization_bin = _binned(1.3, 3.3, log=True)
_affinity_bin = _binned(-3.0, 3.7)
_volume_bin = _binned(1.5, 4.3, log=True)

#: The nine blocks of the encoding, in order; their ``n_bins`` add up to ATOM_FEATURE_LEN.
ELEMENT_PROPERTIES: tuple[ElementProperty, ...] = (
    ElementProperty("group", 19, _group),
    ElementProperty("period", 7, lambda el: int(el.row) - 1),
    ElementProperty("electronegativity", 10, lambda el: _electronegativity_bin(el.X)),
    ElementProperty("covalent_radius", 10, lambda el: _covalent_radius_bin(COVALENT_RADII_PYYKKO[el.Z - 1])),
    ElementProperty("valence_electrons", 12, lambda el: _valence_electrons(el) - 1),
    ElementProperty("first_ionization_energy", 10, lambda el: _ionization_bin(_first_ionization_energy(el))),
    ElementProperty("electron_affinity", 10, lambda el: _affinity_bin(_positive_electron_affinity(el))),
    ElementProperty("block", 4, lambda el: _BLOCKS.index(_block(el))),
    ElementProperty("atomic_volume", 10, lambda el: _volume_bin(_molar_volume(el))),
)


def property_slices() -> dict[str, slice]:
    """Column range of each property's block in the 92-dim vector, e.g. {'group': slice(0, 19), ...}."""
    slices, start = {}, 0
    for prop in ELEMENT_PROPERTIES:
        slices[prop.name] = slice(start, start + prop.n_bins)
        start += prop.n_bins
    assert start == ATOM_FEATURE_LEN
    return slices


@functools.lru_cache(maxsize=1)
def element_feature_table() -> np.ndarray:
    """(101, 92) float32 one-hot features indexed by atomic number; row 0 is unused (all zero).

    The returned array is shared (cached); it is marked read-only so that callers cannot corrupt it.
    """
    table = np.zeros((MAX_ATOMIC_NUMBER + 1, ATOM_FEATURE_LEN), dtype=np.float32)
    slices = property_slices()
    with warnings.catch_warnings():
        # pymatgen warns for every property it lacks (noble-gas electronegativity, ...); these are the
        # documented zero-block fallbacks, not problems.
        warnings.simplefilter("ignore")
        for z in SUPPORTED_ELEMENTS:
            element = Element.from_Z(z)
            for prop in ELEMENT_PROPERTIES:
                category = prop.category(element)
                if category is not None:
                    table[z, slices[prop.name].start + category] = 1.0
    table.setflags(write=False)
    return table
