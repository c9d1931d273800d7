"""Electrode rows -> the potential's inputs of every family (zero-shot voltage, energies, embeddings).

Mode (a): both end members are given (every MP electrode: `id_charge`, `id_discharge`); static
energies of the two structures as they are. Mode (b): only the discharged structure, as a user
screening a new candidate holds it; the charged host is that structure without its working-ion atoms,
and both are relaxed with the potential before their energies are taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from voltmodels.config import VoltmodelsError
from voltmodels.graphs.convert import parse_structure
from voltmodels.potentials.cache import PotentialCache, RelaxRecord
from voltmodels.potentials.compute import RelaxSettings, charged_host, relax_many, static_energies
from voltmodels.potentials.families import FamilyModel, PotentialInputs, combine, mode_b_scale
from voltmodels.potentials.references import metal_energy_per_atom
from voltmodels.potentials.voltage import average_voltage, transfer_normalization


@dataclass(frozen=True)
class Electrode:
    ion: str
    discharged: Any  # any form parse_structure reads
    charged: Any | None = None  # None: mode (b)
    #: Set when a mode (a) row lacks its charged structure: the row is reported, not relaxed.
    missing_charged: bool = False


def electrode_inputs(
    electrodes: Sequence[Electrode],
    potential_name: str,
    relax_settings: RelaxSettings = RelaxSettings(),
    cache: PotentialCache | None = None,
    embedding_dims: Mapping[str, int] | None = None,
    n_workers: int | None = None,
) -> PotentialInputs:
    """PotentialInputs of electrodes, each in mode (a) when it has a charged structure, else (b).

    A row the potential cannot do (an unknown element, a failed relaxation, end members without a
    common framework) gets NaNs and its reason in `errors`; the families fall back for it.
    `potential_name` may join several potentials with "+" (e.g. "sevennet-0+chgnet"): see `combine`.
    `embedding_dims` ({potential: width}, from a fitted model) fixes the representation's width
    even when no row of this call gets one.
    """
    if "+" in potential_name:
        return combine([electrode_inputs(electrodes, name, relax_settings, cache, embedding_dims, n_workers) for name in potential_name.split("+")])
    cache = cache or PotentialCache()
    structures: dict[str, Any] = {}
    pairs: list[tuple[str, str] | str] = []
    to_relax: dict[str, Any] = {}
    for i, electrode in enumerate(electrodes):
        try:
            if electrode.missing_charged:
                raise VoltmodelsError("no charged structure")
            discharged = parse_structure(electrode.discharged)
            charged = parse_structure(electrode.charged) if electrode.charged is not None else charged_host(discharged, electrode.ion)
            (to_relax if electrode.charged is None else structures).update({f"{i}d": discharged, f"{i}c": charged})
            pairs.append((f"{i}d", f"{i}c"))
        except VoltmodelsError as exc:
            pairs.append(str(exc))
    # Mode (b) rows: both end members relaxed with the potential first (in worker processes).
    relaxed = relax_many(to_relax, potential_name, relax_settings, cache, n_workers)
    for name, record in relaxed.items():
        if record.structure is not None:
            structures[name] = parse_structure(record.structure)
        else:
            i = int(name[:-1])
            pairs[i] = f"relaxing {to_relax[name].composition.reduced_formula} with {potential_name} failed: {record.error}"
    relaxation = [relaxation_outcome(relaxed[f"{i}d"], relaxed[f"{i}c"], potential_name, relax_settings) if f"{i}d" in relaxed else "" for i in range(len(electrodes))] if relaxed else None
    energies = static_energies(structures, potential_name, cache, n_workers=n_workers)
    references: dict[str, float] = {}
    n = len(electrodes)
    v = np.full(n, np.nan)
    per_atom = np.full((n, 2), np.nan)
    dims = {len(r.embedding) for r in energies.values() if r.embedding is not None}
    d = (embedding_dims or {}).get(potential_name) or (dims.pop() if dims else 0)
    embeddings = np.full((n, 2 * d), np.nan)
    transfer = np.full((n, d), np.nan)
    errors: list[str | None] = [None] * n
    for i, (electrode, pair) in enumerate(zip(electrodes, pairs)):
        if isinstance(pair, str):
            errors[i] = pair
            continue
        rd, rc = energies[pair[0]], energies[pair[1]]
        if rd.energy is None or rc.energy is None:
            errors[i] = f"the potential failed: {rd.error or rc.error}"
            continue
        if electrode.ion not in references:
            references[electrode.ion] = metal_energy_per_atom(electrode.ion, potential_name, cache)
        sd, sc = structures[pair[0]], structures[pair[1]]
        try:
            v[i] = average_voltage(sc.composition, rc.energy, sd.composition, rd.energy, electrode.ion, references[electrode.ion])
        except VoltmodelsError as exc:
            errors[i] = str(exc)
            continue
        per_atom[i] = (rd.energy / rd.n_atoms, rc.energy / rc.n_atoms)
        if d and rd.embedding is not None and rc.embedding is not None and len(rd.embedding) == d:
            embeddings[i] = np.concatenate([rd.embedding, rc.embedding])
            units_c, units_d, charge = transfer_normalization(sc.composition, sd.composition, electrode.ion)
            transfer[i] = (rd.embedding * rd.n_atoms / units_d - rc.embedding * rc.n_atoms / units_c) / charge
    return PotentialInputs(v, per_atom, embeddings, errors, transfer, {potential_name: d}, relaxation)


def relaxation_outcome(discharged: RelaxRecord, charged: RelaxRecord, potential_name: str, settings: RelaxSettings) -> str:
    """How the relaxation of a mode (b) row's two end members ended, in a sentence a served row carries:
    a voltage from a structure still moving at the step cap is less certain than its interval says."""
    stopped = [what for what, record in (("discharged structure", discharged), ("charged host", charged)) if record.structure is not None and not record.converged]
    if stopped:
        return (f"not converged: {potential_name} stopped relaxing the {' and the '.join(stopped)} at the {settings.max_steps}-step cap "
                f"(fmax {settings.fmax} eV/Å); the voltage is less certain than its interval says")
    return f"converged: {potential_name}, {discharged.n_steps} + {charged.n_steps} FIRE steps"


class DatasetInputs:
    """PotentialInputs of a curated dataset's rows in mode (a) or (b), computed once, looked up by battery_id."""

    def __init__(self, dataset, potential_name: str, mode: str = "a", rows: pd.DataFrame | None = None, relax_settings: RelaxSettings = RelaxSettings(), cache: PotentialCache | None = None, n_workers: int | None = None):
        if mode not in ("a", "b"):
            raise VoltmodelsError(f"unknown input mode {mode!r}; use a (both end members) or b (discharged only)")
        rows = dataset.table if rows is None else rows
        compact: Mapping[str, dict] = dataset.compact_structures
        electrodes = [
            Electrode(ion, compact[d], compact.get(c) if mode == "a" else None, missing_charged=mode == "a" and c not in compact)
            for ion, d, c in zip(rows["working_ion"], rows["id_discharge"], rows["id_charge"])
        ]
        self.inputs = electrode_inputs(electrodes, potential_name, relax_settings, cache, n_workers=n_workers)
        self.potential_name = potential_name
        self.position = {bid: i for i, bid in enumerate(rows["battery_id"])}

    def __call__(self, rows: pd.DataFrame) -> PotentialInputs:
        return self.inputs.take(np.array([self.position[b] for b in rows["battery_id"]], dtype=int))


