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


@pytest.fixture(scope="session")
def li_snapshot_structures(snapshot_dir) -> list[tuple[str, str, int]]:
    """(material id, CIF, sites) of the first 5 Li-containing snapshot structures with 10-40 sites."""
    with gzip.open(snapshot_dir / "mp_electrode_structures_cif.json.gz", "rt") as fh:
        cifs = json.load(fh)
    picked = []
    for mid in sorted(cifs):
        structure = Structure.from_str(cifs[mid], fmt="cif")
        if "Li" in structure.composition and 10 <= len(structure) <= 40:
            picked.append((mid, cifs[mid], len(structure)))
        if len(picked) == 5:
            return picked
    pytest.skip("fewer than 5 small Li structures in the snapshot")


@pytest.fixture(scope="session", autouse=True)
def isolated_tracking(tmp_path_factory):
    """Every test session gets its own SQLite store and artifact folder; the graph cache is shared."""
    root = tmp_path_factory.mktemp("tracking")
    old = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "VOLTMODELS_CACHE")}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ.setdefault("VOLTMODELS_CACHE", str(REPO / ".voltmodels_cache"))
    import mlflow

    from voltmodels.config import set_torch_threads

    set_torch_threads()  # pinned: in-process training beside servers and subprocesses must not stall
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    from pipelines.common import EXPERIMENT

    # Artifacts in the session's folder, not the checkout's mlruns/ (a SQLite store's default root).
    mlflow.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    yield root
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


FCC = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]


def rocksalt(a: float, cation: str, anion: str = "O") -> Structure:
    """Conventional rock-salt cell (8 sites), written out: from_spacegroup costs seconds per call."""
    anion_sites = [[(x + 0.5) % 1, y, z] for x, y, z in FCC]
    return Structure(Lattice.cubic(a), [cation] * 4 + [anion] * 4, FCC + anion_sites)


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


# --------------------------------------------------------------------------------------------------
# Shared trained models (serving / screen tests): built once per session in the isolated store.


def run_entry_point(module: str, *args: str, cwd: Path | None = None, timeout: float = 900) -> str:
    """Run `python -m <module> args` against the session's store; its output, or fail with it."""
    import subprocess
    import sys

    env = {**os.environ, "VOLTMODELS_TORCH_THREADS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"python -m {module} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc.stdout


@pytest.fixture(scope="session")
def li_champion(snapshot_dir, isolated_tracking) -> str:
    """`models:/voltage-cgcnn-Li@champion` in the session's store: curate + train_li quick (1 trial, 2 epochs)."""
    run_entry_point("pipelines.curate", "--snapshot", str(snapshot_dir), cwd=isolated_tracking)
    # Own Optuna storage: the shared cache's study may hold trials whose runs live in another store.
    storage = f"sqlite:///{isolated_tracking / 'optuna.db'}"
    run_entry_point("pipelines.train_li", "--profile", "quick", "--n-trials", "1", "--epochs", "2", "--storage", storage, cwd=isolated_tracking)
    return "models:/voltage-cgcnn-Li@champion"


@pytest.fixture(scope="session")
def router_build(li_champion, isolated_tracking) -> dict:
    """`pipelines.router` run once from the session's champions, with the Li champion version it froze.

    The router pins its members when it is built; a later test (the notebook) may register a better Li
    version and move `voltage-cgcnn-Li@champion`, which the built router rightly keeps ignoring."""
    from mlflow.tracking import MlflowClient

    run_entry_point("pipelines.router", cwd=isolated_tracking)
    li = MlflowClient().get_model_version_by_alias("voltage-cgcnn-Li", "champion")
    return {"uri": "models:/voltage-predictor@champion", "li_version": str(li.version)}


@pytest.fixture(scope="session")
def router_champion(router_build) -> str:
    """`models:/voltage-predictor@champion` built (pipelines.router) from the session's champions."""
    return router_build["uri"]


def real_subset_snapshot(folder: Path, snapshot_dir: Path, ions=("Li", "Mg"), per_ion: int = 14, max_sites: int = 16) -> Path:
    """A snapshot of real MP electrodes (both end members present, small cells), for potential tests."""
    table = pd.read_csv(snapshot_dir / "mp_electrodes.csv")
    with gzip.open(snapshot_dir / "mp_electrode_structures_compact.json.gz", "rt") as fh:
        structures = json.load(fh)
    picked = []
    for ion in ions:
        rows = table[(table["working_ion"] == ion) & table["id_charge"].isin(list(structures)) & table["id_discharge"].isin(list(structures))]
        small = rows[[len(structures[d]["species"]) <= max_sites and len(structures[c]["species"]) <= max_sites for d, c in zip(rows["id_discharge"], rows["id_charge"])]]
        small = small[(small["average_voltage"] - small["average_voltage_sondrt"]).abs().fillna(0) < 0.5]
        picked.append(small.sort_values("battery_id").head(per_ion))
    subset = pd.concat(picked, ignore_index=True)
    ids = set(subset["id_discharge"]) | set(subset["id_charge"])
    return write_snapshot(folder, subset, {m: structures[m] for m in sorted(ids)})


@pytest.fixture(scope="session")
def real_subset(snapshot_dir, tmp_path_factory) -> Path:
    return real_subset_snapshot(tmp_path_factory.mktemp("real_subset") / "snapshot", snapshot_dir)
