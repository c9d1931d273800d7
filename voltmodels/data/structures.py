"""Structure I/O: every form a structure arrives in (compact dict, CIF, pymatgen JSON) to a Structure."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from typing import Any

from pymatgen.core import IStructure, Structure

from voltmodels.config import VoltmodelsError


def parse_structure(obj: Any) -> IStructure:
    """A pymatgen Structure from a Structure, CIF or POSCAR text, Structure JSON text / dict, or a compact dict.

    The compact form is ``{"lattice": 3x3, "species": [...], "frac_coords": [[...], ...]}`` as in the
    snapshot. Raises VoltmodelsError with one sentence saying why ``obj`` is not a structure.
    """
    if isinstance(obj, IStructure):  # Structure and its immutable base class
        return obj
    if isinstance(obj, str):
        text = obj.strip()
        if not text:
            raise VoltmodelsError("the structure is an empty string")
        if text.startswith("{"):
            try:
                return parse_structure(json.loads(text))
            except json.JSONDecodeError as exc:
                raise VoltmodelsError(f"could not parse structure JSON: {exc}") from None
        if "_cell_length_a" in text or text.lower().startswith("data_") or "\ndata_" in text.lower():
            return _parse_cif(text)
        return _parse_poscar(text)
    if isinstance(obj, Mapping):
        try:
            if {"lattice", "species", "frac_coords"} <= obj.keys():
                return Structure(obj["lattice"], obj["species"], obj["frac_coords"])
            if "lattice" in obj and "sites" in obj:
                return Structure.from_dict(obj)
        except Exception as exc:  # pymatgen raises a zoo of types for malformed input
            raise VoltmodelsError(f"could not build a structure from the dict: {exc}") from None
        raise VoltmodelsError(
            "could not build a structure from the dict: expected keys lattice/species/frac_coords "
            "or a pymatgen Structure dict (lattice/sites)"
        )
    raise VoltmodelsError(
        f"cannot read a structure from a {type(obj).__name__}: expected a pymatgen Structure, CIF text, "
        "Structure JSON or a dict"
    )


def _parse_cif(text: str) -> Structure:
    from pymatgen.io.cif import CifParser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen warns about every rounding fix it applies
            structures = CifParser.from_str(text).parse_structures(primitive=False)
    except Exception as exc:
        raise VoltmodelsError(f"could not parse CIF: {exc}") from None
    if not structures:
        raise VoltmodelsError("could not parse CIF: it contains no structure")
    return structures[0]


def _parse_poscar(text: str) -> Structure:
    from pymatgen.io.vasp import Poscar

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Poscar.from_str(text).structure
    except Exception as exc:
        raise VoltmodelsError(f"could not parse CIF or POSCAR: the text has no CIF data block and is not a POSCAR ({type(exc).__name__}: {exc})") from None


def structure_to_compact(structure: IStructure) -> dict:
    """The snapshot's compact form: what the curated dataset stores (ordered structures only)."""
    return {
        "lattice": structure.lattice.matrix.round(8).tolist(),
        "species": [site.specie.symbol for site in structure],
        "frac_coords": structure.frac_coords.round(8).tolist(),
    }
