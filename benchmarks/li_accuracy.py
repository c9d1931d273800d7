"""Li accuracy table: CGCNN test MAE over seeds and both split strategies, beside the random forest
on the very same splits, plus seconds per epoch.

    python benchmarks/li_accuracy.py --seeds 3 --epochs 120 --patience 25
    python benchmarks/li_accuracy.py --seeds 1 --strategies random      # one run

Hyperparameters: those of `models:/voltage-cgcnn-Li@champion` (its `trial_params` tag) when the
registry has it, else the reference CGCNN defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from voltmodels.machine import machine_line  # noqa: E402
from voltmodels.tracking import results_run  # noqa: E402
from pipelines.common import setup_tracking  # noqa: E402
from voltmodels import baselines, registry, tracking  # noqa: E402
from voltmodels.config import set_torch_threads  # noqa: E402
from voltmodels.data.dataset import load_dataset  # noqa: E402
from voltmodels.featurized import dataset_graphs  # noqa: E402
from voltmodels.graphs.graph import GraphSettings  # noqa: E402
from voltmodels.model import CGCNN  # noqa: E402
from voltmodels.training import build_graph_sets, predict, train  # noqa: E402
from voltmodels.metrics import regression_metrics  # noqa: E402
from voltmodels.tuning import DEFAULT_PARAMS, configs_from_params  # noqa: E402


def champion_params() -> dict:
    version = tracking.champion_version(registry.cgcnn_name("Li"))
    if version is not None and "trial_params" in version.tags:
        return json.loads(version.tags["trial_params"])
    return dict(DEFAULT_PARAMS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="latest")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--strategies", default="random,framework")
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--patience", type=int, default=25)
    p.add_argument("--rf-profile", default="paper")
    args = p.parse_args()
    set_torch_threads()
    print(machine_line())
    setup_tracking()
    dataset = load_dataset(args.dataset)
    settings = GraphSettings()
    graphs, _ = dataset_graphs(dataset, "Li", settings, progress=False)
    features = baselines.dataset_features(dataset, ["Li"], progress=None)
    params = champion_params()
    print(f"dataset {dataset.digest}; CGCNN params {params}")
    rows_out = []
    for strategy in [s.strip() for s in args.strategies.split(",") if s.strip()]:
        for seed in range(args.seeds):
            rows = dataset.split("Li", strategy, repeat=seed)
            sets = build_graph_sets(rows, graphs)
            model_config, train_config = configs_from_params(params, args.epochs, args.patience, seed, settings.n_edge_features)
            started = time.perf_counter()
            result = train(CGCNN(model_config), sets["train"], sets["val"], settings, train_config, progress=False)
            cgcnn_mae = regression_metrics(sets["test"].targets, predict(result.model, sets["test"], settings))["mae"]
            train_rows, test_rows = rows[rows.split == "train"], rows[rows.split == "test"]
            X, y = baselines.features_and_targets(train_rows, features)
            rf = baselines.fit_method("rfr", X, y, profile=args.rf_profile, seed=seed)
            Xt, yt = baselines.features_and_targets(test_rows, features)
            rf_mae = float(np.mean(np.abs(rf.model.predict(Xt) - yt)))
            rows_out.append(
                {"split": strategy, "seed": seed, "cgcnn_test_mae": cgcnn_mae, "rfr_test_mae": rf_mae, "epochs": len(result.history),
                 "best_epoch": result.best_epoch, "s_per_epoch": result.seconds_per_epoch, "train_s": time.perf_counter() - started}
            )
            print(rows_out[-1], flush=True)
    table = pd.DataFrame(rows_out)
    print("\n" + table.round(3).to_markdown(index=False))
    summary = table.groupby("split").agg(cgcnn_mean=("cgcnn_test_mae", "mean"), cgcnn_std=("cgcnn_test_mae", "std"), rfr_mean=("rfr_test_mae", "mean"), rfr_std=("rfr_test_mae", "std"), s_per_epoch=("s_per_epoch", "mean"))
    print("\n" + summary.round(3).to_markdown())


if __name__ == "__main__":
    with results_run("li_accuracy"):
        main()
