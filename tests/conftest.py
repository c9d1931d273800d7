"""Shared fixtures: an isolated tracking store per session, the real snapshot, a tiny built snapshot."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def snapshot_dir() -> Path:
    path = Path(os.environ.get("VOLTMODELS_SNAPSHOT") or REPO.parent / "shared" / "data")
    if not (path / "mp_electrodes.csv").is_file():
        pytest.skip(f"snapshot not found at {path}; set VOLTMODELS_SNAPSHOT (.ci/run does)")
    return path


@pytest.fixture(scope="session", autouse=True)
def isolated_tracking(tmp_path_factory):
    """Every test session gets its own SQLite store and artifact folder; the graph cache is shared."""
    root = tmp_path_factory.mktemp("tracking")
    old = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "VOLTMODELS_CACHE")}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ.setdefault("VOLTMODELS_CACHE", str(REPO / ".voltmodels_cache"))
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    yield root
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def rocksalt(a: float, cation: str, anion: str = "O") -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])


def fixture_electrodes(n_per_ion: int = 30, ions=("Li", "Mg"), seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Electrode rows and compact structures made from scratch: rock salts with varied lattice constants."""
    rng = np.random.default_rng(seed)
    rows, structures = [], {}
    for ion in ions:
        for k in range(n_per_ion):
            mid = f"mp-{ion}{k}"
            host = ["Co", "Ni", "Mn", "Fe", "Ti"][k % 5]
            s = rocksalt(4.0 + 0.02 * k, host)
            s.replace(0, ion)  # one ion site makes it a discharged electrode
            structures[mid] = {"lattice": s.lattice.matrix.tolist(), "species": [x.specie.symbol for x in s], "frac_coords": s.frac_coords.tolist()}
            voltage = float(rng.normal(3.0, 0.5))
            rows.append(
                {
                    "battery_id": f"{mid}_{ion}",
                    "working_ion": ion,
                    "formula_charge": f"{host}O",
                    "id_charge": f"mp-c{ion}{k}",
                    "formula_discharge": s.composition.reduced_formula,
                    "id_discharge": mid,
                    "average_voltage": voltage,
                    "framework_formula": f"{host}O{k % 7}",
                    "average_voltage_sondrt": voltage,
                }
            )
    return pd.DataFrame(rows), structures


def write_snapshot(folder: Path, table: pd.DataFrame, structures: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "mp_electrodes.csv", index=False)
    with gzip.open(folder / "mp_electrode_structures_compact.json.gz", "wt") as fh:
        json.dump(structures, fh)
    return folder


@pytest.fixture
def tiny_snapshot(tmp_path) -> Path:
    table, structures = fixture_electrodes()
    return write_snapshot(tmp_path / "snapshot", table, structures)
