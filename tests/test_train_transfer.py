"""train_li and transfer entry points on the quick profile, against the session's tracking store."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, run_entry_point
from voltmodels import tracking


def test_train_li_registers_a_champion_with_metrics(li_champion):
    version = MlflowClient().get_model_version_by_alias("voltage-cgcnn-Li", "champion")
    for tag in ("val_mae", "test_mae", "dataset_digest", "trial_params"):
        assert tag in version.tags
    run = mlflow.get_run(version.tags["run_id"])
    assert run.data.metrics["test_mae"] > 0
    assert {"parity_Li_cgcnn.png", "optuna_history.png"} <= {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}
    children = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'", output_format="list")
    assert len(children) >= 1 and all("val_mae" in c.data.metrics for c in children)


def test_champion_moves_only_on_better_validation(li_champion):
    champion = tracking.champion_version("voltage-cgcnn-Li")
    uri = f"models:/voltage-cgcnn-Li/{champion.version}"
    worse, moved = tracking.register(uri, "voltage-cgcnn-Li", float(champion.tags["val_mae"]) + 1.0, {"note": "worse"})
    assert not moved and tracking.champion_version("voltage-cgcnn-Li").version == champion.version
    better, moved = tracking.register(uri, "voltage-cgcnn-Li", float(champion.tags["val_mae"]) - 0.01, {"note": "better"})
    assert moved and tracking.champion_version("voltage-cgcnn-Li").version == better
    # A val_mae under another selection rule (a mean over splits) is not compared: it replaces the champion.
    rule = {"selection_rule": "mean val_mae over 5 random splits", "dataset_digest": champion.tags["dataset_digest"]}
    other, moved = tracking.register(uri, "voltage-cgcnn-Li", float(champion.tags["val_mae"]) + 1.0, rule)
    assert moved and tracking.champion_version("voltage-cgcnn-Li").version == other
    MlflowClient().set_registered_model_alias("voltage-cgcnn-Li", "champion", champion.version)  # restore for other tests


@pytest.fixture(scope="session")
def mg_transfer(li_champion):
    run_entry_point("pipelines.transfer", "--ion", "Mg", "--profile", "quick", "--n-repeats", "2", "--epochs", "3")
    return mlflow.search_runs(search_all_experiments=True, filter_string="tags.`voltmodels.step` = 'transfer' and tags.ion = 'Mg'", output_format="list")[0]


def test_transfer_logs_every_method_on_both_splits(mg_transfer):
    metrics = mg_transfer.data.metrics
    for prefix in ("", "framework_"):
        for method in ("li_direct", "scratch", "freeze", "finetune"):
            assert f"{prefix}{method}_test_mae_mean" in metrics
            assert f"{prefix}{method}_test_mae_std" in metrics
    history = MlflowClient().get_metric_history(mg_transfer.info.run_id, "freeze_test_mae")
    assert len(history) == 2  # one per repeat
    artifacts = {a.path for a in MlflowClient().list_artifacts(mg_transfer.info.run_id)}
    assert {"comparison_Mg.csv", "parity_Mg_random.png"} <= artifacts


def test_transfer_registers_an_ion_champion(mg_transfer):
    champion = tracking.champion_version("voltage-cgcnn-Mg")
    assert champion is not None
    assert champion.tags["mode"] in ("scratch", "freeze", "finetune")
    versions = MlflowClient().search_model_versions("name = 'voltage-cgcnn-Mg'")
    assert {v.tags["mode"] for v in versions} == {"scratch", "freeze", "finetune"}
    best = min(versions, key=lambda v: float(v.tags["val_mae"]))
    assert champion.version == best.version  # the champion is whichever wins on validation
    transferred = [v for v in versions if v.tags["mode"] != "scratch"]
    assert all(v.tags["base_model"] == "models:/voltage-cgcnn-Li@champion" for v in transferred)
    model = mlflow.pyfunc.load_model("models:/voltage-cgcnn-Mg@champion")
    assert model.metadata.get_input_schema().input_names() == ["structure", "working_ion"]


def run_transfer(*args):
    return subprocess.run([sys.executable, "-m", "pipelines.transfer", *args], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ion", "Unobtainium"], "Unknown working ion 'Unobtainium'"),
        (["--ion", "Mg", "--base-model", "models:/no-such-model@champion"], "does not exist in the registry"),
    ],
)
def test_transfer_bad_params_are_one_sentence(li_champion, args, message):
    proc = run_transfer(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_transfer_refuses_an_ion_with_too_few_electrodes(tmp_path):
    from pipelines.transfer import parse_args, transfer_ion
    from tests.conftest import fixture_electrodes
    from voltmodels.config import VoltmodelsError
    from voltmodels.data.curation import curate
    from voltmodels.data.dataset import CuratedDataset, save_dataset
    from voltmodels.data.sources import RawElectrodes
    from voltmodels.tuning import profile

    table, structures = fixture_electrodes(n_per_ion=12, ions=("Li", "Mg"))
    save_dataset(curate(RawElectrodes(table, structures, "test")), tmp_path / "dataset", "test")
    dataset = CuratedDataset(tmp_path / "dataset")
    with pytest.raises(VoltmodelsError, match="Working ion Mg has only 12 electrodes"):
        transfer_ion("Mg", dataset, None, None, parse_args(["--ion", "Mg"]), profile("quick"))


def test_transfer_with_the_shared_multi_ion_model(li_champion):
    """-P multi_ion=true: one shared model per split, compared as is and fine-tuned, and registered."""
    run_entry_point("pipelines.transfer", "--ion", "Al", "--profile", "quick", "--n-repeats", "1", "--epochs", "2", "--split", "random", "--multi-ion", "true")
    run = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`voltmodels.step` = 'transfer' and tags.ion = 'Al'", output_format="list")[0]
    for method in ("li_direct", "scratch", "freeze", "finetune", "multi_direct", "multi_finetune"):
        assert f"{method}_test_mae_mean" in run.data.metrics
    versions = MlflowClient().search_model_versions("name = 'voltage-cgcnn-Al'")
    multi = [v for v in versions if v.tags["mode"] in ("multi_direct", "multi_finetune")]
    assert len(multi) == 2 and all("multi-ion" in v.tags["base_model"] for v in multi)
    # Another ion in a later run: the shared model of the split comes from the disk cache.
    run_entry_point("pipelines.transfer", "--ion", "Rb", "--profile", "quick", "--n-repeats", "1", "--epochs", "2", "--split", "random", "--multi-ion", "true",
                    "--register", "false")
    later = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`voltmodels.step` = 'transfer' and tags.ion = 'Rb'", output_format="list")[0]
    assert later.data.tags["multi_ion_model_random_0"] == "reused from the cache"
    assert later.data.metrics["multi_direct_test_mae_mean"] > 0


def test_the_shared_multi_ion_model_is_trained_once_per_key(tmp_path):
    from tests.conftest import fixture_electrodes
    from voltmodels.data.curation import curate
    from voltmodels.data.dataset import CuratedDataset, save_dataset
    from voltmodels.data.sources import RawElectrodes
    from voltmodels.featurized import dataset_graphs
    from voltmodels.graphs.graph import GraphSettings
    from voltmodels.model import CGCNNConfig
    from voltmodels.training import TrainConfig
    from voltmodels.transfer import shared_multi_ion_model

    table, structures = fixture_electrodes(n_per_ion=25, ions=("Li", "Mg"))
    save_dataset(curate(RawElectrodes(table, structures, "test")), tmp_path / "dataset", "test")
    dataset, settings = CuratedDataset(tmp_path / "dataset"), GraphSettings()
    graphs, _ = dataset_graphs(dataset, None, settings, progress=False)
    config, train_config = CGCNNConfig(atom_fea_len=8, h_fea_len=8, n_conv=1), TrainConfig(epochs=1, batch_size=16, device="cpu")
    first, reused_first = shared_multi_ion_model(dataset, graphs, config, settings, train_config, "random", 0, tmp_path / "cache")
    again, reused_again = shared_multi_ion_model(dataset, graphs, config, settings, train_config, "random", 0, tmp_path / "cache")
    assert (reused_first, reused_again) == (False, True)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    _, other_repeat = shared_multi_ion_model(dataset, graphs, config, settings, train_config, "random", 1, tmp_path / "cache")
    _, other_config = shared_multi_ion_model(dataset, graphs, config, settings, TrainConfig(epochs=2, batch_size=16, device="cpu"), "random", 0, tmp_path / "cache")
    assert not other_repeat and not other_config
    assert len(list((tmp_path / "cache").glob("multi_ion_*.pt"))) == 3


def test_the_selected_method_is_chosen_on_validation_not_on_test():
    import pandas as pd

    from voltmodels.metrics import summarize
    from voltmodels.transfer import with_selected

    rows = [  # per repeat: scratch wins on validation, finetune would win on test
        {"ion": "Mg", "split": "random", "repeat": r, "method": m, "val_mae": v, "test_mae": t, "test_rmse": t, "test_r2": 0.5}
        for r in (0, 1) for m, v, t in (("li_direct", 0.1, 0.1), ("scratch", 0.2, 0.4), ("finetune", 0.3, 0.3))
    ]
    table = with_selected(pd.DataFrame(rows))
    picked = table[table["method"] == "selected"]
    assert list(picked["selected_method"]) == ["scratch", "scratch"]  # li_direct is not a registered candidate
    assert summarize(table).set_index("method").loc["selected", "mae_mean"] == pytest.approx(0.4)
