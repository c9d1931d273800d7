"""voltmodels.interpretation on a tiny untrained CGCNN and real snapshot structures; the `interpret` entry point
on the session's quick-trained Li champion."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import rocksalt, run_entry_point
from voltmodels import interpretation as interp
from voltmodels.graphs.batch import collate
from voltmodels.graphs.encoding import element_feature_table
from voltmodels.graphs.convert import parse_structure, structure_to_graph
from voltmodels.graphs.graph import GraphSettings
from voltmodels.model import CGCNN, CGCNNConfig

SETTINGS = GraphSettings()


@pytest.fixture(scope="module")
def tiny_model() -> CGCNN:
    torch.manual_seed(0)
    model = CGCNN(CGCNNConfig(atom_fea_len=16, n_conv=2, h_fea_len=16))
    model.set_target_scaler(3.0, 1.0)
    return model.eval()


@pytest.fixture(scope="module")
def real_structures(snapshot_dir) -> dict:
    """A few discharged Li oxides of the snapshot (8-40 sites), by id."""
    table = pd.read_csv(snapshot_dir / "mp_electrodes.csv")
    with gzip.open(snapshot_dir / "mp_electrode_structures_compact.json.gz", "rt") as fh:
        compact = json.load(fh)
    picked = {}
    for mid in table.loc[table["working_ion"] == "Li", "id_discharge"].drop_duplicates():
        if mid not in compact:
            continue
        structure = parse_structure(compact[mid])
        if "O" in structure.composition and 8 <= len(structure) <= 40 and structure.is_ordered:
            picked[mid] = structure
        if len(picked) == 5:
            break
    assert len(picked) == 5
    return picked


@pytest.fixture(scope="module")
def real_graphs(real_structures) -> dict:
    return {mid: structure_to_graph(s, SETTINGS) for mid, s in real_structures.items()}


# --------------------------------------------------------------------------------------------------
# periodic table


def test_periodic_groups_and_layout():
    assert [interp.periodic_group(z) for z in (1, 2, 3, 4, 5, 10, 19, 26, 36, 55, 57, 70, 71, 72, 86, 92)] == [
        1, 18, 1, 2, 13, 18, 1, 8, 18, 1, 0, 0, 3, 4, 18, 0,
    ]  # fmt: skip
    assert interp.periodic_position(1) == (0, 0)
    assert interp.periodic_position(2) == (0, 17)
    assert interp.periodic_position(8) == (1, 15)
    assert interp.periodic_position(26) == (3, 7)
    assert interp.periodic_position(71) == (5, 2)  # Lu in group 3
    assert interp.periodic_position(57) == (8, 2)  # La starts the f row below the table
    assert interp.periodic_position(92) == (9, 5)  # U
    positions = [interp.periodic_position(z) for z in range(1, 101)]
    assert len(set(positions)) == 100  # no two elements share a cell
    assert {r for r, _ in positions} == {0, 1, 2, 3, 4, 5, 6, 8, 9}  # row 7 is the gap
    assert all(0 <= c < 18 for _, c in positions)
    with pytest.raises(Exception):
        interp.periodic_position(0)


def test_groups_agree_with_the_input_encoding():
    """The encoding's group block (bit 0 = f block) is the group the element map colours by."""
    table = element_feature_table()
    for z in range(1, 101):
        assert int(np.argmax(table[z, :19])) == interp.periodic_group(z), z


def test_covalent_radius_is_the_encodings():
    assert interp.covalent_radius(8) == pytest.approx(0.63)
    assert interp.covalent_radius(3) == pytest.approx(1.33)
    assert interp.bond_cutoffs(1.3)[3] == pytest.approx(1.3 * (1.33 + 0.63))


# --------------------------------------------------------------------------------------------------
# projections


def test_pca_shapes_and_degenerate_inputs():
    rng = np.random.default_rng(0)
    coords, ratio = interp.pca_2d(rng.normal(size=(30, 64)))
    assert coords.shape == (30, 2) and ratio.shape == (2,)
    assert ratio[0] >= ratio[1] > 0 and ratio.sum() <= 1
    coords, ratio = interp.pca_2d(rng.normal(size=(5, 1)))
    assert coords.shape == (5, 2) and np.all(coords[:, 1] == 0)
    with pytest.raises(Exception):
        interp.pca_2d(np.zeros((1, 64)))


