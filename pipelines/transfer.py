"""Entry point `transfer`: Li CGCNN -> another ion, compared on the same splits with Li-direct,
scratch, fine-tuning and the SVR/KRR/RFR baselines; the best transferred model is registered."""

from __future__ import annotations

import argparse
import re
import sys

import mlflow
import numpy as np
import pandas as pd

from pipelines.common import as_int, STEP_TAG, main_guard, step_run
from pipelines.evaluation import log_final_model
from voltmodels import plots
from voltmodels.config import VoltmodelsError, cache_dir, parse_ions, set_torch_threads
from voltmodels.data.dataset import load_dataset
from voltmodels.featurized import dataset_graphs
from voltmodels.metrics import summarize
from voltmodels.model import CGCNN
from voltmodels.tracking import DEFAULT_SELECTION_RULE, finished_runs, load_cgcnn, trial_params
from voltmodels.training import build_graph_sets
from voltmodels.transfer import (
    METHODS, MIN_ROWS, MULTI_METHODS, REGISTERED_METHODS, TRANSFER_MODES, TransferConfig, compare_methods, shared_multi_ion_model, transfer_config, with_selected,
)
from voltmodels.tuning import profile

SPLITS = ("random", "framework")
MULTI_BASE = "shared multi-ion CGCNN of the split (every ion's training rows; see the multi_ion_model_* run tags)"
BASELINE_METRIC = re.compile(r"^(framework_)?(svr|krr|rfr)_test_mae_(mean|std)$")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ion", required=True, help="working ion, a comma list (Mg,Ca), or 'all' for every non-Li ion of the dataset")
    p.add_argument("--base-model", default="models:/voltage-cgcnn-Li@champion")
    p.add_argument("--mode", default="both", choices=["freeze", "finetune", "both"])
    p.add_argument("--dataset", default="latest")
    p.add_argument("--profile", default="quick", choices=["quick", "paper"])
    p.add_argument("--n-repeats", type=as_int, default=0, help="seeded splits; 0: the profile's")
    p.add_argument("--epochs", type=as_int, default=0, help="0: the profile's")
    p.add_argument("--lr-freeze", type=float, default=TransferConfig.lr_freeze)
    p.add_argument("--lr-finetune", type=float, default=TransferConfig.lr_finetune)
    p.add_argument("--split", default="both", choices=["random", "framework", "both"])
    p.add_argument("--seed", type=as_int, default=0)
    p.add_argument("--register", default="true", choices=["true", "false"])
    p.add_argument("--upstream", default="", help="run id of the step that registered the base model (recorded; main's reuse key)")
    p.add_argument("--multi-ion", default="false", choices=["true", "false"],
                   help="also train a shared multi-ion CGCNN per split and compare it as is and fine-tuned (costly on CPU)")
    return p.parse_args(argv)


def baseline_metrics(ion: str, digest: str) -> dict[str, float]:
    """MAE mean/std of the latest baselines run for this ion and dataset, when one exists."""
    runs = finished_runs(f"tags.ion = '{ion}' and tags.dataset_digest = '{digest}'")
    for run in runs:
        found = {k: v for k, v in run.data.metrics.items() if BASELINE_METRIC.match(k)}
        if found:
            return found
    return {}


def baseline_rows(ion: str, digest: str) -> pd.DataFrame:
    """The baselines' MAE mean/std per split as comparison-table rows (empty when none ran)."""
    metrics = baseline_metrics(ion, digest)
    rows = []
    for name, value in metrics.items():
        match = BASELINE_METRIC.match(name)
        if match.group(3) == "mean":
            split = (match.group(1) or "random_").rstrip("_")
            rows.append({"ion": ion, "split": split, "method": match.group(2), "mae_mean": value, "mae_std": metrics.get(name.replace("_mean", "_std"), np.nan)})
    return pd.DataFrame(rows, columns=["ion", "split", "method", "mae_mean", "mae_std"])


def multi_ion_model(dataset, base: CGCNN, settings, config: TransferConfig, strategy: str, repeat: int, cache: dict) -> CGCNN:
    """The shared multi-ion model of one split: trained once per run (and kept on disk for later runs)."""
    if "graphs" not in cache:
        cache["graphs"], _ = dataset_graphs(dataset, None, settings, progress=False)  # every ion's, once per run
    if (strategy, repeat) not in cache:
        model, reused = shared_multi_ion_model(dataset, cache["graphs"], base.config, settings, config.multi_train_config(repeat), strategy, repeat, cache_dir() / "multi_ion")
        mlflow.set_tag(f"multi_ion_model_{strategy}_{repeat}", "reused from the cache" if reused else "trained")
        cache[(strategy, repeat)] = model
    return cache[(strategy, repeat)]