def holds_ion(rows: pd.DataFrame) -> np.ndarray:
    """Whether MP's charged end member still holds working ions (x1 > 0): mode (b), which takes every
    ion out, then computes another reaction than MP's voltage describes."""
    from pymatgen.core import Composition

    return np.array([Composition(f)[ion] > 0 for ion, f in zip(rows["working_ion"], rows["formula_charge"])], dtype=bool)


def calibrate_mode_b(
    models: Mapping[str, FamilyModel], dataset, inputs_a: DatasetInputs, features: pd.DataFrame, n_rows: int,
    relax_settings: RelaxSettings = RelaxSettings(), seed: int = 0, n_workers: int | None = None,
) -> int:
    """Set each model's `mode_b_scale` from up to `n_rows` validation rows of random repeat 0 (the
    split the registered models were fitted on, rows they never trained on) with x1 = 0, a seeded draw
    over all ions, relaxed in mode (b) (cached, like every relaxation). Returns the rows used."""
    if n_rows <= 0:
        return 0
    rows = pd.concat([dataset.split(ion, "random", 0) for ion in dataset.ions], ignore_index=True)
    rows = rows[(rows["split"] == "val") & ~holds_ion(rows)]
    rows = rows.sample(n=min(n_rows, len(rows)), random_state=seed).sort_values("battery_id")
    if rows.empty:
        return 0
    given = inputs_a(rows)
    relaxed = DatasetInputs(dataset, inputs_a.potential_name, "b", rows=rows, relax_settings=relax_settings, n_workers=n_workers)(rows)
    X = features.loc[rows["id_discharge"]].to_numpy(np.float64)
    ions, y = rows["working_ion"].to_numpy(), rows["average_voltage"].to_numpy(np.float64)
    for model in models.values():
        model.mode_b_scale = mode_b_scale(model, given, relaxed, X, ions, y)
    return int((np.isfinite(given.v_uip) & np.isfinite(relaxed.v_uip)).sum())
