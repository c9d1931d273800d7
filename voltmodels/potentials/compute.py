"""Energies of many structures through the cache: only what the cache lacks is computed.

Static energies: one call per structure (SevenNet's ASE calculator), or batches where the package
predicts many structures at once (CHGNet). Relaxations (mode (b): the user holds only the
discharged structure) use ASE's FIRE on the positions and the cell (FrechetCellFilter).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
from pymatgen.core import IStructure, Structure

from voltmodels.config import VoltmodelsError, exit_with_parent
from voltmodels.graphs.convert import parse_structure, structure_digest, structure_to_compact
from voltmodels.potentials.cache import EnergyRecord, PotentialCache, RelaxRecord
from voltmodels.potentials.calculators import Potential, load_potential, potential_key

#: Structures written to the cache per transaction: an interrupted run keeps its work.
_CHECKPOINT_EVERY = 25
#: Fewer missing energies than this per worker are computed in this process (a worker costs a model load).
_MIN_ITEMS_PER_WORKER = 40
_CHGNET_BATCH = 16


def worker_count(n_workers: int | None) -> int:
    """Processes for missing energies or relaxations: as asked, else $VOLTMODELS_POTENTIAL_WORKERS, else 1."""
    return max(1, n_workers or int(os.environ.get("VOLTMODELS_POTENTIAL_WORKERS", "1") or 1))


def static_energies(
    structures: Mapping[str, Any],
    potential_name: str,
    cache: PotentialCache | None = None,
    progress: Callable[[int, int], None] | None = None,
    n_workers: int | None = None,
) -> dict[str, EnergyRecord]:
    """{id: EnergyRecord} for {id: structure (any form parse_structure reads)}; cached ones are read.

    Missing energies are computed in `n_workers` processes (default $VOLTMODELS_POTENTIAL_WORKERS, else
    1), each with one torch thread, writing to the cache as they go: an interrupted run keeps its work.
    """
    cache = cache or PotentialCache()
    key = potential_key(potential_name)
    parsed = {mid: parse_structure(s) for mid, s in structures.items()}
    digest_of = {mid: structure_digest(s) for mid, s in parsed.items()}
    found = cache.energies(key, digest_of.values())
    missing = {digest: parsed[mid] for mid, digest in digest_of.items() if digest not in found}
    n_workers = worker_count(n_workers)
    items = list(missing.items())
    if len(items) >= _MIN_ITEMS_PER_WORKER * 2 and n_workers > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from multiprocessing import get_context

        n_workers = min(n_workers, len(items) // _MIN_ITEMS_PER_WORKER)
        with ProcessPoolExecutor(n_workers, mp_context=get_context("spawn"), initializer=exit_with_parent) as pool:
            futures = [pool.submit(_compute_and_store, potential_name, items[w::n_workers], str(cache.path), w == 0) for w in range(n_workers)]
            for future in as_completed(futures):
                future.result()
    elif items:
        _compute_and_store(potential_name, items, cache, progress=progress)
    if items:
        found.update(cache.energies(key, missing))
    return {mid: found[digest] for mid, digest in digest_of.items()}


def _compute_and_store(potential_name: str, items: list[tuple[str, IStructure]], cache: PotentialCache | str, report: bool = False, progress=None) -> None:
    """Compute and cache energies of (digest, structure) items; also the body of a worker process."""
    if not isinstance(cache, PotentialCache):  # in a worker: one torch thread, its own connection
        from voltmodels.config import set_torch_threads

        set_torch_threads(1)
        cache = PotentialCache(cache)
    potential = load_potential(potential_name)
    key = potential_key(potential_name)
    started = time.perf_counter()
    pending: dict[str, EnergyRecord] = {}
    batch = _CHGNET_BATCH if potential.name == "chgnet" else 1
    for start in range(0, len(items), batch):
        pending.update(_compute_chunk(potential, items[start : start + batch]))
        done = min(start + batch, len(items))
        if len(pending) >= _CHECKPOINT_EVERY:
            cache.put_energies(key, pending)
            pending = {}
        if progress is not None:
            progress(done, len(items))
        elif report and done % 200 < batch:
            print(f"[energies] {potential_name}: {done}/{len(items)} in this worker, {(time.perf_counter() - started) / done:.2f} s per structure", flush=True)
    cache.put_energies(key, pending)


def _compute_chunk(potential: Potential, chunk: list[tuple[str, IStructure]]) -> dict[str, EnergyRecord]:
    if potential.name == "chgnet":
        return _chgnet_chunk(potential, chunk)
    records = {}
    for digest, structure in chunk:
        started = time.perf_counter()
        try:
            energy, embedding = energy_of(potential, structure)
            records[digest] = EnergyRecord(energy, len(structure), embedding, None, time.perf_counter() - started)
        except Exception as exc:  # an element the potential does not know, a failed neighbour list...
            records[digest] = _failed(structure, exc, started)
    return records


def _chgnet_chunk(potential: Potential, chunk: list[tuple[str, IStructure]]) -> dict[str, EnergyRecord]:
    """CHGNet predicts a batch in one call, energy and atom features together. Its atom features
    before the energy readout are the representation, as for SevenNet (its crystal feature is
    pooled and transformed, so it does not add up over atoms)."""
    started = time.perf_counter()
    try:
        predictions = potential.calculator.model.predict_structure([s for _, s in chunk], task="e", return_atom_feas=True, batch_size=len(chunk))
    except Exception as exc:
        if len(chunk) == 1:
            return {chunk[0][0]: _failed(chunk[0][1], exc, started)}
        return {k: v for item in chunk for k, v in _chgnet_chunk(potential, [item]).items()}  # find the bad one
    if isinstance(predictions, dict):  # CHGNet returns a bare dict for a batch of one
        predictions = [predictions]
    seconds = (time.perf_counter() - started) / len(chunk)
    return {
        digest: EnergyRecord(float(p["e"]) * len(s), len(s), np.asarray(p["atom_fea"], np.float32).mean(axis=0), None, seconds)
        for (digest, s), p in zip(chunk, predictions)
    }


def _failed(structure: IStructure, exc: Exception, started: float) -> EnergyRecord:
    return EnergyRecord(None, len(structure), None, f"{type(exc).__name__}: {exc}"[:500], time.perf_counter() - started)


def energy_of(potential: Potential, structure: IStructure) -> tuple[float, np.ndarray | None]:
    """Total energy (eV) and the mean atomic embedding (if the potential exposes one) of one structure."""
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(Structure.from_sites(structure))
    atoms.calc = potential.calculator
    energy = float(atoms.get_potential_energy())
    features = potential.embedding_reader() if potential.embedding_reader is not None else None
    return energy, None if features is None else np.asarray(features, np.float32).mean(axis=0)


@dataclass(frozen=True)
class RelaxSettings:
    fmax: float = 0.1  # eV/Å
    max_steps: int = 200
    relax_cell: bool = True

    def key(self) -> str:
        return json.dumps({"fmax": self.fmax, "max_steps": self.max_steps, "cell": self.relax_cell, "optimizer": "FIRE"}, sort_keys=True)


def relax(structure: Any, potential_name: str, settings: RelaxSettings = RelaxSettings(), cache: PotentialCache | None = None) -> RelaxRecord:
    """The structure relaxed with the potential (positions and cell); read from the cache when done before."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from pymatgen.io.ase import AseAtomsAdaptor

    cache = cache or PotentialCache()
    structure = parse_structure(structure)
    key, digest = potential_key(potential_name), structure_digest(structure)
    done = cache.relaxed(key, digest, settings.key())
    if done is not None:
        return done
    potential = load_potential(potential_name)
    started = time.perf_counter()
    atoms = AseAtomsAdaptor.get_atoms(Structure.from_sites(structure))
    try:
        atoms.calc = potential.calculator  # raises for an element the potential does not know
        target = FrechetCellFilter(atoms) if settings.relax_cell else atoms
        optimizer = FIRE(target, logfile=None)
        converged = bool(optimizer.run(fmax=settings.fmax, steps=settings.max_steps))
        relaxed = AseAtomsAdaptor.get_structure(atoms)
        record = RelaxRecord(structure_to_compact(relaxed), float(atoms.get_potential_energy()), int(optimizer.nsteps), converged, None, time.perf_counter() - started)
    except Exception as exc:
        record = RelaxRecord(None, None, 0, False, f"{type(exc).__name__}: {exc}"[:500], time.perf_counter() - started)
    cache.put_relaxed(key, digest, settings.key(), record)
    return record


