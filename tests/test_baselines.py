"""Conventional-ML baselines: feature cache, fitting, the `baselines` entry point, the served pyfunc."""

from __future__ import annotations

import gzip
import json
import shutil
import types
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tests.conftest import rocksalt
from voltmodels import baselines as bl
from voltmodels.config import VoltmodelsError
from voltmodels.data.dataset import ELECTRODES, load_dataset

ION = "K"  # 109 curated electrodes: small enough to be quick, large enough to beat a mean predictor


@pytest.fixture(scope="module")
def curate_run(snapshot_dir) -> str:
    """The real snapshot curated for K only: a curate run in the session's isolated tracking store."""
    from pipelines.curate import main as curate

    return curate(["--snapshot", str(snapshot_dir), "--ions", ION])


@pytest.fixture(scope="module")
def dataset(curate_run):
    return load_dataset(curate_run)


@pytest.fixture(scope="module")
def features(dataset, tmp_path_factory):
    return bl.dataset_features(dataset, [ION], cache=bl.FeatureCache(tmp_path_factory.mktemp("features")))


def test_feature_cache_round_trip(tmp_path):
    structures = {"a": rocksalt(4.2, "Co"), "b": rocksalt(4.4, "Ni"), "a_again": rocksalt(4.2, "Co")}
    structures["a_again"].replace(0, "Li")  # different content from "a"
    cache = bl.FeatureCache(tmp_path)
    first = cache.get_many(structures)
    assert cache.last_featurized == 3 and cache.path.is_file() and cache.path.parent == tmp_path
    assert list(first.index) == ["a", "b", "a_again"] and list(first.columns) == bl.feature_names()
    assert len(bl.feature_names()) > 140  # Magpie (132) + the other blocks
    # A fresh cache object reads everything back: nothing is featurized, values are identical.
    again = bl.FeatureCache(tmp_path)
    second = again.get_many({"b": rocksalt(4.4, "Ni"), "a": rocksalt(4.2, "Co")})
    assert again.last_featurized == 0
    pd.testing.assert_frame_equal(second, first.loc[["b", "a"]])
    # The cached row equals what the served models compute, uncached.
    np.testing.assert_allclose(bl.featurize_structures([rocksalt(4.2, "Co")])[0], first.loc["a"].to_numpy(), equal_nan=True)
    # Only new content is featurized; the key names the feature set.
    again.get_many({"c": rocksalt(4.6, "Fe"), "a": rocksalt(4.2, "Co")})
    assert again.last_featurized == 1 and len(again) == 4
    assert bl.feature_set_key() in cache.path.name


def test_pipelines_fit_and_beat_a_mean_predictor(dataset, features):
    rows = dataset.split(ION, "random", 0)
    train, test = rows[rows["split"] == "train"], rows[rows["split"] == "test"]
    X_train, y_train = bl.features_and_targets(train, features)
    X_test, y_test = bl.features_and_targets(test, features)
    X_train[0, :5] = np.nan  # missing values are imputed inside the pipeline
    mean_mae = float(np.abs(y_test - y_train.mean()).mean())
    for method in bl.METHODS:
        fit = bl.fit_method(method, X_train, y_train, profile="quick", seed=0)
        assert [name for name, _ in fit.model.steps] == ["impute", "scale", "model"]
        mae = float(np.abs(fit.model.predict(X_test) - y_test).mean())
        assert mae < 0.8 * mean_mae, (method, mae, mean_mae)
        assert fit.best_params and np.isfinite(fit.cv_mae)
    importances = bl.gini_importances(fit.model)
    assert len(importances) == 20 and importances["importance"].is_monotonic_decreasing
    assert set(importances["feature"]) <= set(bl.feature_names())


def test_metric_names_shared_with_transfer_runs():
    assert bl.metric_name("rfr", "test_mae_mean") == "rfr_test_mae_mean"
    assert bl.metric_name("svr", "test_mae_std", "framework") == "framework_svr_test_mae_std"


def test_bad_ions_are_one_sentence(dataset):
    with pytest.raises(VoltmodelsError, match="Unknown working ion 'Xx'"):
        bl.check_ion(dataset, "Xx")
    with pytest.raises(VoltmodelsError, match="no electrodes for working ion 'Mg'"):
        bl.check_ion(dataset, "Mg")
    small = types.SimpleNamespace(table=pd.DataFrame({"working_ion": ["Cs"] * 12}), digest="d", ions=["Cs"])
    with pytest.raises(VoltmodelsError, match=r"only 12 curated electrodes .* at least 20"):
        bl.check_ion(small, "Cs")


