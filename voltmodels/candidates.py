"""Hypothetical electrodes by working-ion substitution: the screening set the paper built for Mg, Ca, Zn, Al.

A candidate takes a curated electrode of a source ion (e.g. LiCoO2 / CoO2) and puts a target ion on
the source ion's sites, in both end members (the charged one only where MP's charged state still
holds source ions, x1 > 0; otherwise the host is kept as it is).

Charge balance rule: the host's oxidation states are kept, so the ionic charge on the ion sites is
kept: n_target = n_source * z_source / z_target ions per cell (z = the ion's highest oxidation state,
as in the voltage: Li 1, Mg 2, Al 3). Where that is not a whole number the cell is repeated along its
shortest lattice vector until it is. The kept sites are chosen by greedy farthest-point sampling on
minimum-image distances, starting from one ion site: multivalent ions repel more, so they sit as far
apart as the sites allow. `orderings` > 1 starts the sampling from further ion sites and keeps each
arrangement whose set of ion-ion distances is new. A target that needs more ions than there are
sites (e.g. Mg -> Li) is skipped, as is a candidate whose discharged composition is already an
electrode of the target ion in the dataset.

Host variants (`host_metals`, off by default): the paper's design rule (local voltages, Fig. 3) is to
replace host elements by ones of higher local voltage. With a list of redox metals (e.g. the 3d
series), every host metal of the list is also swapped, all its sites at once, for each other metal of
the list, in both end members; the working-ion rule above then applies to each variant.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from math import gcd

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Structure

from voltmodels.config import SUPPORTED_IONS, VoltmodelsError
from voltmodels.graphs.convert import structure_to_compact
from voltmodels.potentials.voltage import ion_valence

RULE = "charge-conserving substitution n_t = n_s z_s / z_t; farthest-point ion sites; supercell along the shortest axis"
#: Candidate cells above this many sites are skipped (the served models' limit is 500).
DEFAULT_MAX_SITES = 200
COLUMNS = [
    "candidate_id", "working_ion", "structure", "structure_charged", "formula_discharge", "formula_charge", "n_sites",
    "source_battery_id", "source_ion", "source_id_discharge", "source_id_charge", "source_average_voltage", "host_swap", "ordering", "supercell", "rule",
]
#: The 3d redox metals of most intercalation cathodes: a sensible `host_metals` list.
REDOX_3D = ("Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu")


@dataclass(frozen=True)
class Substituted:
    structure: Structure
    ordering: int
    supercell: int


def _farthest_point(distances: np.ndarray, n_keep: int, start: int) -> tuple[int, ...]:
    """Greedy farthest-point sampling: each next site maximizes its distance to the nearest kept one
    (ties: lowest index)."""
    kept = [start]
    nearest = distances[start].copy()
    while len(kept) < n_keep:
        nearest[kept] = -1.0
        nxt = int(np.argmax(nearest))
        kept.append(nxt)
        nearest = np.minimum(nearest, distances[nxt])
    return tuple(sorted(kept))


def substitute(structure: Structure, source: str, target: str, orderings: int = 1, max_sites: int = DEFAULT_MAX_SITES) -> list[Substituted]:
    """The distinct charge-balanced arrangements of `target` on the `source` sites of `structure`.

    A structure without source ions comes back unchanged (one arrangement). Raises VoltmodelsError with
    the reason when the substitution is impossible under the rule.
    """
    structure = Structure.from_sites(structure)
    sites = [i for i, site in enumerate(structure) if site.specie.symbol == source]
    if not sites:
        return [Substituted(structure, 0, 1)]
    charge = len(sites) * ion_valence(source)
    repeat = ion_valence(target) // gcd(charge, ion_valence(target))
    n_keep = repeat * charge // ion_valence(target)
    if n_keep > repeat * len(sites):
        raise VoltmodelsError(f"{target} needs {n_keep} ions on {repeat * len(sites)} {source} sites to keep the charge")
    n_sites = repeat * len(structure) - (repeat * len(sites) - n_keep)
    if n_sites > max_sites:
        raise VoltmodelsError(f"the candidate cell would have {n_sites} sites, above the limit of {max_sites}")
    if repeat > 1:
        scaling = [1, 1, 1]
        scaling[int(np.argmin(structure.lattice.abc))] = repeat
        structure.make_supercell(scaling)
        sites = [i for i, site in enumerate(structure) if site.specie.symbol == source]
    distances = structure.lattice.get_all_distances(structure.frac_coords[sites], structure.frac_coords[sites])
    seen, out = set(), []
    for start in range(len(sites)):
        if len(out) >= orderings:
            break
        kept = _farthest_point(distances, n_keep, start)
        fingerprint = tuple(np.round(np.sort(distances[np.ix_(kept, kept)][np.triu_indices(len(kept), 1)]), 2))
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        candidate = structure.copy()
        candidate.remove_sites([sites[i] for i in range(len(sites)) if i not in kept])
        candidate.replace_species({source: target})
        out.append(Substituted(candidate, len(out), repeat))
    return out


def _digest(*structures: Structure) -> str:
    payload = json.dumps([structure_to_compact(s) for s in structures], sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:12]


def host_variants(discharged: Structure, charged: Structure, host_metals) -> list[tuple[str, Structure, Structure]]:
    """(swap label, discharged, charged): the electrode itself ("") and, per host metal of the list
    present in it, one variant for each other metal of the list that it does not already hold."""
    out = [("", discharged, charged)]
    present = sorted({site.specie.symbol for site in discharged} & set(host_metals))
    for old in present:
        for new in host_metals:
            if new == old or new in present:
                continue
            swapped = [Structure.from_sites(s) for s in (discharged, charged)]
            for s in swapped:
                if old in s.composition:
                    s.replace_species({old: new})
            out.append((f"{old}>{new}", *swapped))
    return out


def generate(dataset, source_ions, target_ions, orderings: int = 1, max_sites: int = DEFAULT_MAX_SITES, host_metals=()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(candidates, skipped): a structure table with provenance columns, and every source electrode x
    target ion that gave no candidate, with why. Deterministic: the same dataset and params give the
    same rows in the same order."""
    for ion in [*source_ions, *target_ions]:
        if ion not in SUPPORTED_IONS:
            raise VoltmodelsError(f"unknown working ion {ion!r}; use one of {', '.join(SUPPORTED_IONS)}")
    table = dataset.table
    known = {
        ion: {Composition(f).reduced_formula for f in table.loc[table["working_ion"] == ion, "formula_discharge"]}
        for ion in target_ions
    }
    structures = dataset.structures
    rows, skipped, seen = [], [], set()
    for source in source_ions:
        electrodes = table[table["working_ion"] == source].sort_values("battery_id")
        for target in target_ions:
            if target == source:
                continue
            for e in electrodes.itertuples(index=False):
                def skip(reason, swap=""):
                    skipped.append({"source_battery_id": e.battery_id, "working_ion": target, "host_swap": swap, "reason": reason})

                if e.id_discharge not in structures or e.id_charge not in structures:
                    skip("the dataset lacks a structure of this electrode")
                    continue
                for swap, host_discharged, host_charged in host_variants(structures[e.id_discharge], structures[e.id_charge], host_metals):
                    try:
                        discharged = substitute(host_discharged, source, target, orderings, max_sites)
                        charged = substitute(host_charged, source, target, 1, max_sites)[0]
                    except VoltmodelsError as exc:
                        skip(str(exc), swap)
                        continue
                    formula = discharged[0].structure.composition.reduced_formula
                    if formula in known[target]:
                        skip(f"{formula} is already a {target} electrode in the dataset", swap)
                        continue
                    for d in discharged:
                        digest = _digest(d.structure, charged.structure)
                        if digest in seen:
                            continue
                        seen.add(digest)
                        rows.append(_row(e, source, target, swap, d, charged, formula))
    return pd.DataFrame(rows, columns=COLUMNS), pd.DataFrame(skipped, columns=["source_battery_id", "working_ion", "host_swap", "reason"])


def _row(e, source: str, target: str, swap: str, d: Substituted, charged: Substituted, formula: str) -> dict:
    return {
        "candidate_id": f"{e.battery_id}->{target}{'-' + swap if swap else ''}-{d.ordering}",
        "working_ion": target,
        "structure": json.dumps(structure_to_compact(d.structure)),
        "structure_charged": json.dumps(structure_to_compact(charged.structure)),
        "formula_discharge": formula,
        "formula_charge": charged.structure.composition.reduced_formula,
        "n_sites": len(d.structure),
        "source_battery_id": e.battery_id,
        "source_ion": source,
        "source_id_discharge": e.id_discharge,
        "source_id_charge": e.id_charge,
        "source_average_voltage": float(e.average_voltage),
        "host_swap": swap,
        "ordering": d.ordering,
        "supercell": d.supercell,
        "rule": RULE,
    }
