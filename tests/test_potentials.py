"""Universal-potential voltages: the energy -> voltage arithmetic, the potential cache, the `uip` entry
point on real MP electrodes, and a served model answering modes (a) and (b)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from pymatgen.core import Lattice, Structure

from voltmodels.config import VoltmodelsError
from voltmodels.potentials.calculators import DEFAULT_POTENTIAL
from voltmodels.potentials.compute import charged_host
from voltmodels.potentials.voltage import average_voltage

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------------
# energies -> voltage (hand-checked)


def test_lifepo4_voltage_per_formula_unit_and_per_cell():
    # V = -[E(LiFePO4) - E(FePO4) - mu_Li] / 1 = -(-45 + 40 + 1.9) = 3.1 V
    assert average_voltage("FePO4", -40.0, "LiFePO4", -45.0, "Li", -1.9) == pytest.approx(3.1)
    # The same energies per 4-formula-unit cell: the host normalization makes it the same voltage.
    assert average_voltage("Fe4P4O16", -160.0, "Li4Fe4P4O16", -180.0, "Li", -1.9) == pytest.approx(3.1)
    # Cells of different sizes for the two end members.
    assert average_voltage("FePO4", -40.0, "Li4Fe4P4O16", -180.0, "Li", -1.9) == pytest.approx(3.1)


def test_multivalent_voltages_divide_by_the_ion_valence():
    # Mg2+: Mo6S8 -> MgMo6S8, V = -(-55 + 50 + 1.5) / 2 = 1.75 V
    assert average_voltage("Mo6S8", -50.0, "MgMo6S8", -55.0, "Mg", -1.5) == pytest.approx(1.75)
    # Al3+: V2O5 -> AlV2O5, V = -(-54 + 50 + 3.7) / 3 = 0.1 V
    assert average_voltage("V2O5", -50.0, "AlV2O5", -54.0, "Al", -3.7) == pytest.approx(0.1)
    # A charged state that still holds ions (x1 > 0): Li0.5CoO2 -> LiCoO2, 0.5 Li per CoO2 transferred.
    # V = -[(-20) - (-18.5) - 0.5 * (-1.9)] / 0.5 = 1.1 V
    assert average_voltage("Li0.5CoO2", -18.5, "LiCoO2", -20.0, "Li", -1.9) == pytest.approx(1.1)


def test_end_members_of_different_hosts_are_one_clear_sentence():
    with pytest.raises(VoltmodelsError, match="FePO4 -> LiMnPO4: the specified entries must have the same compositional framework"):
        average_voltage("FePO4", -40.0, "LiMnPO4", -45.0, "Li", -1.9)


def test_charged_host_removes_every_working_ion():
    s = Structure(Lattice.cubic(4.2), ["Mg", "Mg", "O", "O"], [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0], [0, 0.5, 0]])
    host = charged_host(s, "Mg")
    assert host.composition.reduced_formula == "O2"
    with pytest.raises(VoltmodelsError, match="holds no Li atoms"):
        charged_host(s, "Li")


def test_potentials_by_name():
    from voltmodels.potentials.calculators import potential_key, split_name

    assert potential_key("sevennet-0").startswith("sevennet-0@sevenn-")
    with pytest.raises(VoltmodelsError, match="downloads its weights at run time; name a local weights file as mace:/path"):
        split_name("mace")
    with pytest.raises(VoltmodelsError, match="weights file /nonexistent.model of potential 'mace' does not exist"):
        split_name("mace:/nonexistent.model")
    with pytest.raises(VoltmodelsError, match="unknown potential 'dft'"):
        split_name("dft")


@pytest.mark.parametrize("name, tag", [("sevennet-l3i5+sevennet-0", "sevennet-l3i5_and_sevennet-0"), ("sevennet-0+chgnet", "sevennet-0_and_chgnet"), ("chgnet", "chgnet")])
def test_a_combined_potential_names_metrics_that_mlflow_accepts(name, tag):
    """`evaluate -P potential=a+b` logs per-potential metrics; MLflow refuses "+" in a metric name."""
    import mlflow

    from voltmodels.potentials.calculators import potential_tag

    assert potential_tag(name) == tag
    with mlflow.start_run() as run:
        mlflow.log_metric(f"rows_without_voltage_{potential_tag(name)}", 3)
    assert mlflow.get_run(run.info.run_id).data.metrics == {f"rows_without_voltage_{tag}": 3}


def test_every_sevennet_checkpoint_in_the_wheel_loads_offline_with_its_own_cache_key():
    """The variants load by name from the wheel (no download), answer with their own energy (a
    different model, not SevenNet-0 under another name) and expose the atomic representation."""
    pytest.importorskip("sevenn")
    from pymatgen.core import Lattice, Structure

    from voltmodels.potentials.calculators import SEVENNET_CHECKPOINTS, load_potential, potential_key
    from voltmodels.potentials.compute import energy_of

    bcc_li = Structure(Lattice.cubic(3.44), ["Li", "Li"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    energies = {}
    for name in SEVENNET_CHECKPOINTS:
        energy, representation = energy_of(load_potential(name, "cpu"), bcc_li)
        energies[name] = energy / 2
        assert -2.1 < energies[name] < -1.7  # bcc Li: about -1.9 eV/atom at MP's PBE level
        assert representation.shape == (128,) and np.isfinite(representation).all()
    assert len({round(e, 5) for e in energies.values()}) == len(energies)
    assert len({potential_key(name) for name in SEVENNET_CHECKPOINTS}) == len(SEVENNET_CHECKPOINTS)


def test_a_weights_file_is_part_of_the_cache_key(tmp_path):
    from voltmodels.potentials.calculators import potential_key

    first, second = tmp_path / "a.pth", tmp_path / "b.pth"
    first.write_bytes(b"weights 1")
    second.write_bytes(b"weights 2")
    pytest.importorskip("sevenn")
    assert potential_key(f"sevennet:{first}") != potential_key(f"sevennet:{second}")


# --------------------------------------------------------------------------------------------------
# real potential on real electrodes


@pytest.fixture(scope="module")
def subset_dataset(real_subset, tmp_path_factory):
    from voltmodels.data.curation import CurationParams, curate
    from voltmodels.data.dataset import CuratedDataset, save_dataset
    from voltmodels.data.sources import load_snapshot

    folder = tmp_path_factory.mktemp("subset_dataset")
    save_dataset(curate(load_snapshot(real_subset), CurationParams()), folder, "test")
    return CuratedDataset(folder)


def test_curated_dataset_keeps_both_end_members(subset_dataset):
    ids = set(subset_dataset.compact_structures)
    assert set(subset_dataset.table["id_charge"]) <= ids and set(subset_dataset.table["id_discharge"]) <= ids


def test_sevennet_zero_shot_on_real_electrodes_and_cache(subset_dataset, tmp_path, monkeypatch):
    pytest.importorskip("sevenn")
    from voltmodels.potentials import compute
    from voltmodels.potentials.cache import PotentialCache
    from voltmodels.potentials.electrodes import DatasetInputs

    cache = PotentialCache(tmp_path / "potentials.sqlite")
    first = DatasetInputs(subset_dataset, "sevennet-0", "a", cache=cache)
    rows = subset_dataset.table
    v = first(rows).v_uip
    assert np.isfinite(v).all(), first.inputs.errors
    # Zero-shot SevenNet-0 is close to MP's DFT voltage on these electrodes (MPtrj holds many of them).
    assert np.median(np.abs(v - rows["average_voltage"].to_numpy())) < 0.3
    assert first.inputs.embeddings.shape == (len(rows), 256) and np.isfinite(first.inputs.embeddings).all()

    def never(*args, **kwargs):
        raise AssertionError("the potential was loaded although every energy is in the cache")

    monkeypatch.setattr(compute, "load_potential", never)
    again = DatasetInputs(subset_dataset, "sevennet-0", "a", cache=cache)
    assert np.allclose(again(rows).v_uip, v)


def test_mode_b_rows_say_whether_their_relaxations_converged(subset_dataset):
    """A mode (b) voltage from a structure still moving at the step cap is flagged, not passed off as converged."""
    pytest.importorskip("sevenn")
    from voltmodels.potentials.compute import RelaxSettings
    from voltmodels.potentials.electrodes import DatasetInputs

    rows = subset_dataset.table[subset_dataset.table["working_ion"] == "Mg"].head(1)
    capped = DatasetInputs(subset_dataset, "sevennet-0", "b", rows=rows, relax_settings=RelaxSettings(max_steps=1), n_workers=1).inputs
    assert capped.relaxation[0].startswith("not converged: sevennet-0 stopped relaxing the ")
    assert "charged host at the 1-step cap (fmax 0.1 eV/Å)" in capped.relaxation[0]  # every Mg taken out: far from relaxed
    loose = DatasetInputs(subset_dataset, "sevennet-0", "b", rows=rows, relax_settings=RelaxSettings(fmax=100.0), n_workers=1).inputs
    assert loose.relaxation == ["converged: sevennet-0, 0 + 0 FIRE steps"]
    assert np.isfinite(capped.v_uip).all() and np.isfinite(loose.v_uip).all()
    assert DatasetInputs(subset_dataset, "sevennet-0", "a", rows=rows).inputs.relaxation is None  # mode (a) relaxes nothing


def test_mode_b_intervals_widen_by_the_ratio_of_held_out_error_quantiles():
    from voltmodels.potentials.families import FamilyModel, PotentialInputs, mode_b_scale

    def inputs(v):
        n = len(v)
        return PotentialInputs(np.asarray(v, float), np.zeros((n, 2)), np.zeros((n, 0)), [None] * n, np.zeros((n, 0)))

    y = np.linspace(1.0, 3.0, 10)
    error_a, error_b = np.linspace(0.01, 0.10, 10), np.linspace(0.02, 0.20, 10)  # relaxed end members: twice the error
    model = FamilyModel("uip", half_width={"Mg": 0.1, "*": 0.2})
    ions = ["Mg"] * 10
    assert mode_b_scale(model, inputs(y + error_a), inputs(y - error_b), np.zeros((10, 0)), ions, y) == pytest.approx(2.0)
    assert mode_b_scale(model, inputs(y + error_b), inputs(y + error_a), np.zeros((10, 0)), ions, y) == 1.0  # never narrower
    model.mode_b_scale = 2.0
    assert model.interval(["Mg", "Mg", "Al"], mode_b=[False, True, True]) == pytest.approx([0.1, 0.2, 0.4])
    assert model.interval(["Mg"]) == pytest.approx([0.1])


def test_families_fit_and_calibrate(subset_dataset):
    from voltmodels import baselines as bl
    from voltmodels.potentials.electrodes import DatasetInputs
    from voltmodels.metrics import conformal_half_width
    from voltmodels.potentials.families import FAMILIES, evaluate

    inputs = DatasetInputs(subset_dataset, "sevennet-0", "a")
    features = bl.dataset_features(subset_dataset)
    records, predictions, final = evaluate(subset_dataset, inputs, features, FAMILIES, ("random",), 1, log=None)
    assert set(final) == set(FAMILIES) and set(records["method"]) == set(FAMILIES)
    assert records["test_mae"].notna().all()
    zero_shot = records[records["method"] == "uip"].set_index("ion")["test_mae"]
    assert (zero_shot < 1.0).all()
    # The Delta model (a mean of three learners) saves once and predicts the same after loading.
    from serving.packaging import load_estimator, save_estimator
    from voltmodels.potentials.families import delta_features

    regressor = final["uip_delta"].regressor
    rows = subset_dataset.table.head(20)
    X = delta_features(inputs(rows), features.loc[rows["id_discharge"]].to_numpy(np.float64), rows["working_ion"].to_numpy())
    with tempfile.TemporaryDirectory() as tmp:
        whole = save_estimator(regressor, Path(tmp) / "delta.skops").stat().st_size
        members = sum(save_estimator(m, Path(tmp) / f"{name}.skops").stat().st_size for name, m in regressor.named_estimators_.items())
        loaded = load_estimator(Path(tmp) / "delta.skops")
    assert whole < 1.2 * members  # the by-name view of the members is not written a second time
    assert list(loaded.named_estimators_) == ["boosted_trees", "random_trees", "svr"]
    assert np.allclose(loaded.predict(X), regressor.predict(X))
    # It reads the representation's change per charge moved; a model logged before that input existed
    # (no `delta_transfer` in its family JSON) is served with the columns it was fitted on.
    row_inputs, row_ions = inputs(rows), rows["working_ion"].to_numpy()
    row_features = features.loc[rows["id_discharge"]].to_numpy(np.float64)
    without = delta_features(row_inputs, row_features, row_ions, transfer=False)
    assert X.shape[1] == without.shape[1] + row_inputs.transfer.shape[1] > without.shape[1]
    assert final["uip_delta"].delta_transfer and regressor.n_features_in_ == X.shape[1]
    from serving.potential_model import PotentialPredictor, family_metadata
    from voltmodels.potentials.compute import RelaxSettings
    from voltmodels.potentials.families import fit_family

    train = subset_dataset.table.head(60)
    train_inputs, train_ions, y = inputs(train), train["working_ion"].to_numpy(), train["average_voltage"].to_numpy()
    train_features = features.loc[train["id_discharge"]].to_numpy(np.float64)
    old = fit_family("uip_delta", train_inputs, train_features, train_ions, y, seed=0)
    old.delta_transfer = False
    known = np.isfinite(train_inputs.v_uip)
    old.regressor.fit(delta_features(train_inputs, train_features, train_ions, transfer=False)[known], (y - train_inputs.v_uip)[known])
    with tempfile.TemporaryDirectory() as tmp:
        meta = family_metadata(old, potential="sevennet-0", registered_name="voltage-uip-Li", ions=["Li"], relax_settings=RelaxSettings(), embedding_dims={}, metrics={})
        del meta["delta_transfer"]
        meta["regressor_sha256"] = hashlib.sha256(save_estimator(old.regressor, Path(tmp) / "old.skops").read_bytes()).hexdigest()
        (Path(tmp) / "family.json").write_text(json.dumps(meta))
        served = PotentialPredictor(Path(tmp) / "family.json", Path(tmp) / "old.skops").model
    assert served.delta_transfer is False
    assert np.allclose(served.predict(row_inputs, row_features, row_ions), old.predict(row_inputs, row_features, row_ions))
    # The conformal quantile: with n residuals, the ceil((n + 1) 0.9)-th smallest; too few -> infinite.
    assert conformal_half_width(np.arange(1.0, 20.0)) == 18.0
    assert conformal_half_width(np.array([0.1, 0.2])) == float("inf")


def test_splits_fitted_in_worker_processes_equal_the_serial_fits(subset_dataset):
    from voltmodels import baselines as bl
    from voltmodels.potentials.electrodes import DatasetInputs
    from voltmodels.potentials.families import evaluate

    inputs, features = DatasetInputs(subset_dataset, "sevennet-0", "a"), bl.dataset_features(subset_dataset)
    serial = evaluate(subset_dataset, inputs, features, ("uip_recal", "uip_head"), ("random", "framework"), 1, log=None)
    parallel = evaluate(subset_dataset, inputs, features, ("uip_recal", "uip_head"), ("random", "framework"), 1, log=None, n_jobs=2)
    columns = ["ion", "split", "repeat", "method", "test_mae", "val_mae", "test_coverage"]
    pd.testing.assert_frame_equal(serial[0][columns], parallel[0][columns])
    pd.testing.assert_frame_equal(serial[1], parallel[1])
    assert serial[2]["uip_head"].half_width == pytest.approx(parallel[2]["uip_head"].half_width)


def test_framework_calibration_folds_hide_an_ions_host_as_the_split_does():
    """The framework split holds out an ion's frameworks while other ions may train on the same host
    (on the curated data, 76-91 % of the Mg, Ca, Zn and Al test rows); the calibration folds must group
    the same way, or they are harder than the test and the interval too wide."""
    from sklearn.model_selection import GroupKFold

    from voltmodels.potentials.families import calibration_groups

    train = pd.DataFrame(
        [("Li", "CoO2")] * 4 + [("Ca", "CoO2")] * 3 + [("Li", "FePO4")] * 2 + [("Mg", "MoO3")] * 2 + [("Ca", "MoO3"), ("Zn", "V2O5"), ("Zn", "V2O5")],
        columns=["working_ion", "framework_formula"],
    )
    assert calibration_groups(train, "random") is None
    groups = calibration_groups(train, "framework")
    assert len(set(groups)) == len(train.drop_duplicates())  # one group per (ion, host): Li CoO2 != Ca CoO2
    for fit_rows, held_out in GroupKFold(3).split(train, groups=groups):
        held, fitted = train.iloc[held_out], train.iloc[fit_rows]
        assert not set(map(tuple, held.to_numpy())) & set(map(tuple, fitted.to_numpy()))


# --------------------------------------------------------------------------------------------------
# entry point + served model (real `mlflow models serve`)


def _run(module: str, *args: str, env: dict, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{module} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


#: The potential of the end-to-end tests below: SevenNet-0 runs the same code as the default
#: (SevenNet-l3i5, another checkpoint of the same calculator) at less than half its cost per energy and
#: per relaxation step, and its energies of the subset are already cached by the tests above.
#: `test_every_entry_point_defaults_to_the_default_potential` checks the default's wiring.
E2E_POTENTIAL = "sevennet-0"


def test_every_entry_point_defaults_to_the_default_potential():
    import yaml

    from pipelines import energies, evaluate, main, uip

    for module in (energies, uip, evaluate, main):
        assert module.parse_args([]).potential == DEFAULT_POTENTIAL, module.__name__
    entry_points = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
    with_potential = {name: spec["parameters"]["potential"]["default"] for name, spec in entry_points.items() if "potential" in spec.get("parameters", {})}
    assert set(with_potential) == {"energies", "uip", "evaluate", "main"}
    assert set(with_potential.values()) == {DEFAULT_POTENTIAL}


def mlflow_client(env: dict):
    """A client of a module's own store: setting the global tracking URI would move the session's."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])


