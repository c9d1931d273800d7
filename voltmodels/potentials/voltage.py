"""Average voltage from energies, with pymatgen's insertion-electrode tools.

`InsertionVoltagePair` normalizes both end members to their common host framework, counts the
working ions transferred and divides by the ion's valence (its highest oxidation state: Mg 2, Al 3,
Y 3), against the working-ion metal's energy per atom:
    V = -[E(discharged) - E(charged) - dx * mu(ion)] / (dx * z)   (per formula unit of host)
The two-entry pair is used rather than `InsertionElectrode`, which keeps only entries on the convex
hull and so would drop an end member whose predicted voltage is negative.
"""

from __future__ import annotations

from pymatgen.apps.battery.insertion_battery import InsertionVoltagePair
from pymatgen.core import Composition
from pymatgen.entries.computed_entries import ComputedEntry

from voltmodels.config import VoltmodelsError


def ion_valence(ion: str) -> int:
    """The charge a working ion carries (its highest oxidation state, pymatgen's convention): Li 1, Mg 2, Al 3."""
    from pymatgen.core import Element

    return int(abs(max(Element(ion).oxidation_states)))


def average_voltage(charged: Composition | str, energy_charged: float, discharged: Composition | str, energy_discharged: float, ion: str, metal_energy_per_atom: float) -> float:
    """Average voltage (V) of charged -> discharged; energies are total energies of the given cells (eV)."""
    charged_entry = ComputedEntry(Composition(charged), energy_charged)
    discharged_entry = ComputedEntry(Composition(discharged), energy_discharged)
    ion_entry = ComputedEntry(Composition(ion), metal_energy_per_atom)
    try:
        pair = InsertionVoltagePair.from_entries(charged_entry, discharged_entry, ion_entry)
    except ValueError as exc:  # pymatgen's sentences: "...must have the same compositional framework"
        raise VoltmodelsError(f"{Composition(charged).reduced_formula} -> {Composition(discharged).reduced_formula}: {str(exc).removeprefix('VoltagePair: ')}") from None
    return float(pair.voltage)


def transfer_normalization(charged: Composition | str, discharged: Composition | str, ion: str) -> tuple[float, float, float]:
    """(host formula units in the charged cell, in the discharged cell, charge moved per host formula
    unit dx * z), with pymatgen's conventions: per reduced framework formula, z = the ion's highest
    oxidation state. Divides a per-cell quantity the way the voltage divides the energy difference."""
    def framework_units(composition: Composition) -> tuple[float, float]:
        composition = Composition(composition)
        framework = Composition({el: n for el, n in composition.items() if el.symbol != ion})
        units = framework.get_reduced_composition_and_factor()[1]
        return units, composition[ion] / units

    n_charge, x_charge = framework_units(charged)
    n_discharge, x_discharge = framework_units(discharged)
    return n_charge, n_discharge, (x_discharge - x_charge) * ion_valence(ion)
