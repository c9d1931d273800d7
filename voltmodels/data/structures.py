"""Structure I/O: every form a structure arrives in (compact dict, CIF, pymatgen JSON) to a Structure."""

from __future__ import annotations

import json
import warnings
from typing import Any

from pymatgen.core import Lattice, Structure

from voltmodels.config import VoltmodelsError


def parse_structure(obj: Any) -> Structure:
    """A pymatgen Structure from a Structure, CIF text, pymatgen JSON/dict, or compact dict.

    Raises VoltmodelsError with one sentence saying why the input is not a structure.
    """
    if isinstance(obj, Structure):
        return obj
    if isinstance(obj, str):
        text = obj.strip()
        if not text:
            raise VoltmodelsError("the structure is an empty string")
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise VoltmodelsError(f"the structure looks like JSON but does not parse ({exc.msg})") from exc
        else:
            return _parse_cif(text)
    if isinstance(obj, dict):
        try:
            if "frac_coords" in obj and "species" in obj:  # the snapshot's compact form
                return Structure(Lattice(obj["lattice"]), obj["species"], obj["frac_coords"])
            return Structure.from_dict(obj)
        except Exception as exc:  # pymatgen raises many types for malformed dicts
            raise VoltmodelsError(f"the structure dict is not a valid structure ({type(exc).__name__}: {exc})") from exc
    raise VoltmodelsError(f"the structure must be CIF text or structure JSON, not {type(obj).__name__}")


def _parse_cif(text: str) -> Structure:
    from pymatgen.io.cif import CifParser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen warns about every rounding it does
            structures = CifParser.from_str(text).parse_structures(primitive=False)
    except Exception as exc:
        raise VoltmodelsError(f"the CIF text could not be parsed ({type(exc).__name__}: {exc})") from exc
    if not structures:
        raise VoltmodelsError("the CIF text holds no structure")
    return structures[0]


def structure_to_compact(structure: Structure) -> dict:
    """The snapshot's compact form: what the curated dataset stores (ordered structures only)."""
    return {
        "lattice": structure.lattice.matrix.round(8).tolist(),
        "species": [site.specie.symbol for site in structure],
        "frac_coords": structure.frac_coords.round(8).tolist(),
    }
