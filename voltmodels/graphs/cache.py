"""A parallel, process-safe disk cache of crystal graphs (the graphs come from :mod:`voltmodels.graphs.convert`)."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voltmodels.config import VoltmodelsError, cache_dir
from voltmodels.graphs.convert import Crystal, crystal_digest, crystal_from_any, featurize_crystal
from voltmodels.graphs.graph import CrystalGraph, GraphError, GraphSettings
from voltmodels.graphs.parallel import ProgressBar, TaskRunner

#: Bump when the on-disk graph format or the neighbour selection changes: old caches are then ignored.
GRAPH_FORMAT_VERSION = 1

# Graphs per shard file; also how often a long featurisation run checkpoints to disk.
_SHARD_SIZE = 2048
# More small shards than this (left by many small get_many calls) are merged into one.
_MAX_SMALL_SHARDS = 16


@dataclass
class FeaturizeResult:
    """Outcome of :meth:`GraphCache.get_many`: graphs and per-item errors, both keyed like the input.

    Keys are the mapping's keys, or list positions for a sequence input; every input key is in exactly
    one of the two dicts, in input order.
    """

    graphs: dict[Hashable, CrystalGraph] = field(default_factory=dict)
    errors: dict[Hashable, str] = field(default_factory=dict)


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
        crystals: dict[str, Crystal] = {}  # digest -> crystal, one per distinct structure
        for key, obj in items:
            try:
                crystal = crystal_from_any(obj)
            except VoltmodelsError as exc:  # unreadable, disordered, unsupported element
                errors[key] = str(exc)
                continue
            digest = crystal_digest(crystal)
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

    def _featurize(self, crystals: Mapping[str, Crystal], n_jobs: int | None, progress: bool):
        """Featurise {digest: crystal}; write successes to new shards; return (graphs, failures)."""
        graphs: dict[str, CrystalGraph] = {}
        failures: dict[str, str] = {}
        if not crystals:
            return graphs, failures
        digests = list(crystals)
        tasks = [(position, crystals[digest], self.settings) for position, digest in enumerate(digests)]
        unwritten: dict[str, CrystalGraph] = {}
        n_jobs = max(1, n_jobs or os.cpu_count() or 1)
        with ProgressBar(len(tasks), progress) as bar, TaskRunner(featurize_crystal, len(tasks), n_jobs) as run:
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
