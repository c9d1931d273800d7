"""The working-ion metal, the voltage's reference: built in its ground-state lattice, relaxed once
per potential (positions and cell) and cached like every other relaxation."""

from __future__ import annotations

from voltmodels.config import SUPPORTED_IONS, VoltmodelsError
from voltmodels.potentials.cache import PotentialCache
from voltmodels.potentials.compute import RelaxSettings, relax

#: Ground-state lattice of each working-ion metal (bcc alkali metals; hcp Mg, Zn, Y; fcc Ca, Al).
METAL_LATTICE = {"Li": "bcc", "Na": "bcc", "K": "bcc", "Rb": "bcc", "Cs": "bcc", "Mg": "hcp", "Zn": "hcp", "Y": "hcp", "Ca": "fcc", "Al": "fcc"}
#: Tight: the reference enters every voltage of the ion.
REFERENCE_RELAX = RelaxSettings(fmax=0.005, max_steps=500, relax_cell=True)

assert set(METAL_LATTICE) == set(SUPPORTED_IONS)


def metal_structure(ion: str):
    """The metal in its ground-state lattice with ASE's experimental lattice constants (a start point)."""
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    if ion not in METAL_LATTICE:
        raise VoltmodelsError(f"no reference metal for working ion {ion!r}; supported: {', '.join(METAL_LATTICE)}")
    return AseAtomsAdaptor.get_structure(bulk(ion, METAL_LATTICE[ion]))


def metal_energy_per_atom(ion: str, potential_name: str, cache: PotentialCache | None = None) -> float:
    """eV/atom of the relaxed working-ion metal under the potential."""
    structure = metal_structure(ion)
    record = relax(structure, potential_name, REFERENCE_RELAX, cache)
    if record.energy is None:
        raise VoltmodelsError(f"relaxing the {ion} metal with {potential_name} failed: {record.error}")
    return record.energy / len(structure)
