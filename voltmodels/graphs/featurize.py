"""Crystal structure -> CGCNN crystal graph, with a parallel, process-safe disk cache.

A crystal graph keeps, for every atom i, its ``max_neighbors`` nearest neighbours j within ``radius``
(periodic images count, so an atom can neighbour its own image or the same atom j several times),
sorted by distance. Edges are a flat list ``(edge_src=i, edge_dst=j, edge_dist)`` sorted by
``(i, distance)``. An atom with fewer neighbours than ``max_neighbors`` simply has fewer edges: there is
no padding, because the model aggregates messages with a sum/scatter over edges, where a missing
neighbour contributes nothing (CGCNN pads with a fake neighbour at ``radius + 1`` Angstrom instead).
An atom with no neighbour at all is an error (its graph would be disconnected).

Compared with txie-93/cgcnn's ``data.py`` (``get_all_neighbors`` + a Python sort per atom, per epoch),
the neighbour search uses pymatgen's array-based ``get_neighbor_list``, the top-k selection is one
vectorised sort (no Python loop over atoms), and graphs are computed once, in parallel, and cached on
disk.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import sys
import uuid
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pymatgen.core import IStructure, Lattice, Structure
from pymatgen.core.periodic_table import Element

from voltmodels.data.structures import parse_structure
from voltmodels.config import VoltmodelsError, cache_dir
from voltmodels.graphs.encoding import MAX_ATOMIC_NUMBER

#: Bump when the on-disk graph format or the neighbour selection changes: old caches are then ignored.
GRAPH_FORMAT_VERSION = 1

# Graphs per shard file; also how often a long featurisation run checkpoints to disk.
_SHARD_SIZE = 2048
# More small shards than this (left by many small get_many calls) are merged into one.
_MAX_SMALL_SHARDS = 16
# Below this many structures to featurise, a process pool costs more than it saves.
_MIN_ITEMS_FOR_POOL = 64
_DIGEST_DECIMALS = 6


class GraphError(VoltmodelsError):
    """A structure that cannot be turned into a crystal graph; the message says why, in one sentence."""


@dataclass(frozen=True)
class GraphSettings:
    """How graphs are built: neighbour cutoff (Angstrom), neighbours kept per atom, Gaussian edge basis.

    The Gaussian basis has centres 0, step, 2*step, ... up to ``radius`` (41 for 0..8 Angstrom, step 0.2)
    and width ``step``, as in CGCNN. It only matters when batches are collated, so graphs cached on
    disk are shared by settings that differ only in ``gaussian_step``.
    """

    radius: float = 8.0
    max_neighbors: int = 12
    gaussian_step: float = 0.2

    def __post_init__(self) -> None:
        # Normalise types so that GraphSettings(radius=8) and GraphSettings(radius=8.0) share a key.
        object.__setattr__(self, "radius", float(self.radius))
        object.__setattr__(self, "max_neighbors", int(self.max_neighbors))
        object.__setattr__(self, "gaussian_step", float(self.gaussian_step))
        if not (self.radius > 0 and self.max_neighbors >= 1 and 0 < self.gaussian_step <= self.radius):
            raise VoltmodelsError(
                f"invalid graph settings {self.to_dict()}: need radius > 0, max_neighbors >= 1 "
                "and 0 < gaussian_step <= radius"
            )

    @property
    def n_edge_features(self) -> int:
        """Number of Gaussian centres, i.e. the edge feature length (41 for the defaults)."""
        # round() guards against 8.0 / 0.2 = 40.000000000000004; a radius that is not a multiple of the
        # step gets one centre beyond it, like CGCNN's np.arange(0, radius + step, step).
        return int(np.ceil(round(self.radius / self.gaussian_step, 9))) + 1

    def gaussian_centers(self) -> np.ndarray:
        return np.arange(self.n_edge_features, dtype=np.float64) * self.gaussian_step

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GraphSettings:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise VoltmodelsError(f"unknown graph settings {sorted(unknown)}")
        return cls(**data)

    def key(self) -> str:
        """Short stable hash of all settings, e.g. for naming model artifacts."""
        return _short_hash(json.dumps(self.to_dict(), sort_keys=True))


@dataclass(eq=False)
class CrystalGraph:
    """One crystal: atomic numbers and a flat edge list sorted by (edge_src, edge_dist)."""

    atomic_numbers: np.ndarray  # (n_atoms,) int16
    edge_src: np.ndarray  # (E,) int32, the centre atom i
    edge_dst: np.ndarray  # (E,) int32, the neighbour j
    edge_dist: np.ndarray  # (E,) float32, Angstrom

    @property
    def n_atoms(self) -> int:
        return len(self.atomic_numbers)

    @property
    def n_edges(self) -> int:
        return len(self.edge_src)


@dataclass
class FeaturizeResult:
    """Outcome of :meth:`GraphCache.get_many`: graphs and per-item errors, both keyed like the input.

    Keys are the mapping's keys, or list positions for a sequence input; every input key is in exactly
    one of the two dicts, in input order.
    """

    graphs: dict[Hashable, CrystalGraph] = field(default_factory=dict)
    errors: dict[Hashable, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Structures in, graphs out


def structure_digest(structure: IStructure) -> str:
    """Content hash of a structure (lattice, species, fractional coordinates rounded to 1e-6).

    Used with the graph settings as the cache key; a Structure and its compact dict hash the same.
    """
    if structure.is_ordered:
        numbers = np.array([_atomic_number(site.specie) for site in structure], dtype=np.int64)
        return _digest(_Crystal(structure.lattice.matrix, numbers, structure.frac_coords))
    species = json.dumps([str(site.species) for site in structure]).encode()
    return _digest(_Crystal(structure.lattice.matrix, np.zeros(0, np.int64), structure.frac_coords), species)


def structure_to_graph(structure: IStructure, settings: GraphSettings | None = None) -> CrystalGraph:
    """The crystal graph of an ordered pymatgen Structure; raises GraphError if it has none."""
    settings = settings or GraphSettings()
    return _neighbor_graph(structure, _validated_atomic_numbers(structure), settings)


@dataclass(frozen=True, eq=False)
class _Crystal:
    """The arrays a graph is built from; cheap to hash and to send to worker processes."""

    lattice: np.ndarray  # (3, 3) Angstrom
    atomic_numbers: np.ndarray  # (n_atoms,)
    frac_coords: np.ndarray  # (n_atoms, 3)


@functools.lru_cache(maxsize=1)
def _element_numbers() -> dict[str, int]:
    return {element.symbol: element.Z for element in Element}


def _atomic_number(specie) -> int:
    return getattr(specie, "Z", 0)  # DummySpecies ("X") has no usable Z


def _digest(crystal: _Crystal, extra: bytes = b"") -> str:
    hasher = hashlib.blake2b(digest_size=16)
    for array in (crystal.lattice, crystal.frac_coords):
        # + 0.0 turns -0.0 into 0.0, which would otherwise hash differently.
        rounded = np.round(np.asarray(array, dtype=np.float64), _DIGEST_DECIMALS) + 0.0
        hasher.update(np.ascontiguousarray(rounded).tobytes())
    hasher.update(np.asarray(crystal.atomic_numbers, dtype=np.int64).tobytes())
    hasher.update(extra)
    return hasher.hexdigest()


def _crystal_from_any(obj: Any) -> _Crystal:
    """Validated arrays of anything parse_structure reads; compact dicts skip building a Structure."""
    if isinstance(obj, Mapping) and {"lattice", "species", "frac_coords"} <= obj.keys():
        symbols = obj["species"]
        element_numbers = _element_numbers()
        if all(isinstance(symbol, str) and symbol in element_numbers for symbol in symbols):
            try:
                lattice = np.asarray(obj["lattice"], dtype=np.float64)
                frac_coords = np.asarray(obj["frac_coords"], dtype=np.float64).reshape(-1, 3)
            except (TypeError, ValueError):
                lattice = frac_coords = None  # malformed: let parse_structure word the error
            if lattice is not None and lattice.shape == (3, 3) and len(frac_coords) == len(symbols):
                numbers = np.array([element_numbers[symbol] for symbol in symbols], dtype=np.int64)
                return _Crystal(lattice, _supported(numbers, symbols.__getitem__), frac_coords)
    structure = parse_structure(obj)
    return _Crystal(structure.lattice.matrix, _validated_atomic_numbers(structure), structure.frac_coords)


def _validated_atomic_numbers(structure: IStructure) -> np.ndarray:
    if not structure.is_ordered:
        site_index = next(i for i, site in enumerate(structure) if not site.is_ordered)
        raise GraphError(
            f"the structure is disordered (site {site_index} is {structure[site_index].species}); "
            "crystal graphs need fully occupied sites"
        )
    numbers = np.array([_atomic_number(site.specie) for site in structure], dtype=np.int64)
    return _supported(numbers, lambda i: str(structure[i].specie))


def _supported(atomic_numbers: np.ndarray, species_name: Callable[[int], str]) -> np.ndarray:
    """``atomic_numbers`` as int16 if every one has an element encoding, else GraphError naming the first."""
    if len(atomic_numbers) == 0:
        raise GraphError("the structure has no sites")
    unsupported = (atomic_numbers < 1) | (atomic_numbers > MAX_ATOMIC_NUMBER)
    if unsupported.any():
        i = int(np.flatnonzero(unsupported)[0])
        raise GraphError(
            f"element {species_name(i)} (Z={atomic_numbers[i]}) on site {i} is not supported: "
            f"the CGCNN element encoding covers Z = 1..{MAX_ATOMIC_NUMBER}"
        )
    return atomic_numbers.astype(np.int16)


def _neighbor_graph(structure: IStructure, atomic_numbers: np.ndarray, settings: GraphSettings) -> CrystalGraph:
    n_atoms = len(atomic_numbers)
    centers, neighbors, _images, distances = structure.get_neighbor_list(r=settings.radius)
    # Sort by centre, then distance, so that each atom's edges form a contiguous run and the rank in
    # the run says whether an edge is among the max_neighbors nearest. One float key (distances are
    # <= radius, so centre * (radius + 1) separates the runs) sorts ~2.5x faster than np.lexsort.
    order = np.argsort(centers * (settings.radius + 1.0) + distances, kind="stable")
    centers, neighbors, distances = centers[order], neighbors[order], distances[order]
    counts = np.bincount(centers, minlength=n_atoms)
    if not counts.all():
        isolated = int(np.flatnonzero(counts == 0)[0])
        raise GraphError(
            f"atom {isolated} ({structure[isolated].specie}) has no neighbour within the "
            f"{settings.radius:g} Angstrom cutoff; use a larger GraphSettings.radius or check the structure"
        )
    run_starts = np.cumsum(counts) - counts
    rank = np.arange(len(centers)) - np.repeat(run_starts, counts)
    keep = rank < settings.max_neighbors
    return CrystalGraph(
        atomic_numbers=atomic_numbers,
        edge_src=centers[keep].astype(np.int32),
        edge_dst=neighbors[keep].astype(np.int32),
        edge_dist=distances[keep].astype(np.float32),
    )


def _featurize_crystal(task: tuple[int, _Crystal, GraphSettings]) -> tuple[int, CrystalGraph | str]:
    """Worker: (position, crystal, settings) -> (position, graph or error message)."""
    position, crystal, settings = task
    try:
        structure = Structure(Lattice(crystal.lattice), crystal.atomic_numbers.tolist(), crystal.frac_coords)
        return position, _neighbor_graph(structure, crystal.atomic_numbers, settings)
    except VoltmodelsError as exc:
        return position, str(exc)
    except Exception as exc:  # one odd structure must not take the whole batch down
        return position, f"featurization failed: {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------------
# Disk cache


class GraphCache:
    """Crystal graphs on disk, keyed by structure content and the settings that shape the graph.

    Layout: ``<root>/v<format>-r<radius>-k<max_neighbors>/shard-*.npz`` (e.g. ``v1-r8-k12/``). Each
    shard holds many graphs as concatenated arrays plus offsets, so loading 7,600 graphs is a handful
    of file reads rather than 7,600. A shard is written to a temporary file then ``os.replace``-d:
    readers never see a partial shard and concurrent writers never clobber each other (each writes its
    own shards; a structure cached twice is harmless). Only a digest -> shard index stays in memory
    between calls, never the graphs.
    """

    def __init__(self, root: str | os.PathLike | None = None, settings: GraphSettings | None = None):
        self.settings = settings or GraphSettings()
        root = Path(root) if root is not None else cache_dir() / "graphs"
        self.directory = root / (
            f"v{GRAPH_FORMAT_VERSION}-r{self.settings.radius:.10g}-k{self.settings.max_neighbors}"
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self._shard_digests: dict[str, np.ndarray] = {}
        self._index: dict[str, tuple[str, int]] = {}

    # -- public ------------------------------------------------------------------------------------

    def get_many(
        self,
        structures: Mapping[Hashable, Any] | Sequence[Any],
        n_jobs: int | None = None,
        progress: bool = True,
    ) -> FeaturizeResult:
        """Graphs for many structures: cached ones are read, missing ones featurised in parallel.

        ``structures`` maps ids to anything :func:`parse_structure` reads (or is a sequence of
        them, keyed by position). Per-structure failures land in ``result.errors`` (id -> message)
        instead of raising. ``n_jobs`` defaults to ``os.cpu_count()``.
        """
        items = list(structures.items()) if isinstance(structures, Mapping) else list(enumerate(structures))
        errors: dict[Hashable, str] = {}
        digest_of: dict[Hashable, str] = {}
        crystals: dict[str, _Crystal] = {}  # digest -> crystal, one per distinct structure
        for key, obj in items:
            try:
                crystal = _crystal_from_any(obj)
            except VoltmodelsError as exc:  # unreadable, disordered, unsupported element
                errors[key] = str(exc)
                continue
            digest = _digest(crystal)
            digest_of[key] = digest
            crystals.setdefault(digest, crystal)

        graphs_by_digest = self._load(crystals.keys())
        missing = {d: c for d, c in crystals.items() if d not in graphs_by_digest}
        new_graphs, failures = self._featurize(missing, n_jobs, progress)
        graphs_by_digest.update(new_graphs)

        result = FeaturizeResult()
        for key, _ in items:
            if key in errors:
                result.errors[key] = errors[key]
            elif digest_of[key] in graphs_by_digest:
                result.graphs[key] = graphs_by_digest[digest_of[key]]
            else:
                result.errors[key] = failures[digest_of[key]]
        return result

    def get(self, structure: Any) -> CrystalGraph:
        """The graph of one structure (cached or not); raises GraphError saying why if there is none."""
        result = self.get_many([structure], n_jobs=1, progress=False)
        if result.errors:
            raise GraphError(result.errors[0])
        return result.graphs[0]

    def __len__(self) -> int:
        self._refresh_index()
        return len(self._index)

    def compact(self) -> None:
        """Merge the small shards left by many small calls into one, so that loads stay a few reads."""
        self._refresh_index()
        small = self._small_shards()
        if len(small) < 2:
            return
        graphs: dict[str, CrystalGraph] = {}
        for name in small:
            try:
                graphs.update(self._read_shard(name))
            except FileNotFoundError:  # another process compacted it meanwhile
                continue
        if graphs:
            self._write_shard(graphs)
        for name in small:
            try:
                (self.directory / name).unlink()
            except FileNotFoundError:
                pass
        self._refresh_index()

    # -- featurisation -----------------------------------------------------------------------------

    def _featurize(self, crystals: Mapping[str, _Crystal], n_jobs: int | None, progress: bool):
        """Featurise {digest: crystal}; write successes to new shards; return (graphs, failures)."""
        graphs: dict[str, CrystalGraph] = {}
        failures: dict[str, str] = {}
        if not crystals:
            return graphs, failures
        digests = list(crystals)
        tasks = [(position, crystals[digest], self.settings) for position, digest in enumerate(digests)]
        unwritten: dict[str, CrystalGraph] = {}
        n_jobs = max(1, n_jobs or os.cpu_count() or 1)
        with _ProgressBar(len(tasks), progress) as bar, _TaskRunner(len(tasks), n_jobs) as run:
            for position, outcome in run(tasks):
                digest = digests[position]
                if isinstance(outcome, str):
                    failures[digest] = outcome
                else:
                    graphs[digest] = unwritten[digest] = outcome
                    if len(unwritten) >= _SHARD_SIZE:  # checkpoint: an interrupted run keeps its work
                        self._write_shard(unwritten)
                        unwritten = {}
                bar.update(1)
        if unwritten:
            self._write_shard(unwritten)
        if len(self._small_shards()) > _MAX_SMALL_SHARDS:
            self.compact()
        return graphs, failures

    # -- shards --------------------------------------------------------------------------------------

    def _load(self, digests: Iterable[str]) -> dict[str, CrystalGraph]:
        """Cached graphs among ``digests``; a shard removed meanwhile by a compaction is looked up again."""
        wanted = set(digests)
        found: dict[str, CrystalGraph] = {}
        for _attempt in range(2):
            self._refresh_index()
            by_shard: dict[str, list[int]] = {}
            for digest in wanted - found.keys():
                if digest in self._index:
                    name, position = self._index[digest]
                    by_shard.setdefault(name, []).append(position)
            vanished = False
            for name, positions in by_shard.items():
                try:
                    found.update(self._read_shard(name, positions))
                except FileNotFoundError:
                    vanished = True
            if not vanished:
                break
        return found

    def _small_shards(self) -> list[str]:
        return [name for name, digests in self._shard_digests.items() if len(digests) < _SHARD_SIZE // 2]

    def _refresh_index(self) -> None:
        """Sync the digest -> (shard, position) index with shard files other processes added or merged."""
        names = {p.name for p in self.directory.glob("shard-*.npz")}
        removed = self._shard_digests.keys() - names
        added = sorted(names - self._shard_digests.keys())
        if not removed and not added:
            return
        for name in removed:
            del self._shard_digests[name]
        for name in added:
            try:
                with np.load(self.directory / name) as shard:
                    self._shard_digests[name] = shard["digests"]
            except FileNotFoundError:
                continue
            except Exception:  # unreadable (e.g. truncated by a full disk): skip it; its graphs get recomputed
                warnings.warn(f"ignoring unreadable graph cache file {self.directory / name}", stacklevel=2)
                self._shard_digests[name] = np.array([], dtype="S32")
        self._index = {
            digest.decode(): (name, position)
            for name, shard_digests in self._shard_digests.items()
            for position, digest in enumerate(shard_digests.tolist())
        }

    def _read_shard(self, name: str, positions: Sequence[int] | None = None) -> dict[str, CrystalGraph]:
        with np.load(self.directory / name) as shard:
            arrays = {key: shard[key] for key in shard.files}
        atom_ptr, edge_ptr = arrays["atom_ptr"], arrays["edge_ptr"]
        digests = arrays["digests"].tolist()
        graphs = {}
        for i in range(len(digests)) if positions is None else positions:
            atoms = slice(atom_ptr[i], atom_ptr[i + 1])
            edges = slice(edge_ptr[i], edge_ptr[i + 1])
            # Copies, so that one kept graph does not pin the whole shard in memory.
            graphs[digests[i].decode()] = CrystalGraph(
                atomic_numbers=arrays["atomic_numbers"][atoms].copy(),
                edge_src=arrays["edge_src"][edges].copy(),
                edge_dst=arrays["edge_dst"][edges].copy(),
                edge_dist=arrays["edge_dist"][edges].copy(),
            )
        return graphs

    def _write_shard(self, graphs: Mapping[str, CrystalGraph]) -> None:
        values = list(graphs.values())
        arrays = {
            "digests": np.array([d.encode() for d in graphs], dtype="S32"),
            "atom_ptr": np.concatenate([[0], np.cumsum([g.n_atoms for g in values])]).astype(np.int64),
            "edge_ptr": np.concatenate([[0], np.cumsum([g.n_edges for g in values])]).astype(np.int64),
            "atomic_numbers": np.concatenate([g.atomic_numbers for g in values]).astype(np.int16),
            "edge_src": np.concatenate([g.edge_src for g in values]).astype(np.int32),
            "edge_dst": np.concatenate([g.edge_dst for g in values]).astype(np.int32),
            "edge_dist": np.concatenate([g.edge_dist for g in values]).astype(np.float32),
        }
        name = f"shard-{uuid.uuid4().hex}.npz"
        temporary = self.directory / f".{name}.{os.getpid()}.tmp"
        try:
            with open(temporary, "wb") as handle:
                np.savez(handle, **arrays)
            os.replace(temporary, self.directory / name)
        finally:
            temporary.unlink(missing_ok=True)
        self._shard_digests[name] = arrays["digests"]
        for position, digest in enumerate(graphs):
            self._index[digest] = (name, position)


# --------------------------------------------------------------------------------------------------
# helpers


def _short_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=5).hexdigest()


class _ProgressBar:
    """tqdm when asked for and installed, else a no-op with the same update() interface."""

    def __init__(self, total: int, enabled: bool):
        self._bar = None
        if enabled and total:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc="featurizing structures", unit="structure")
            except ImportError:
                pass

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._bar.close()


class _TaskRunner:
    """Context manager giving ``run(tasks) -> iterator of _featurize_crystal results``.

    Small batches run in this process. Larger ones go to a ProcessPoolExecutor, which raises
    BrokenProcessPool if a worker dies instead of hanging like multiprocessing.Pool. On Linux the
    workers are forked: they start instantly with pymatgen already imported and, unlike spawn or
    forkserver, do not re-run the caller's ``__main__`` (which breaks for stdin, notebooks and unguarded
    scripts). torch's DataLoader makes the same choice; the workers only run pymatgen/numpy code.
    """

    def __init__(self, n_tasks: int, n_jobs: int):
        self._executor = None
        if n_jobs > 1 and n_tasks >= _MIN_ITEMS_FOR_POOL:
            use_fork = sys.platform.startswith("linux")
            context = multiprocessing.get_context("fork" if use_fork else None)
            self._executor = ProcessPoolExecutor(max_workers=min(n_jobs, n_tasks), mp_context=context)
            self._chunksize = max(1, min(32, n_tasks // (n_jobs * 8)))

    def __enter__(self):
        if self._executor is None:
            return lambda tasks: map(_featurize_crystal, tasks)
        return lambda tasks: self._executor.map(_featurize_crystal, tasks, chunksize=self._chunksize)

    def __exit__(self, *exc_info) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
