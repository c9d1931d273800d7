"""Entry point `baselines`: SVR, KRR and random-forest baselines per working ion, registered as pyfunc models.

One parent run per invocation; a nested run per ion with per-split metrics (`rfr_test_mae_mean`,
`framework_rfr_test_mae_mean`, ...), parity plots, the random-forest Gini importances and one logged
pyfunc model per method, fitted on the train rows of random repeat 0 and registered as
`voltage-<method>-<ion>` (validation MAE decides `@champion`). The parent holds `comparison.csv`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd

from pipelines.common import check_profile, main_guard, step_run
from voltmodels import baselines as bl
from voltmodels import plots
from voltmodels.config import SUPPORTED_IONS, VoltmodelsError, parse_ions
from voltmodels.data.curation import SPLIT_STRATEGIES
from voltmodels.data.dataset import load_dataset
from voltmodels.registry import baseline_name
from voltmodels.tracking import DEFAULT_SELECTION_RULE, register

STEP = "baselines"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ion", default="Li", help="a working ion, a comma-separated list, or 'all' (every ion of the dataset)")
    p.add_argument("--dataset", default="latest", help="curate run id, dataset folder, or 'latest'")
    p.add_argument("--profile", default="quick", help="quick (small grids, 2 repeats) or paper (wider searches, 5 repeats)")
    p.add_argument("--n-repeats", type=lambda v: int(float(v)), default=0, help="seeded splits per strategy; 0 = the profile's default")
    p.add_argument("--split", default="both", help="random, framework or both")
    p.add_argument("--seed", type=lambda v: int(float(v)), default=0)
    p.add_argument("--methods", default=",".join(bl.METHODS), help="comma-separated subset of svr,krr,rfr")
    p.add_argument("--no-register", action="store_true", help="log the models but do not register them")
    return p.parse_args(argv)


def resolve_ions(value: str, dataset) -> list[str]:
    """Ions to run; `all` skips (with a note) ions below the row minimum, an explicit ion raises."""
    ions = parse_ions(value, every=None)
    if ions is None:
        counts = dataset.table["working_ion"].value_counts()
        ions = [i for i in SUPPORTED_IONS if counts.get(i, 0) >= bl.MIN_ROWS]
        skipped = [f"{i} ({counts[i]})" for i in SUPPORTED_IONS if 0 < counts.get(i, 0) < bl.MIN_ROWS]
        if skipped:
            print(f"note: skipping ions with fewer than {bl.MIN_ROWS} electrodes: {', '.join(skipped)}")
        if not ions:
            raise VoltmodelsError(f"The dataset {dataset.digest} has no working ion with at least {bl.MIN_ROWS} electrodes.")
        return ions
    for ion in ions:
        bl.check_ion(dataset, ion)
    return ions


def resolve_strategies(value: str) -> tuple[str, ...]:
    if value == "both":
        return SPLIT_STRATEGIES
    if value not in SPLIT_STRATEGIES:
        raise VoltmodelsError(f"Unknown split {value!r}; use random, framework or both.")
    return (value,)


def resolve_methods(value: str) -> tuple[str, ...]:
    methods = tuple(dict.fromkeys(m.strip() for m in value.split(",") if m.strip()))
    unknown = [m for m in methods if m not in bl.METHODS]
    if unknown or not methods:
        raise VoltmodelsError(f"Unknown baseline method(s) {', '.join(unknown) or '(none)'}; use a subset of {', '.join(bl.METHODS)}.")
    return methods


def _log_figure(fig, path: str) -> None:
    mlflow.log_figure(fig, path)
    plots.close(fig)


def run_ion(dataset, ion: str, features: pd.DataFrame, args, strategies, methods, n_repeats: int) -> pd.DataFrame:
    """The nested run of one ion; returns its per-repeat records."""
    started = time.perf_counter()
    params = {"ion": ion, "profile": args.profile, "n_repeats": n_repeats, "split": args.split, "seed": args.seed, "methods": ",".join(methods)}
    with step_run(STEP, params, nested=True, run_name=f"baselines-{ion}") as run:
        mlflow.set_tags({"ion": ion, "dataset_digest": dataset.digest, "feature_set": bl.feature_set_key()})
        rows = dataset.rows(ion)
        mlflow.log_input(
            mlflow.data.from_pandas(rows, targets="average_voltage", name=f"mp-electrodes-{dataset.digest}-{ion}", digest=dataset.digest),
            context="training",
        )
        result = bl.evaluate_ion(dataset, ion, features, methods, strategies, n_repeats, args.profile, args.seed)
        records = result.records

        # Per-repeat curves (step = repeat) and the summary metrics shared with the transfer runs.
        for record in records.itertuples():
            for quantity in ("test_mae", "test_rmse", "test_r2", "val_mae"):
                value = getattr(record, quantity, None)
                if value is not None and pd.notna(value):
                    mlflow.log_metric(bl.metric_name(record.method, quantity, record.split), float(value), step=int(record.repeat))
        summary_metrics = bl.summary_metrics(records)
        mlflow.log_metrics(summary_metrics)
        with tempfile.TemporaryDirectory() as tmp:
            records.to_csv(Path(tmp) / "repeats.csv", index=False)
            bl.summarize(records).to_csv(Path(tmp) / "summary.csv", index=False)
            result.predictions.to_csv(Path(tmp) / "predictions_repeat0.csv", index=False)
            mlflow.log_artifacts(tmp, "results")

        # Parity plots: test rows of repeat 0, one figure per split strategy, one colour per method.
        for strategy in strategies:
            test = result.predictions[(result.predictions["split"] == strategy) & (result.predictions["part"] == "test")]
            parts = {m: (g["true"].to_numpy(), g["predicted"].to_numpy()) for m, g in test.groupby("method", sort=False)}
            if parts:
                _log_figure(plots.parity_plot(parts, f"{ion}: baselines, {strategy} split, test (repeat 0)"), f"plots/parity_{strategy}_test.png")

        # Random-forest Gini importances of the model that gets registered.
        if "rfr" in result.final:
            full = bl.gini_importances(result.final["rfr"].model, top=None)
            top = full.head(20)
            mlflow.log_table(top, "importance/rfr_gini_top20.json")
            with tempfile.TemporaryDirectory() as tmp:
                full.to_csv(Path(tmp) / "rfr_gini_all.csv", index=False)
                top.to_csv(Path(tmp) / "rfr_gini_top20.csv", index=False)
                bl.importance_by_property(full).to_csv(Path(tmp) / "rfr_gini_by_property.csv", index=False)
                mlflow.log_artifacts(tmp, "importance")
            _log_figure(bl.importance_plot(top, f"{ion}: random-forest Gini importances (top 20)"), "importance/rfr_gini_top20.png")

        # Models: fitted on random repeat 0's train rows, logged as pyfunc, registered.
        from serving.baseline_model import log_baseline_model

        example_id = dataset.split(ion, "random", 0).query("split == 'test'")["id_discharge"].iloc[0]
        example_structure = dataset.structures[example_id]
        random_records = records[(records["split"] == "random")]
        for method, fit in result.final.items():
            name = baseline_name(method, ion)
            info = log_baseline_model(
                fit.model, method=method, ion=ion, model_name=name, example_structure=example_structure, hyperparameters=fit.best_params
            )
            val_mae = fit.val_mae
            mlflow.log_metric(f"{method}_registered_val_mae", val_mae)
            method_records = random_records[random_records["method"] == method]
            tags = {
                "method": method,
                "ion": ion,
                "dataset_digest": dataset.digest,
                "feature_set": bl.feature_set_key(),
                "profile": args.profile,
                "hyperparameters": json.dumps(fit.best_params, sort_keys=True),
                "trained_on": "train rows of random split repeat 0",
                "selection_rule": DEFAULT_SELECTION_RULE,
                "source_run_id": run.info.run_id,
            }
            if len(method_records):
                tags.update(
                    {
                        "test_mae_mean": f"{method_records['test_mae'].mean():.6f}",
                        "test_mae_std": f"{bl.repeat_std(method_records['test_mae']):.6f}",
                        "n_repeats": len(method_records),
                    }
                )
            if args.no_register:
                continue
            version, champion = register(
                info.model_uri,
                name,
                val_mae,
                tags,
                description=f"{bl.METHOD_TITLES[method]} baseline for {ion} on matminer features of the discharged structure.",
            )
            mlflow.set_tag(f"registered_{method}", f"{name}/{version}")
            print(f"registered {name} version {version} (val MAE {val_mae:.3f} V){' -> @champion' if champion else ''}")
        mlflow.log_metric("baselines_seconds", time.perf_counter() - started)
    return records


@main_guard
def main(argv=None) -> str:
    args = parse_args(argv)
    check_profile(args.profile)
    strategies = resolve_strategies(args.split)
    methods = resolve_methods(args.methods)
    if args.n_repeats < 0:
        raise VoltmodelsError(f"n_repeats must be at least 1 (or 0 for the profile's default), not {args.n_repeats}.")
    n_repeats = args.n_repeats or bl.DEFAULT_REPEATS[args.profile]
    dataset = load_dataset(args.dataset or None)
    ions = resolve_ions(args.ion, dataset)

    started = time.perf_counter()
    features = bl.dataset_features(dataset, ions)
    featurize_seconds = time.perf_counter() - started
    params = {
        "ion": args.ion,
        "ions": ",".join(ions),
        "dataset": args.dataset,
        "profile": args.profile,
        "n_repeats": n_repeats,
        "split": args.split,
        "seed": args.seed,
        "methods": ",".join(methods),
        "n_features": features.shape[1],
    }
    with step_run(STEP, params) as run:
        mlflow.set_tags({"dataset_digest": dataset.digest, "ions": ",".join(ions), "feature_set": bl.feature_set_key()})
        mlflow.log_metric("featurize_seconds", featurize_seconds)
        all_records = [run_ion(dataset, ion, features, args, strategies, methods, n_repeats) for ion in ions]
        summary = bl.summarize(pd.concat(all_records, ignore_index=True))
        comparison = summary[["ion", "split", "method", "mae_mean", "mae_std", "rmse_mean", "r2_mean", "n_repeats", "n_train", "n_test"]]
        with tempfile.TemporaryDirectory() as tmp:
            comparison.to_csv(Path(tmp) / "comparison.csv", index=False)
            mlflow.log_artifact(str(Path(tmp) / "comparison.csv"))
        mlflow.log_metric("baselines_seconds", time.perf_counter() - started)
        print(comparison.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"baselines run {run.info.run_id}")
    return run.info.run_id


if __name__ == "__main__":
    main()
