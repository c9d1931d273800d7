"""Cleaning rules and splits that turn raw electrode rows into a curated table.

Each rule is named, parameterized and counted; every dropped row is kept with the rule that
dropped it, so nothing disappears silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.core import Structure

from voltmodels.config import SUPPORTED_IONS, VoltmodelsError
from voltmodels.data.sources import RawElectrodes
from voltmodels.graphs.convert import parse_structure

SPLIT_STRATEGIES = ("random", "framework")
SPLIT_NAMES = ("train", "val", "test")

# Order matters: cheap row checks first, then structures, then the label rules.
RULES = (
    "unknown_ion",
    "missing_voltage",
    "missing_structure",
    "disordered_structure",
    "duplicate_electrode",
    "inconsistent_voltage",
    "voltage_outlier",
)


@dataclass(frozen=True)
class CurationParams:
    #: Drop an electrode when the voltage of two MP scrapes (current vs Dec 2019) differs by more
    #: than this: the label itself is then uncertain. The paper's "inconsistent data".
    max_voltage_disagreement: float = 0.5
    #: Duplicates of one electrode (same ion, discharged and charged ids) whose voltages differ by
    #: more than this are all dropped; otherwise the first is kept.
    duplicate_tolerance: float = 0.05
    #: Per-ion robust z-score limit |V - median| / (1.4826 MAD) for voltage outliers.
    outlier_mad_z: float = 4.0
    seed: int = 0
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    ions: tuple[str, ...] = SUPPORTED_IONS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CurationResult:
    table: pd.DataFrame  # curated rows, with split_random / split_framework columns
    structures: dict[str, Structure]  # material id -> structure, for every id_discharge and id_charge
    dropped: pd.DataFrame  # battery_id, working_ion, rule, detail
    counts: pd.DataFrame  # per ion: raw, after each rule, per split
    params: CurationParams = field(default_factory=CurationParams)


def _drop(table: pd.DataFrame, mask: pd.Series, rule: str, detail: pd.Series | str, log: list[pd.DataFrame]):
    if mask.any():
        details = detail[mask] if isinstance(detail, pd.Series) else detail
        log.append(
            pd.DataFrame(
                {
                    "battery_id": table.loc[mask, "battery_id"],
                    "working_ion": table.loc[mask, "working_ion"],
                    "id_discharge": table.loc[mask, "id_discharge"],
                    "average_voltage": table.loc[mask, "average_voltage"],
                    "rule": rule,
                    "detail": details,
                }
            )
        )
    return table.loc[~mask]


def _parse_structures(material_ids: pd.Series, raw_structures: dict) -> tuple[dict[str, Structure], dict[str, str]]:
    parsed: dict[str, Structure] = {}
    errors: dict[str, str] = {}
    for material_id in material_ids.astype(str).unique():
        if material_id not in raw_structures:
            errors[material_id] = f"no structure for {material_id} in the source"
            continue
        try:
            parsed[material_id] = parse_structure(raw_structures[material_id])
        except VoltmodelsError as exc:
            errors[material_id] = f"{material_id}: {exc}"
    return parsed, errors


def clean(raw: RawElectrodes, params: CurationParams) -> tuple[pd.DataFrame, dict[str, Structure], pd.DataFrame, pd.DataFrame]:
    """Apply the rules in order; return kept rows, their structures, dropped rows and per-ion counts."""
    table = raw.table.copy()
    table["working_ion"] = table["working_ion"].astype(str).str.strip()
    table["id_discharge"] = table["id_discharge"].astype(str).str.strip()
    table["average_voltage"] = pd.to_numeric(table["average_voltage"], errors="coerce")
    log: list[pd.DataFrame] = []
    stages = {"raw": table["working_ion"].value_counts()}

    mask = ~table["working_ion"].isin(params.ions)
    table = _drop(table, mask, "unknown_ion", "working ion " + table["working_ion"] + " is not one of " + "/".join(params.ions), log)
    stages["unknown_ion"] = table["working_ion"].value_counts()

    mask = table["average_voltage"].isna() | ~np.isfinite(table["average_voltage"].astype(float))
    table = _drop(table, mask, "missing_voltage", "average_voltage is empty or not a number", log)
    stages["missing_voltage"] = table["working_ion"].value_counts()

    structures, errors = _parse_structures(table["id_discharge"], raw.structures)
    mask = table["id_discharge"].isin(list(errors))
    table = _drop(table, mask, "missing_structure", table["id_discharge"].map(errors), log)
    stages["missing_structure"] = table["working_ion"].value_counts()

    disordered = {mid for mid, s in structures.items() if not s.is_ordered}
    mask = table["id_discharge"].isin(list(disordered))
    table = _drop(table, mask, "disordered_structure", "discharged structure has partial occupancies", log)
    stages["disordered_structure"] = table["working_ion"].value_counts()

    key = ["working_ion", "id_discharge", "id_charge"]
    groups = table.groupby(key, dropna=False)["average_voltage"]
    spread = groups.transform("max") - groups.transform("min")
    duplicated = table.duplicated(key, keep=False)
    conflicting = duplicated & (spread > params.duplicate_tolerance)
    table = _drop(
        table,
        conflicting,
        "duplicate_electrode",
        "same electrode listed again with a voltage differing by " + spread.round(3).astype(str) + " V",
        log,
    )
    mask = table.duplicated(key, keep="first")
    table = _drop(table, mask, "duplicate_electrode", "repeated row of an electrode (voltages agree, first kept)", log)
    stages["duplicate_electrode"] = table["working_ion"].value_counts()

    other = pd.to_numeric(table["average_voltage_sondrt"], errors="coerce")
    disagreement = (table["average_voltage"] - other).abs()
    mask = disagreement > params.max_voltage_disagreement
    table = _drop(
        table,
        mask,
        "inconsistent_voltage",
        "two MP releases disagree by " + disagreement.round(3).astype(str) + " V",
        log,
    )
    stages["inconsistent_voltage"] = table["working_ion"].value_counts()

    by_ion = table.groupby("working_ion")["average_voltage"]
    median = by_ion.transform("median")
    mad = 1.4826 * (table["average_voltage"] - median).abs().groupby(table["working_ion"]).transform("median")
    robust_z = (table["average_voltage"] - median).abs() / mad.replace(0, np.nan)
    mask = robust_z > params.outlier_mad_z
    table = _drop(
        table,
        mask,
        "voltage_outlier",
        "robust z-score " + robust_z.round(2).astype(str) + " from the ion's median " + median.round(2).astype(str) + " V",
        log,
    )
    stages["voltage_outlier"] = table["working_ion"].value_counts()

    counts = pd.DataFrame(stages).reindex(list(params.ions)).fillna(0).astype(int)
    dropped = pd.concat(log, ignore_index=True) if log else pd.DataFrame(columns=["battery_id", "working_ion", "id_discharge", "average_voltage", "rule", "detail"])
    kept_structures = {mid: structures[mid] for mid in table["id_discharge"].unique()}
    # The charged end members too (they feed the potentials' mode (a)); an electrode whose charged
    # structure is missing or unreadable keeps its row: models that read only the discharged one use it.
    table["id_charge"] = table["id_charge"].astype(str).str.strip()
    charged, _ = _parse_structures(table["id_charge"], raw.structures)
    kept_structures.update({mid: s for mid, s in charged.items() if s.is_ordered and mid not in kept_structures})
    return table.reset_index(drop=True), kept_structures, dropped, counts


def assign_splits(table: pd.DataFrame, strategy: str, seed: int, fractions=(0.8, 0.1, 0.1)) -> pd.Series:
    """Per ion, label each row train/val/test; the same seed always gives the same labels.

    `random` shuffles rows (the paper's split). `framework` shuffles host frameworks
    (`framework_formula`) and fills train, then val, then test, so no host is in two parts.
    """
    if strategy not in SPLIT_STRATEGIES:
        raise VoltmodelsError(f"Unknown split strategy {strategy!r}; use one of {', '.join(SPLIT_STRATEGIES)}.")
    labels = pd.Series(index=table.index, dtype=object)
    bounds = np.cumsum(fractions)[:2]
    for ion, rows in table.groupby("working_ion", sort=True):
        # One generator per (seed, ion): adding or removing an ion never changes another ion's split.
        rng = np.random.default_rng([seed, *map(ord, ion)])
        if strategy == "random":
            order = rows.index.to_numpy()[rng.permutation(len(rows))]
            position = np.arange(len(order)) / len(order)
            part = np.searchsorted(bounds, position, side="right")
            labels.loc[order] = np.array(SPLIT_NAMES)[part]
        else:
            groups = rows.groupby("framework_formula", sort=True).groups
            names = np.array(sorted(groups))[rng.permutation(len(groups))]
            filled = 0
            for name in names:
                members = groups[name]
                part = int(np.searchsorted(bounds, filled / len(rows), side="right"))
                labels.loc[members] = SPLIT_NAMES[part]
                filled += len(members)
    return labels


#: Share of an ion's training rows that `calibration_rows` sets aside (at least CALIBRATION_MIN_ROWS).
CALIBRATION_FRACTION = 0.1
CALIBRATION_MIN_ROWS = 10


def calibration_rows(rows: pd.DataFrame, labels, strategy: str, seed: int) -> np.ndarray:
    """Which training rows a model that selects on its validation rows (the CGCNN: early stopping,
    Optuna, the champion rule) leaves out for its conformal interval: a seeded CALIBRATION_FRACTION of
    the ion's training rows, whole frameworks on the framework split (as its test rows are frameworks
    never trained on). None when the ion has too few training rows to spare CALIBRATION_MIN_ROWS."""
    labels = np.asarray(labels, dtype=object)
    chosen = np.zeros(len(rows), bool)
    for ion in pd.unique(rows["working_ion"]):
        train = np.flatnonzero((rows["working_ion"].to_numpy() == ion) & (labels == "train"))
        want = max(CALIBRATION_MIN_ROWS, int(round(CALIBRATION_FRACTION * len(train))))
        if len(train) < 4 * want:
            continue
        keys = rows["framework_formula"].to_numpy()[train] if strategy == "framework" else rows["battery_id"].to_numpy()[train]
        rng = np.random.default_rng([seed, 7, *map(ord, ion)])
        groups = pd.unique(keys)
        taken = 0
        for group in groups[rng.permutation(len(groups))]:
            if taken >= want:
                break
            members = train[keys == group]
            chosen[members] = True
            taken += len(members)
    return chosen


def curate(raw: RawElectrodes, params: CurationParams = CurationParams()) -> CurationResult:
    table, structures, dropped, counts = clean(raw, params)
    if table.empty:
        raise VoltmodelsError(f"No electrode of {raw.source} survived curation; see the dropped-rows table.")
    for strategy in SPLIT_STRATEGIES:
        table[f"split_{strategy}"] = assign_splits(table, strategy, params.seed, params.fractions)
        for part in SPLIT_NAMES:
            counts[f"{strategy}_{part}"] = (
                table[table[f"split_{strategy}"] == part].groupby("working_ion").size().reindex(counts.index).fillna(0).astype(int)
            )
    counts.index.name = "working_ion"
    table = table.sort_values(["working_ion", "battery_id"]).reset_index(drop=True)
    return CurationResult(table=table, structures=structures, dropped=dropped, counts=counts, params=params)
