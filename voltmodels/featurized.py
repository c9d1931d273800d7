"""Curated dataset -> crystal graphs, through the shared disk cache."""

from __future__ import annotations

from voltmodels.data.dataset import CuratedDataset
from voltmodels.graphs.cache import GraphCache
from voltmodels.graphs.graph import CrystalGraph, GraphSettings


def dataset_graphs(dataset: CuratedDataset, ion: str | None, settings: GraphSettings, progress: bool = True) -> tuple[dict[str, CrystalGraph], dict[str, str]]:
    """Graphs of the discharged structures of one ion (or all ions); failures as {id: reason}."""
    rows = dataset.table if ion is None else dataset.rows(ion)
    wanted = {mid: dataset.compact_structures[mid] for mid in rows["id_discharge"].unique()}
    result = GraphCache(settings=settings).get_many(wanted, progress=progress)
    return result.graphs, result.errors
