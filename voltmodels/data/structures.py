"""Old home of structure I/O, kept importable: parse_structure and structure_to_compact live in
:mod:`voltmodels.graphs.convert` (the one pymatgen boundary, with structure_to_graph). Import from there;
this re-export goes once the screening/potential modules do."""

from voltmodels.graphs.convert import parse_structure, structure_to_compact  # noqa: F401
