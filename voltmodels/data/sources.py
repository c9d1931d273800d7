"""Raw electrode tables, from a snapshot folder or from the Materials Project API.

Both sources return the same `RawElectrodes`: one row per electrode (columns named after mp-api's
`InsertionElectrodeDoc`) and the structures of the referenced materials, still unparsed, so that
one bad structure is a counted drop during curation rather than a crash here.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from voltmodels.config import SNAPSHOT_ENV, VoltmodelsError, resolve_snapshot

ELECTRODES_FILE = "mp_electrodes.csv"
COMPACT_STRUCTURES_FILE = "mp_electrode_structures_compact.json.gz"
CIF_STRUCTURES_FILE = "mp_electrode_structures_cif.json.gz"

#: Columns curation needs; the rest of the snapshot's columns are carried along when present.
REQUIRED_COLUMNS = (
    "battery_id",
    "working_ion",
    "id_discharge",
    "formula_discharge",
    "average_voltage",
    "framework_formula",
)
OPTIONAL_COLUMNS = (
    "id_charge",
    "formula_charge",
    "capacity_grav",
    "capacity_vol",
    "energy_grav",
    "energy_vol",
    "max_delta_volume",
    "stability_charge",
    "stability_discharge",
    "average_voltage_sondrt",
)


@dataclass
class RawElectrodes:
    """Electrode rows plus `{material_id: raw structure}` (compact dict, CIF text or pymatgen dict)."""

    table: pd.DataFrame
    structures: dict[str, Any]
    source: str  # human-readable origin, logged with the dataset
    details: dict[str, Any] = field(default_factory=dict)


def _read_json_gz(path: Path) -> dict:
    try:
        with gzip.open(path, "rt") as fh:
            data = json.load(fh)
    except (OSError, EOFError, json.JSONDecodeError) as exc:
        raise VoltmodelsError(f"{path} is not a readable gzipped JSON file ({exc}).") from exc
    if not isinstance(data, dict) or not data:
        raise VoltmodelsError(f"{path} holds no structures (expected a non-empty {{material_id: structure}} object).")
    return data


def check_columns(table: pd.DataFrame, origin: str) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise VoltmodelsError(f"{origin} lacks the required column(s) {', '.join(missing)}.")
    for column in OPTIONAL_COLUMNS:
        if column not in table.columns:
            table[column] = pd.NA
    return table


def load_snapshot(path: str | os.PathLike | None = None) -> RawElectrodes:
    """Read a snapshot folder laid out like `shared/data` (path from the argument or $VOLTMODELS_SNAPSHOT)."""
    folder = resolve_snapshot(path)
    if folder is None:
        raise VoltmodelsError(no_source_message())
    if not folder.is_dir():
        raise VoltmodelsError(f"Snapshot folder {folder} does not exist; pass -P snapshot=PATH or set {SNAPSHOT_ENV}.")
    csv_path = folder / ELECTRODES_FILE
    if not csv_path.is_file():
        raise VoltmodelsError(f"Snapshot folder {folder} has no {ELECTRODES_FILE}.")
    try:
        table = pd.read_csv(csv_path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise VoltmodelsError(f"{csv_path} is not a readable CSV table ({exc}).") from exc
    if table.empty:
        raise VoltmodelsError(f"{csv_path} has a header but no electrode rows.")
    table = check_columns(table, str(csv_path))
    # The compact file parses ~10x faster than CIF; CIFs are the fallback for other snapshots.
    compact, cif = folder / COMPACT_STRUCTURES_FILE, folder / CIF_STRUCTURES_FILE
    if compact.is_file():
        structures = _read_json_gz(compact)
        structure_file = compact
    elif cif.is_file():
        structures = _read_json_gz(cif)
        structure_file = cif
    else:
        raise VoltmodelsError(f"Snapshot folder {folder} has neither {COMPACT_STRUCTURES_FILE} nor {CIF_STRUCTURES_FILE}.")
    return RawElectrodes(
        table=table,
        structures=structures,
        source=f"snapshot:{folder}",
        details={"electrodes_file": str(csv_path), "structures_file": str(structure_file)},
    )


def no_source_message() -> str:
    return (
        f"No data source: pass -P snapshot=PATH (or set {SNAPSHOT_ENV}) to a folder with {ELECTRODES_FILE}, "
        "or use -P source=mp with MP_API_KEY set to a Materials Project API key."
    )


# Fields requested from mp-api: the snapshot's columns, whose names follow `InsertionElectrodeDoc`
# (all but the Dec-2019 voltage, which only the snapshot has).
MP_ELECTRODE_FIELDS = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c != "average_voltage_sondrt"]


def _doc_value(doc: Any, name: str) -> Any:
    value = doc.get(name) if isinstance(doc, dict) else getattr(doc, name, None)
    # mp-api returns enums / pymatgen objects for some fields; the table wants plain values.
    if hasattr(value, "value") and not isinstance(value, (int, float, str)):
        value = value.value
    if name == "framework_formula" and value is not None and not isinstance(value, str):
        value = getattr(value, "reduced_formula", str(value))
    return value


def load_from_mp(ions: Iterable[str], api_key: str | None = None, client_factory=None) -> RawElectrodes:
    """Query insertion electrodes per working ion, then the discharged/charged structures, via mp-api.

    `client_factory(api_key)` returns an MPRester-like context manager; tests pass a fake one.
    """
    api_key = api_key or os.environ.get("MP_API_KEY")
    if not api_key:
        raise VoltmodelsError(no_source_message())
    if client_factory is None:
        from mp_api.client import MPRester

        client_factory = MPRester
    rows: list[dict] = []
    with client_factory(api_key) as mpr:
        for ion in ions:
            docs = mpr.materials.insertion_electrodes.search(working_ion=ion, fields=MP_ELECTRODE_FIELDS)
            rows.extend({name: _doc_value(doc, name) for name in MP_ELECTRODE_FIELDS} for doc in docs)
        if not rows:
            raise VoltmodelsError(f"The Materials Project returned no insertion electrodes for {', '.join(ions)}.")
        table = pd.DataFrame(rows)
        material_ids = sorted(set(table["id_discharge"].dropna()) | set(table["id_charge"].dropna()))
        summaries = mpr.materials.summary.search(material_ids=material_ids, fields=["material_id", "structure"])
        structures = {}
        for doc in summaries:
            structure = _doc_value(doc, "structure")
            structures[str(_doc_value(doc, "material_id"))] = structure.as_dict() if hasattr(structure, "as_dict") else structure
    table = check_columns(table, "the Materials Project response")
    return RawElectrodes(table=table, structures=structures, source="mp-api", details={"n_materials": len(structures)})