@pytest.fixture(scope="module")
def uip_store(real_subset, tmp_path_factory):
    """Its own tracking store (the session store's `latest` dataset must stay the full one)."""
    pytest.importorskip("sevenn")
    root = tmp_path_factory.mktemp("uip_store")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "VOLTMODELS_TORCH_THREADS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        env.pop(key, None)
    _run("pipelines.curate", "--snapshot", str(real_subset), env=env, cwd=root)
    out = _run("pipelines.uip", "--profile", "quick", "--split", "random", "--potential", E2E_POTENTIAL, env=env, cwd=root)
    _run("pipelines.router", env=env, cwd=root)
    return root, env, out


def test_uip_entry_point_registers_every_family(uip_store):
    root, env, out = uip_store
    uri = env["MLFLOW_TRACKING_URI"]
    client = mlflow_client(env)
    for ion in ("Li", "Mg"):
        versions = client.search_model_versions(f"name = 'voltage-uip-{ion}'")
        assert {v.tags["family"] for v in versions} == {"uip", "uip_recal", "uip_delta", "uip_head"}
        champion = client.get_model_version_by_alias(f"voltage-uip-{ion}", "champion")
        assert champion.tags["potential"] == E2E_POTENTIAL and champion.tags["selection_rule"].startswith("val_mae")
    router = client.get_model_version_by_alias("voltage-predictor", "champion")
    assert router.tags["member_Li"].startswith("voltage-uip-Li:")
    assert re.search(rf"random\s+{E2E_POTENTIAL}\s+uip\s+Li\s", out)  # the comparison table
    assert os.environ["MLFLOW_TRACKING_URI"] != uri