def transfer_ion(ion, dataset, base, settings, args, prof, multi_cache: dict | None = None) -> dict:
    multi_cache = {} if multi_cache is None else multi_cache  # shared multi-ion models per (split, repeat), and all graphs
    rows_all = dataset.rows(ion)
    if len(rows_all) < MIN_ROWS:
        raise VoltmodelsError(f"Working ion {ion} has only {len(rows_all)} electrodes in dataset {dataset.digest}; transfer needs at least {MIN_ROWS}.")
    graphs, errors = dataset_graphs(dataset, ion, settings, progress=False)
    methods = [m for m in METHODS if args.mode == "both" or m not in TRANSFER_MODES or m == args.mode]
    config = transfer_config(args.epochs or prof.transfer_epochs, prof.patience, args.seed, trial_params(args.base_model), lr_freeze=args.lr_freeze, lr_finetune=args.lr_finetune)
    n_repeats = args.n_repeats or prof.n_repeats
    splits = SPLITS if args.split == "both" else (args.split,)
    mlflow.set_tags({"ion": ion, "dataset_digest": dataset.digest, "base_model": args.base_model, "mode": args.mode})
    mlflow.log_metrics({"n_electrodes": len(rows_all), "n_graph_errors": len(errors), "n_repeats": n_repeats})
    records, keep = [], {}
    for strategy in splits:
        prefix = "" if strategy == "random" else f"{strategy}_"
        for repeat in range(n_repeats):
            rows = dataset.split(ion, strategy, repeat)
            sets = build_graph_sets(rows, graphs)
            if min(len(sets["train"]), len(sets["val"]), len(sets["test"])) < 2:
                raise VoltmodelsError(f"Working ion {ion} has too few electrodes for a {strategy} train/val/test split ({len(rows_all)} rows).")
            pairs = {}
            multi = multi_ion_model(dataset, base, settings, config, strategy, repeat, multi_cache) if args.multi_ion == "true" else None
            for outcome in compare_methods(methods + list(MULTI_METHODS if multi is not None else ()), base, sets, settings, config, multi):
                records.append(outcome.record(ion=ion, split=strategy, repeat=repeat))
                mlflow.log_metric(f"{prefix}{outcome.method}_test_mae", outcome.test_metrics["mae"], step=repeat)
                pairs[outcome.method] = (sets["test"].targets, outcome.test_pred)
                if strategy == "random" and repeat == 0 and outcome.method in REGISTERED_METHODS:
                    keep[outcome.method] = (outcome.model, sets, rows)
            if repeat == 0:
                fig = plots.parity_plot(pairs, f"{ion} test, {strategy} split")
                mlflow.log_figure(fig, f"parity_{ion}_{strategy}.png")
                plots.close(fig)
    table = with_selected(pd.DataFrame(records))
    summary = summarize(table)
    for row in summary.itertuples():
        prefix = "" if row.split == "random" else f"{row.split}_"
        mlflow.log_metrics({f"{prefix}{row.method}_test_mae_mean": row.mae_mean, f"{prefix}{row.method}_test_mae_std": 0.0 if np.isnan(row.mae_std) else row.mae_std, f"{prefix}{row.method}_test_rmse_mean": row.rmse_mean, f"{prefix}{row.method}_test_r2_mean": row.r2_mean})
    baselines = baseline_rows(ion, dataset.digest)
    if not baselines.empty:
        summary = pd.concat([summary, baselines[baselines["split"].isin(splits)]], ignore_index=True)
    mlflow.log_table(summary, f"comparison_{ion}.json")
    mlflow.log_text(summary.to_csv(index=False), f"comparison_{ion}.csv")
    mlflow.log_text(table.to_csv(index=False), f"per_repeat_{ion}.csv")
    versions = {}
    if args.register == "true":
        for method, (model, sets, rows) in keep.items():
            versions[method] = log_final_model(
                model, ion, sets, settings, dataset, rows, method=method, metric_prefix=f"{method}_final_",
                selection_val_mae=float(summary.query("split == 'random' and method == @method")["val_mae_mean"].iloc[0]),
                tags={
                    "base_model": {"scratch": "none", "multi_direct": MULTI_BASE, "multi_finetune": MULTI_BASE}.get(method, args.base_model),
                    "mode": method,
                    "frozen_layers": "embedding,convs" if method == "freeze" else "none",
                    "selection_rule": DEFAULT_SELECTION_RULE if n_repeats == 1 else f"mean val_mae over {n_repeats} random splits",
                },
            )
    return {"summary": summary, "versions": versions}


@main_guard
def main(argv=None) -> str:
    args = parse_args(argv)
    set_torch_threads()
    prof = profile(args.profile)
    with step_run("transfer", vars(args)) as parent:
        dataset = load_dataset(args.dataset)
        base, settings = load_cgcnn(args.base_model)
        ions = parse_ions(args.ion, every=[i for i in dataset.ions if i != "Li"])
        for ion in ions:
            if ion not in dataset.ions:
                raise VoltmodelsError(f"Unknown working ion {ion!r}; dataset {dataset.digest} has {', '.join(dataset.ions)}.")
        summaries, multi_cache = [], {}
        for ion in ions:
            if len(ions) == 1:
                result = transfer_ion(ion, dataset, base, settings, args, prof, multi_cache)
            else:
                with mlflow.start_run(run_name=f"transfer-{ion}", nested=True):
                    mlflow.set_tag(STEP_TAG, "transfer_ion")
                    try:
                        result = transfer_ion(ion, dataset, base, settings, args, prof, multi_cache)
                    except VoltmodelsError as exc:  # one ion too small to split must not stop the others
                        mlflow.set_tag("skipped", str(exc))
                        print(f"skipping {ion}: {exc}", file=sys.stderr)
                        continue
            summaries.append(result["summary"])
            print(result["summary"].to_string(index=False))
        if not summaries:
            raise VoltmodelsError(f"No ion of {', '.join(ions)} could be transferred; see the skipped tags of the ion runs.")
        combined = pd.concat(summaries, ignore_index=True)
        mlflow.log_text(combined.to_csv(index=False), "comparison.csv")
    return parent.info.run_id


if __name__ == "__main__":
    main()
