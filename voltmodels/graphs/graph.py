"""Crystal-graph data: the settings that shape a graph, the graph itself, and the error for a structure
that has none. No pymatgen here: structures become graphs in :mod:`voltmodels.graphs.convert`.

A crystal graph keeps, for every atom i, its ``max_neighbors`` nearest neighbours j within ``radius``
(periodic images count, so an atom can neighbour its own image or the same atom j several times),
sorted by distance. Edges are a flat list ``(edge_src=i, edge_dst=j, edge_dist)`` sorted by
``(i, distance)``. An atom with fewer neighbours than ``max_neighbors`` simply has fewer edges: there is
no padding, because the model aggregates messages with a sum/scatter over edges, where a missing
neighbour contributes nothing (CGCNN pads with a fake neighbour at ``radius + 1`` Angstrom instead).
An atom with no neighbour at all is an error (its graph would be disconnected).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from voltmodels.config import VoltmodelsError


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



def _short_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=5).hexdigest()