def test_served_router_answers_modes_a_and_b(uip_store, real_subset):
    import requests

    from serving.processes import ServerProcess, free_port

    root, env, uip_out = uip_store
    table = pd.read_csv(real_subset / "mp_electrodes.csv")
    with gzip.open(real_subset / "mp_electrode_structures_compact.json.gz", "rt") as fh:
        structures = json.load(fh)
    row = table[table["working_ion"] == "Mg"].iloc[0]
    discharged, charged = json.dumps(structures[row["id_discharge"]]), json.dumps(structures[row["id_charge"]])
    port = free_port()
    serve_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/voltage-predictor@champion", "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1", "-t", "600"]
    with ServerProcess(cmd, port, root, serve_env, root / "serve.log") as server:
        body = {"dataframe_split": {"columns": ["structure", "working_ion", "structure_charged"], "data": [[discharged, "Mg", charged], [discharged, "Mg", None]]}}
        response = requests.post(server.url + "/invocations", json=body, timeout=300)
        assert response.status_code == 200, response.text
        out = pd.DataFrame(response.json()["predictions"])
        assert list(out["mode"]) == ["a", "b"]
        assert out["relaxation"].iloc[0] == "" and re.match(rf"(not )?converged: {E2E_POTENTIAL}", out["relaxation"].iloc[1])
        # The mode (b) interval is the mode (a) one widened by the scale `uip` measured on relaxed validation rows.
        uip_run = mlflow_client(env).get_run(re.search(r"uip run (\w+)", uip_out).group(1))
        assert uip_run.data.metrics[f"{E2E_POTENTIAL}_mode_b_calibration_rows"] >= 1
        scale = uip_run.data.metrics[f"{E2E_POTENTIAL}_{out['family'].iloc[0]}_mode_b_interval_scale"]
        half = (out["voltage_upper"] - out["voltage_lower"]) / 2
        assert scale >= 1 and half.iloc[1] == pytest.approx(scale * half.iloc[0])
        assert (out["model_name"] == "voltage-uip-Mg").all() and out["potential"].eq(E2E_POTENTIAL).all()
        assert abs(out["voltage"].iloc[0] - row["average_voltage"]) < 0.5
        assert (out["voltage_lower"] <= out["voltage"]).all()
        # Without the optional column every row is mode (b); a bad charged structure is a 400 naming the row.
        plain = requests.post(server.url + "/invocations", json={"dataframe_split": {"columns": ["structure", "working_ion"], "data": [[discharged, "Mg"]]}}, timeout=300)
        assert plain.status_code == 200 and plain.json()["predictions"][0]["mode"] == "b"
        bad = requests.post(server.url + "/invocations", json={"dataframe_split": {"columns": ["structure", "working_ion", "structure_charged"], "data": [[discharged, "Mg", "not a structure"]]}}, timeout=60)
        assert bad.status_code == 400 and "row 0: structure_charged: could not parse CIF" in bad.json()["message"]


