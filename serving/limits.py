"""Bounded work per request: what a served model refuses before it parses or featurizes anything.

The checks read the request's text only (no pymatgen object is built), so an oversized request is a
400 in milliseconds and the worker is free for the next client:

- rows per request, and characters per structure and per request;
- sites of a structure JSON (the length of its `sites` / `species` list);
- sites of a CIF after symmetry expansion: the atom-site rows are counted first (a P1 CIF with
  32,768 atoms is refused from the line count), then, for at most `max_sites` rows, their fractional
  coordinates are expanded with the CIF's own symmetry operations in numpy and deduplicated, which
  gives the cell's site count without running pymatgen's CIF parser;
- rows are featurized and predicted `chunk_rows` at a time, so memory stays bounded too.

Every limit is a field of `Limits`, read from the model's `model_config["limits"]` (set at logging
time, or overridden with `mlflow.pyfunc.load_model(uri, model_config={"limits": {...}})`).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields

import numpy as np

from voltmodels.config import VoltmodelsError

_SYMOP_TAGS = ("_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz", "_space_group_symop.operation_xyz", "_symmetry_equiv.pos_as_xyz")
_FRACT = ("_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class Limits:
    #: Largest cell (sites). The curated data tops out at 174 sites; 500 keeps one row's featurization
    #: well under a second while allowing the supercells a user might paste.
    max_sites: int = 500
    max_rows: int = 1000
    max_structure_chars: int = 1_000_000
    max_request_chars: int = 20_000_000
    chunk_rows: int = 64

    @classmethod
    def from_config(cls, config: dict | None) -> "Limits":
        given = dict((config or {}).get("limits") or {})
        unknown = sorted(set(given) - {f.name for f in fields(cls)})
        if unknown:
            raise VoltmodelsError(f"unknown serving limit(s) {', '.join(unknown)}; known: {', '.join(f.name for f in fields(cls))}")
        return cls(**{k: int(v) for k, v in given.items()})

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_LIMITS = Limits()


def check_request(n_rows: int, texts, limits: Limits) -> None:
    """Raise VoltmodelsError (one sentence) when the request as a whole is too big."""
    if n_rows > limits.max_rows:
        raise VoltmodelsError(f"the request has {n_rows} rows, above the limit of {limits.max_rows} rows per request; split it")
    total = sum(len(t) for t in texts if isinstance(t, str))
    if total > limits.max_request_chars:
        raise VoltmodelsError(f"the request holds {total:,} characters of structures, above the limit of {limits.max_request_chars:,}; split it")


def check_structure_text(raw, limits: Limits) -> None:
    """Raise VoltmodelsError when a structure (text or dict) is certainly above the limits."""
    if isinstance(raw, dict):
        n = _json_sites(raw)
    elif isinstance(raw, str):
        if len(raw) > limits.max_structure_chars:
            raise VoltmodelsError(f"the structure text has {len(raw):,} characters, above the limit of {limits.max_structure_chars:,}")
        text = raw.strip()
        if text.startswith("{"):
            try:
                n = _json_sites(json.loads(text))
            except json.JSONDecodeError:
                return  # the parser names the JSON error
        elif "_atom_site_fract_x" in text:
            n = cif_site_count(text, limits.max_sites)
            if n is not None and n > limits.max_sites:  # counting stops once past the limit
                raise VoltmodelsError(f"the CIF's atom sites expand to at least {n} sites, above the limit of {limits.max_sites}")
            return
        else:
            return  # POSCAR: its counts line is parsed in microseconds by pymatgen anyway
    else:
        return
    if n is not None and n > limits.max_sites:
        raise VoltmodelsError(f"the cell has {n} sites, above the limit of {limits.max_sites}")


def _json_sites(obj) -> int | None:
    if not isinstance(obj, dict):
        return None
    for key in ("sites", "species"):
        if isinstance(obj.get(key), list):
            return len(obj[key])
    return None


def _loop_rows(lines: list[str], tag: str) -> tuple[list[str], list[list[str]]] | None:
    """(column tags, rows of tokens) of the CIF loop that has `tag`; a light reader for counting."""
    for i, line in enumerate(lines):
        if line.strip().lower() != "loop_":
            continue
        j, tags = i + 1, []
        while j < len(lines) and lines[j].strip().startswith("_"):
            tags.append(lines[j].strip().split()[0].lower())
            j += 1
        if tag not in tags:
            continue
        rows = []
        while j < len(lines):
            stripped = lines[j].strip()
            if not stripped or stripped.startswith("#"):
                j += 1
                continue
            if stripped.startswith(("_", "loop_", "data_")):
                break
            rows.append(stripped)
            j += 1
        return tags, rows
    return None


def _number(token: str) -> float:
    match = _NUMBER.match(token)  # "0.1234(5)" -> 0.1234
    if not match:
        raise ValueError(token)
    return float(match.group(0))


def cif_site_count(text: str, max_sites: int) -> int | None:
    """Sites of the first CIF block after symmetry expansion, or a lower bound above `max_sites`;
    None when the text cannot be read this way (the CIF parser then decides)."""
    lines = text.splitlines()
    atoms = _loop_rows(lines, _FRACT[0])
    if atoms is None:
        return None
    tags, rows = atoms
    if len(rows) > max_sites:
        return len(rows)  # each row is at least one site: certainly too many
    try:
        columns = [tags.index(t) for t in _FRACT]
        coords = np.array([[_number(row.split()[c]) for c in columns] for row in rows], dtype=float)
    except (ValueError, IndexError):
        return None
    ops = None
    for tag in _SYMOP_TAGS:
        found = _loop_rows(lines, tag)
        if found is not None:
            symop_column = found[0].index(tag)
            ops = []
            for row in found[1]:
                quoted = re.findall(r"'([^']*)'|\"([^\"]*)\"", row)
                ops.append(next(a or b for a, b in quoted) if quoted else row.split()[symop_column])
            break
    if not ops:
        return len(rows)
    try:
        from pymatgen.core.operations import SymmOp

        matrices = [SymmOp.from_xyz_str(op.replace(" ", "")) for op in ops]
    except Exception:
        return None
    # Apply every operation to every asymmetric-unit site and count the distinct images per site
    # (periodic, within 0.01 in fractional coordinates: CIFs written with a loose symprec put one site's
    # images a few 1e-3 apart, which pymatgen's parser merges too).
    total = 0
    for xyz in coords:
        images = np.array([m.operate(xyz) for m in matrices]) % 1.0
        kept: list[np.ndarray] = []
        for image in images:
            if not any(np.abs((image - k + 0.5) % 1.0 - 0.5).max() < 0.01 for k in kept):
                kept.append(image)
        total += len(kept)
        if total > max_sites:
            return total
    return total