def test_tsne_subsamples():
    vectors = np.random.default_rng(0).normal(size=(80, 8))
    coords, index = interp.tsne_2d(vectors, max_points=40, seed=1)
    assert coords.shape == (40, 2)
    assert len(set(index)) == 40 and np.all(np.diff(index) > 0)
    coords, index = interp.tsne_2d(vectors[:20], max_points=40)
    assert coords.shape == (20, 2) and list(index) == list(range(20))


def test_pearson():
    x = np.arange(10.0)
    assert interp.pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert interp.pearson(x, -x) == pytest.approx(-1.0)
    assert np.isnan(interp.pearson(x, np.ones(10)))


# --------------------------------------------------------------------------------------------------
# element map


def test_element_map_uses_the_embedding(tiny_model):
    zs = [8, 3, 26, 3, 15, 8, 27]
    emap = interp.element_map(tiny_model, zs)
    assert emap.table["Z"].tolist() == [3, 8, 15, 26, 27]
    assert emap.table["element"].tolist() == ["Li", "O", "P", "Fe", "Co"]
    assert emap.vectors.shape == (5, 16)
    with torch.no_grad():
        expected = tiny_model.embedding(torch.from_numpy(np.array(element_feature_table()[[3, 8, 15, 26, 27]]))).numpy()
    np.testing.assert_allclose(emap.vectors, expected, rtol=1e-6)
    assert emap.table[["pc1", "pc2"]].shape == (5, 2)
    r = emap.pc_radius_r
    assert set(r) == {"pc1_covalent_radius_r", "pc2_covalent_radius_r"}
    assert all(-1 <= v <= 1 for v in r.values())
    assert emap.table["covalent_radius"].tolist() == pytest.approx([1.33, 0.63, 1.11, 1.16, 1.11])


# --------------------------------------------------------------------------------------------------
# oxygen environments


def test_rock_salt_oxygen_environments():
    graph = structure_to_graph(rocksalt(4.2, "Mg"), SETTINGS)  # Mg-O 2.1, O-O 2.97 Angstrom
    z = graph.atomic_numbers
    counts = interp.oxygen_neighbour_counts(graph)
    assert np.all(counts[z == 12] == 6) and np.all(counts[z == 8] == 0)
    assert interp.oxygen_environment_mask(graph).tolist() == (z == 12).tolist()
    # The loose reading (any of the 12 graph neighbours) also counts O's six O neighbours.
    loose = interp.oxygen_neighbour_counts(graph, bond_tolerance=None)
    assert np.all(loose[z == 12] == 6) and np.all(loose[z == 8] == 6)
    # A tolerance too small for the 2.1 Angstrom bond leaves no environment.
    assert not interp.oxygen_environment_mask(graph, bond_tolerance=1.0).any()


def test_oxygen_neighbours_match_a_brute_force_search(real_structures, real_graphs):
    cutoffs = interp.bond_cutoffs(interp.DEFAULT_BOND_TOLERANCE)
    for mid, structure in real_structures.items():
        counts = interp.oxygen_neighbour_counts(real_graphs[mid])
        expected = [
            sum(1 for n in structure.get_neighbors(site, cutoffs[site.specie.Z]) if n.specie.symbol == "O")
            for site in structure
        ]
        assert counts.tolist() == expected, mid
        mask = interp.oxygen_environment_mask(real_graphs[mid])
        assert mask.any(), mid  # every oxide has cations with two oxygens
        assert not any(site.specie.symbol == "O" for site, m in zip(structure, mask) if m), mid  # no peroxides here