def test_energies_in_worker_processes_equal_the_serial_ones(subset_dataset, tmp_path):
    pytest.importorskip("sevenn")
    from voltmodels.potentials.cache import PotentialCache
    from voltmodels.potentials.compute import static_energies

    structures = dict(list(subset_dataset.compact_structures.items())[:84])
    serial = static_energies(structures, "sevennet-0", PotentialCache(tmp_path / "serial.sqlite"), n_workers=1)
    parallel = static_energies(structures, "sevennet-0", PotentialCache(tmp_path / "parallel.sqlite"), n_workers=2)
    assert set(parallel) == set(structures)
    assert [parallel[m].energy for m in structures] == pytest.approx([serial[m].energy for m in structures], abs=1e-4)


#: Minutes of work for two workers: 2,000 two-atom bcc Li cells (distinct lattice constants, distinct
#: cache keys) for static energies; 200 rattled 16-atom bcc Li cells for relaxations.
_LONG_WORK = {
    "energies": "cells = {f'li{k}': Structure(Lattice.cubic(3.3 + k * 1e-4), ['Li', 'Li'], [[0, 0, 0], [0.5, 0.5, 0.5]]) for k in range(2000)}\n"
    "static_energies(cells, 'sevennet-0', cache, n_workers=2)\n",
    "relaxed": "cells = {}\n"
    "for k in range(200):\n"
    "    cell = Structure(Lattice.cubic(3.3), ['Li', 'Li'], [[0, 0, 0], [0.5, 0.5, 0.5]]) * (2, 2, 2)\n"
    "    cell.perturb(0.15, min_distance=0.05, seed=k)\n"
    "    cells[f'li{k}'] = cell\n"
    "relax_many(cells, 'sevennet-0', RelaxSettings(), cache, n_workers=2)\n",
}