def relax_many(structures: Mapping[str, Any], potential_name: str, settings: RelaxSettings = RelaxSettings(), cache: PotentialCache | None = None, n_workers: int | None = None) -> dict[str, RelaxRecord]:
    """relax() of {id: structure}; relaxations not yet cached run in `n_workers` processes."""
    cache = cache or PotentialCache()
    key = potential_key(potential_name)
    parsed = {k: parse_structure(v) for k, v in structures.items()}
    todo = [(k, s) for k, s in parsed.items() if cache.relaxed(key, structure_digest(s), settings.key()) is None]
    n_workers = worker_count(n_workers)
    if n_workers > 1 and len(todo) >= 4:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        n_workers = min(n_workers, len(todo) // 2)
        # One task per structure: relaxations take 1 to 100 s, so fixed shares would leave workers idle;
        # a worker process loads the potential once and keeps it for its later tasks.
        with ProcessPoolExecutor(n_workers, mp_context=get_context("spawn"), initializer=exit_with_parent) as pool:
            list(pool.map(_relax_worker, [(potential_name, [s], settings, str(cache.path)) for _, s in todo]))
    return {k: relax(s, potential_name, settings, cache) for k, s in parsed.items()}


def _relax_worker(task) -> None:
    from voltmodels.config import set_torch_threads

    potential_name, structures, settings, cache_path = task
    set_torch_threads(1)
    cache = PotentialCache(cache_path)
    for structure in structures:
        relax(structure, potential_name, settings, cache)


def charged_host(discharged: Any, ion: str) -> IStructure:
    """Mode (b): the charged host a user without MP's charged state starts from, the discharged
    structure with every working-ion atom removed (MP's charged state keeps some ions in x1 > 0 cases)."""
    structure = Structure.from_sites(parse_structure(discharged))
    if ion not in {site.specie.symbol for site in structure}:
        raise VoltmodelsError(f"the discharged structure holds no {ion} atoms, so it is not a {ion} electrode")
    structure.remove_species([ion])
    if len(structure) == 0:
        raise VoltmodelsError(f"removing every {ion} atom leaves an empty host")
    return structure
