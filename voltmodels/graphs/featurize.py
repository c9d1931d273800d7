"""Old home of the structure -> graph code, kept importable: it now lives in :mod:`voltmodels.graphs.graph`
(graph data), :mod:`voltmodels.graphs.convert` (the pymatgen boundary) and :mod:`voltmodels.graphs.cache`
(the disk cache). Import from those; this re-export goes once voltmodels/potentials/compute.py does."""

from voltmodels.graphs.cache import FeaturizeResult, GraphCache  # noqa: F401
from voltmodels.graphs.convert import parse_structure, structure_digest, structure_to_graph  # noqa: F401
from voltmodels.graphs.graph import CrystalGraph, GraphError, GraphSettings  # noqa: F401