@pytest.mark.parametrize("table", ["energies", "relaxed"])
def test_workers_stop_when_the_run_that_asked_is_killed(table, tmp_path):
    """A killed `energies`, `uip` or mode (b) run leaves no worker computing on, nor waiting forever
    on its pool's queue: each worker ends when its parent is gone."""
    pytest.importorskip("sevenn")
    import signal
    import sqlite3
    import time

    cache_path = tmp_path / "potentials.sqlite"
    script = (
        "from pymatgen.core import Lattice, Structure\n"
        "from voltmodels.potentials.cache import PotentialCache\n"
        "from voltmodels.potentials.compute import RelaxSettings, relax_many, static_energies\n"
        f"cache = PotentialCache({str(cache_path)!r})\n" + _LONG_WORK[table]
    )
    enough = 50 if table == "energies" else 2  # both energy workers past their first checkpoint; relaxations cached

    def computed() -> int:
        try:
            with sqlite3.connect(cache_path, timeout=30) as db:
                return db.execute(f"select count(*) from {table}").fetchone()[0]
        except sqlite3.OperationalError:  # no cache file or table yet
            return 0

    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    workers = []
    try:
        deadline = time.monotonic() + 300
        while computed() < enough and time.monotonic() < deadline:
            time.sleep(1)
        assert computed() >= enough, f"the workers computed nothing within 300 s ({table})"
        workers = [p for p in psutil.Process(parent.pid).children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2
        parent.send_signal(signal.SIGKILL)
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"{len(alive)} workers ({table}) still running 30 s after their parent was killed"
        assert computed() < (2000 if table == "energies" else 200)  # they stopped, not finished
    finally:
        parent.kill()
        for worker in workers:
            if worker.is_running():
                worker.kill()
