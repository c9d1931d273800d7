"""Collate crystal graphs into one disjoint-union batch of torch tensors for CGCNN-style models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from voltmodels.config import VoltmodelsError
from voltmodels.graphs.encoding import element_feature_table
from voltmodels.graphs.graph import CrystalGraph, GraphSettings


@dataclass
class GraphBatch:
    """Several crystals as one graph; atom and edge indices are global to the batch.

    ``crystal_index[a]`` is the crystal atom ``a`` belongs to (for pooling atoms into crystals).
    Edges are grouped by crystal and, within a crystal, sorted by ``edge_src``.
    """

    atom_fea: torch.Tensor  # (N, 92) float32, one-hot element encoding
    edge_src: torch.Tensor  # (E,) int64, centre atom
    edge_dst: torch.Tensor  # (E,) int64, neighbour atom
    edge_fea: torch.Tensor  # (E, n_gaussians) float32, Gaussian-expanded distance
    crystal_index: torch.Tensor  # (N,) int64
    atomic_numbers: torch.Tensor  # (N,) int64
    n_crystals: int

    @property
    def n_atoms(self) -> int:
        return self.atom_fea.shape[0]

    @property
    def n_edges(self) -> int:
        return self.edge_src.shape[0]

    def _map_tensors(self, fn) -> GraphBatch:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return GraphBatch(**{name: fn(v) if isinstance(v, torch.Tensor) else v for name, v in values.items()})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> GraphBatch:
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> GraphBatch:
        """Called by torch's DataLoader(pin_memory=True) for custom batch types."""
        return self._map_tensors(lambda t: t.pin_memory())


def gaussian_expand(distances: torch.Tensor, settings: GraphSettings) -> torch.Tensor:
    """exp(-(d - mu_k)^2 / step^2) for the centres mu_k of ``settings`` (CGCNN's GaussianDistance)."""
    centers = torch.as_tensor(settings.gaussian_centers(), dtype=distances.dtype, device=distances.device)
    return torch.exp(-((distances[:, None] - centers) ** 2) / settings.gaussian_step**2)


def collate(graphs: Sequence[CrystalGraph], settings: GraphSettings | None = None) -> GraphBatch:
    """Concatenate graphs into a GraphBatch, offsetting each graph's atom indices by the atoms before it."""
    if len(graphs) == 0:
        raise VoltmodelsError("cannot collate an empty list of crystal graphs")
    settings = settings or GraphSettings()
    n_atoms = np.array([g.n_atoms for g in graphs], dtype=np.int64)
    n_edges = np.array([g.n_edges for g in graphs], dtype=np.int64)
    edge_offsets = np.repeat(np.cumsum(n_atoms) - n_atoms, n_edges)

    atomic_numbers = np.concatenate([g.atomic_numbers for g in graphs]).astype(np.int64)
    edge_src = np.concatenate([g.edge_src for g in graphs]).astype(np.int64) + edge_offsets
    edge_dst = np.concatenate([g.edge_dst for g in graphs]).astype(np.int64) + edge_offsets
    edge_dist = torch.from_numpy(np.concatenate([g.edge_dist for g in graphs]).astype(np.float32, copy=False))
    return GraphBatch(
        atom_fea=torch.from_numpy(element_feature_table()[atomic_numbers]),
        edge_src=torch.from_numpy(edge_src),
        edge_dst=torch.from_numpy(edge_dst),
        edge_fea=gaussian_expand(edge_dist, settings),
        crystal_index=torch.from_numpy(np.repeat(np.arange(len(graphs), dtype=np.int64), n_atoms)),
        atomic_numbers=torch.from_numpy(atomic_numbers),
        n_crystals=len(graphs),
    )
