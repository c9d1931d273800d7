"""Crystal graphs for CGCNN: element encoding, structure -> graph featurisation with a disk cache, batching."""

from voltmodels.graphs.batch import GraphBatch, collate, gaussian_expand
from voltmodels.graphs.encoding import ATOM_FEATURE_LEN, SUPPORTED_ELEMENTS, element_feature_table
from voltmodels.graphs.cache import FeaturizeResult, GraphCache
from voltmodels.graphs.convert import parse_structure, structure_digest, structure_to_graph
from voltmodels.graphs.graph import CrystalGraph, GraphError, GraphSettings

__all__ = [
    "ATOM_FEATURE_LEN",
    "SUPPORTED_ELEMENTS",
    "CrystalGraph",
    "FeaturizeResult",
    "GraphBatch",
    "GraphCache",
    "GraphError",
    "GraphSettings",
    "collate",
    "element_feature_table",
    "gaussian_expand",
    "structure_digest",
    "parse_structure",
    "structure_to_graph",
]