def test_entry_point_rejects_bad_params(dataset, tmp_path, capsys):
    from pipelines.baselines import main

    # A dataset folder whose K has only 10 rows.
    folder = tmp_path / "small"
    shutil.copytree(dataset.folder, folder)
    table = pd.read_csv(folder / ELECTRODES)
    table.head(10).to_csv(folder / ELECTRODES, index=False)
    for argv, message in [
        (["--ion", "Xx", "--dataset", str(dataset.folder)], "error: Unknown working ion 'Xx'"),
        (["--ion", ION, "--dataset", str(folder)], "error: Working ion K has only 10 curated electrodes"),
        (["--ion", ION, "--dataset", str(dataset.folder), "--profile", "huge"], "error: Unknown profile 'huge'"),
        (["--ion", ION, "--dataset", str(dataset.folder), "--split", "time"], "error: Unknown split 'time'"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(message) and err.count("\n") == 0, err


@pytest.fixture(scope="module")
def baselines_run(curate_run):
    from pipelines.baselines import main

    return main(["--ion", ION, "--dataset", curate_run, "--profile", "quick", "--n-repeats", "2"])


def test_entry_point_logs_metrics_artifacts_and_registers(baselines_run, dataset):
    client = MlflowClient()
    parent = client.get_run(baselines_run)
    assert parent.data.tags["voltmodels.step"] == "baselines"
    assert [a.path for a in client.list_artifacts(baselines_run)] == ["comparison.csv"]
    comparison = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=baselines_run, artifact_path="comparison.csv"))
    assert {"ion", "split", "method", "mae_mean", "mae_std"} <= set(comparison.columns)
    assert len(comparison) == 6  # 2 splits x 3 methods

    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{baselines_run}'")
    assert len(children) == 1
    child = children[0]
    assert child.data.tags["ion"] == ION and child.data.tags["dataset_digest"] == dataset.digest
    metrics = child.data.metrics
    for method in bl.METHODS:
        for prefix in ("", "framework_"):
            for quantity in ("test_mae_mean", "test_mae_std", "test_rmse_mean", "test_r2_mean"):
                assert np.isfinite(metrics[f"{prefix}{method}_{quantity}"])
    assert metrics["n_train"] > metrics["n_test"] > 0
    artifacts = {a.path for folder in ("plots", "importance") for a in client.list_artifacts(child.info.run_id, folder)}
    assert {"plots/parity_random_test.png", "plots/parity_framework_test.png", "importance/rfr_gini_top20.png", "importance/rfr_gini_top20.csv"} <= artifacts

    for method in bl.METHODS:
        version = client.get_model_version_by_alias(f"voltage-{method}-{ION}", "champion")
        assert version.tags["dataset_digest"] == dataset.digest
        assert float(version.tags["test_mae_mean"]) == pytest.approx(metrics[f"{method}_test_mae_mean"], abs=1e-5)
        assert "test_mae_std" in version.tags and json.loads(version.tags["hyperparameters"])


def test_logged_pyfunc_predicts_from_cif_and_rejects_bad_rows(baselines_run, dataset, snapshot_dir, features):
    model = mlflow.pyfunc.load_model(f"models:/voltage-rfr-{ION}@champion")
    with gzip.open(snapshot_dir / "mp_electrode_structures_cif.json.gz", "rt") as fh:
        cifs = json.load(fh)
    rows = dataset.rows(ION).head(3)
    request = pd.DataFrame({"structure": [cifs[i] for i in rows["id_discharge"]], "working_ion": ION})
    out = model.predict(request)
    assert list(out.columns) == ["voltage", "model_name"] and len(out) == 3
    assert set(out["model_name"]) == {f"voltage-rfr-{ION}"}
    # Same features as training: the served prediction (from CIF text) equals the fitted pipeline's
    # prediction on the cached training features (from the curated structures).
    local = Path(mlflow.artifacts.download_artifacts(f"models:/voltage-rfr-{ION}@champion"))
    from serving.packaging import load_estimator

    fitted = load_estimator(next(local.rglob("pipeline.skops")))  # skops, not a pickle
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("*.joblib"))
    expected = fitted.predict(features.loc[rows["id_discharge"]].to_numpy())
    np.testing.assert_allclose(out["voltage"].to_numpy(), expected, rtol=1e-6, atol=1e-6)

    bad = pd.DataFrame({"structure": ["not a cif", cifs[rows["id_discharge"].iloc[0]]], "working_ion": [ION, "Li"]})
    with pytest.raises(MlflowException) as info:
        model.predict(bad)
    message = str(info.value)
    assert "row 0" in message and "row 1" in message and "'Li' is not supported" in message
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