def test_atom_environments_use_the_models_local_head(tiny_model, real_graphs):
    env = interp.atom_environments(tiny_model, real_graphs, SETTINGS, batch_size=2)
    n_atoms = sum(g.n_atoms for g in real_graphs.values())
    assert len(env.atoms) == n_atoms
    assert env.vectors.shape == (env.n_oxygen_environments, 16)
    assert env.n_oxygen_environments == sum(int(interp.oxygen_environment_mask(g).sum()) for g in real_graphs.values())
    assert list(env.crystals["structure"]) == list(real_graphs)
    with torch.no_grad():
        batch = collate(list(real_graphs.values()), SETTINGS)
        local = tiny_model.local_voltages(batch).numpy()
        vectors = tiny_model.atom_vectors(batch).numpy()
        predicted = tiny_model.predict_volts(batch).numpy()
    np.testing.assert_allclose(env.atoms["local_voltage"], local, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(env.vectors, vectors[env.atoms["oxygen_environment"].to_numpy()], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(env.crystals["predicted"], predicted, rtol=1e-5, atol=1e-5)
    means = env.atoms.groupby("structure", sort=False)["local_voltage"].mean()
    np.testing.assert_allclose(env.crystals.set_index("structure").loc[means.index, "local_mean"], means, rtol=1e-6)
    assert interp.local_head_fidelity(env.crystals) == pytest.approx(np.mean(np.abs(env.crystals["local_mean"] - predicted)))
    assert env.oxygen_atoms["n_oxygen"].min() >= 2

    # Whatever the local head is, the library reads it: a constant head gives constant local voltages.
    changed = CGCNN(tiny_model.config)
    changed.load_state_dict(tiny_model.state_dict())
    changed.eval()
    with torch.no_grad():
        changed.local_head.weight.zero_()
        changed.local_head.bias.fill_(0.5)
    again = interp.atom_environments(changed, real_graphs, SETTINGS)
    np.testing.assert_allclose(again.atoms["local_voltage"], 3.5, rtol=1e-6)


def test_median_local_voltages():
    atoms = pd.DataFrame(
        {"Z": [26, 26, 26, 3, 3, 15], "element": ["Fe", "Fe", "Fe", "Li", "Li", "P"], "local_voltage": [1.0, 2.0, 6.0, 3.0, 4.0, 5.0]}
    )
    table = interp.median_local_voltages(atoms)
    assert table["element"].tolist() == ["Li", "P", "Fe"]
    assert table["n"].tolist() == [2, 1, 3]
    assert table["median"].tolist() == pytest.approx([3.5, 5.0, 2.0])
    assert table["mean"].tolist() == pytest.approx([3.5, 5.0, 3.0])
    assert interp.median_local_voltages(atoms.iloc[:0]).empty


def test_figures_draw(tiny_model, real_graphs):
    from voltmodels import plots

    emap = interp.element_map(tiny_model, [1, 3, 8, 26, 27, 57, 58])
    env = interp.atom_environments(tiny_model, real_graphs, SETTINGS)
    coords, _ = interp.pca_2d(env.vectors)
    medians = interp.median_local_voltages(env.oxygen_atoms)
    for fig in (
        interp.element_map_figure(emap, "elements"),
        interp.environment_figure(coords, env.oxygen_atoms["local_voltage"], env.oxygen_atoms["element"], "environments"),
        interp.periodic_table_figure(medians, "periodic table"),
    ):
        assert fig.axes
        plots.close(fig)


# --------------------------------------------------------------------------------------------------
# entry point


@pytest.fixture(scope="module")
def interpret_run(li_champion) -> str:
    out = run_entry_point("pipelines.interpret", "--ion", "Li", "--max-structures", "150", "--tsne-points", "300", "--seed", "1")
    return out.strip().splitlines()[-1].split()[-1]


def test_entry_point_logs_maps_metrics_and_summary(interpret_run, tmp_path):
    import mlflow

    run = mlflow.get_run(interpret_run)
    assert run.info.status == "FINISHED"
    assert run.data.tags["voltmodels.step"] == "interpret"
    assert run.data.tags["model_uri"] == "models:/voltage-cgcnn-Li@champion"
    metrics = run.data.metrics
    for key in ("pc1_covalent_radius_r", "pc2_covalent_radius_r", "n_oxygen_environments", "local_head_fidelity_mae"):
        assert key in metrics, key
    assert -1 <= metrics["pc1_covalent_radius_r"] <= 1
    assert metrics["n_structures"] == 150
    assert 0 < metrics["n_oxygen_environments"] < metrics["n_oxygen_environments_any_graph_neighbour"] <= metrics["n_atoms"]
    assert metrics["tsne_points"] == min(300, metrics["n_oxygen_environments"])
    names = {f.path for f in mlflow.MlflowClient().list_artifacts(interpret_run)}
    for name in (
        "interpretation.json", "element_map.png", "element_map.csv", "local_env_pca.png", "local_env_tsne.png",
        "local_voltage_periodic_table.png", "local_voltage_by_element.csv", "oxygen_environments.csv.gz",
    ):
        assert name in names, name
    summary = mlflow.artifacts.load_dict(f"runs:/{interpret_run}/interpretation.json")
    assert summary["oxygen_environments"]["count"] == metrics["n_oxygen_environments"]
    assert summary["model_version"]["name"] == "voltage-cgcnn-Li"
    gini = summary["rfr_gini_importances"]
    assert ("rfr_gini_top20.png" in names) == gini["found"]
    if not gini["found"]:
        assert "baselines" in gini["note"]
    local = mlflow.artifacts.download_artifacts(run_id=interpret_run, artifact_path="local_voltage_by_element.csv", dst_path=str(tmp_path))
    table = pd.read_csv(local)
    assert table["n"].sum() == metrics["n_oxygen_environments"]
    assert set(summary["local_voltages"]["median_by_element"]) == set(table["element"])


def test_local_voltages_match_the_served_pyfunc(interpret_run, li_champion, tmp_path):
    """The pyfunc's `local_voltages` output and the logged oxygen-environment table come from one head."""
    import mlflow

    from voltmodels.data.dataset import load_dataset

    path = mlflow.artifacts.download_artifacts(run_id=interpret_run, artifact_path="oxygen_environments.csv.gz", dst_path=str(tmp_path))
    table = pd.read_csv(path)
    mid = table["structure"].iloc[0]
    structure = load_dataset("latest").structures[mid]
    model = mlflow.pyfunc.load_model(li_champion)
    out = model.predict(pd.DataFrame({"structure": [structure.to(fmt="cif")], "working_ion": ["Li"]}), params={"local_voltages": True})
    served = {row["site"]: row["local_voltage"] for row in json.loads(out["local_voltages"].iloc[0])}
    for row in table[table["structure"] == mid].itertuples():
        assert served[row.site] == pytest.approx(row.local_voltage, abs=2e-3)


def test_finds_baseline_gini_importances(li_champion, tmp_path):
    """A finished run tagged with the ion and dataset that holds importance/rfr_gini_top20.csv is picked up."""
    import mlflow

    from pipelines.interpret import find_gini_importances

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("test-interpret-gini")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("test-interpret-gini")
    top = pd.DataFrame({"rank": [1, 2], "feature": ["MagpieData mean CovalentRadius", "density"], "block": ["magpie", "structure"], "importance": [0.2, 0.1]})
    (tmp_path / "importance").mkdir()
    top.to_csv(tmp_path / "importance" / "rfr_gini_top20.csv", index=False)
    run = client.create_run(experiment_id, tags={"ion": "Zz", "dataset_digest": "feedface"})
    client.log_artifacts(run.info.run_id, str(tmp_path / "importance"), "importance")
    client.set_terminated(run.info.run_id)
    info, table, by_property = find_gini_importances("Zz", "feedface")
    assert info["found"] and info["run_id"] == run.info.run_id and info["same_dataset"]
    assert table["feature"].tolist() == top["feature"].tolist() and by_property is None
    info, table, _ = find_gini_importances("Zz", "otherdigest")  # falls back to another dataset's run
    assert info["found"] and not info["same_dataset"]
    info, table, _ = find_gini_importances("Qq", "feedface")
    assert not info["found"] and table is None and "baselines" in info["note"]


def test_bad_ion_and_missing_model_are_one_sentence(li_champion, capsys):
    from pipelines.interpret import main

    with pytest.raises(SystemExit) as exc:
        main(["--ion", "Xx"])
    assert exc.value.code == 2
    assert "Xx" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--ion", "Li", "--model", "models:/voltage-cgcnn-Nope@champion"])
    assert exc.value.code == 2
    assert "does not exist" in capsys.readouterr().err
