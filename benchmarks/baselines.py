"""Conventional-ML baselines (SVR, KRR, random forest) for every working ion: test MAE over seeded splits.

Usage: python benchmarks/baselines.py [--dataset latest|RUN_ID|FOLDER] [--profile paper] [--n-repeats 5]
                                      [--split both] [--ions all] [--out results.csv]

Runs :func:`voltmodels.baselines.evaluate_ion` (the code behind ``mlflow run . -e baselines``) without
MLflow logging or registration, and prints an ion x method table of test MAE mean +- std (sample std
over repeats) per split strategy, next to a mean predictor (train mean) on the same test rows, plus
the random forest's Gini importance per elemental property for Li (Zhang et al.: covalent radius ~20 %).
For a fair wall time on a shared machine, run it with ``OPENBLAS_NUM_THREADS=1 nice``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voltmodels.machine import machine_line  # noqa: E402
from voltmodels.tracking import results_run  # noqa: E402
from voltmodels import baselines as bl  # noqa: E402
from voltmodels.config import SUPPORTED_IONS, parse_ions  # noqa: E402
from voltmodels.data.curation import SPLIT_STRATEGIES  # noqa: E402
from voltmodels.data.dataset import load_dataset  # noqa: E402


def mean_predictor(dataset, ion: str, strategy: str, n_repeats: int) -> list[float]:
    maes = []
    for repeat in range(n_repeats):
        rows = dataset.split(ion, strategy, repeat)
        train, test = rows[rows["split"] == "train"], rows[rows["split"] == "test"]
        maes.append(float(np.abs(test["average_voltage"] - train["average_voltage"].mean()).mean()))
    return maes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="latest")
    parser.add_argument("--profile", default="paper", choices=["quick", "paper"])
    parser.add_argument("--n-repeats", type=int, default=5)
    parser.add_argument("--split", default="both", choices=["random", "framework", "both"])
    parser.add_argument("--ions", default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="also write the per-repeat records to this CSV")
    args = parser.parse_args()

    print(machine_line(("scikit-learn", "matminer"), env=("OPENBLAS_NUM_THREADS",)), flush=True)
    wall = time.perf_counter()
    dataset = load_dataset(args.dataset)
    ions = parse_ions(args.ions, every=[i for i in SUPPORTED_IONS if i in dataset.ions])
    strategies = SPLIT_STRATEGIES if args.split == "both" else (args.split,)
    print(f"dataset {dataset.digest}: {len(dataset.table)} electrodes; profile {args.profile}, {args.n_repeats} repeats, "
          f"splits {', '.join(strategies)}; {len(bl.feature_names())} features (set {bl.feature_set_key()})", flush=True)

    started = time.perf_counter()
    cache = bl.FeatureCache()
    features = bl.dataset_features(dataset, ions, cache=cache)
    print(f"features: {features.shape[0]} structures in {time.perf_counter() - started:.1f} s "
          f"({cache.last_featurized} featurized, the rest from the cache)", flush=True)

    records, seconds, mean_rows, importances = [], {}, [], None
    for ion in ions:
        started = time.perf_counter()
        result = bl.evaluate_ion(dataset, ion, features, bl.METHODS, strategies, args.n_repeats, args.profile, args.seed, log=None)
        seconds[ion] = time.perf_counter() - started
        records.append(result.records)
        for strategy in strategies:
            maes = mean_predictor(dataset, ion, strategy, args.n_repeats)
            mean_rows.append({"ion": ion, "split": strategy, "method": "mean", "mae_mean": np.mean(maes), "mae_std": bl.repeat_std(pd.Series(maes))})
        if ion == "Li" and "rfr" in result.final:
            importances = bl.importance_by_property(bl.gini_importances(result.final["rfr"].model, top=None))
        done = bl.summarize(result.records)
        line = ", ".join(f"{r.split[:4]} {r.method} {r.mae_mean:.3f}" for r in done.itertuples())
        print(f"{ion}: {seconds[ion]:.0f} s; test MAE {line}", flush=True)

    all_records = pd.concat(records, ignore_index=True)
    if args.out:
        all_records.to_csv(args.out, index=False)
    summary = pd.concat([bl.summarize(all_records), pd.DataFrame(mean_rows)], ignore_index=True)
    counts = dataset.table["working_ion"].value_counts()
    for strategy in strategies:
        part = summary[summary["split"] == strategy]
        print(f"\nTest MAE (V), {strategy} split, mean +- std over {args.n_repeats} seeded splits ({args.profile} profile)\n")
        methods = list(bl.METHODS) + ["mean"]
        header = ["ion", "n"] + [bl.METHOD_TITLES.get(m, "mean predictor") for m in methods] + ["best", "seconds"]
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for ion in ions:
            cells = part[part["ion"] == ion].set_index("method")
            values = [f"{cells.loc[m, 'mae_mean']:.3f} ± {cells.loc[m, 'mae_std']:.3f}" for m in methods]
            best = cells.loc[list(bl.METHODS), "mae_mean"].idxmin()
            print(f"| {ion} | {counts[ion]} | " + " | ".join(values) + f" | {best} | {seconds[ion]:.0f} |")
    if importances is not None:
        print("\nLi random forest (random split, repeat 0): Gini importance summed per property, top 8")
        for row in importances.head(8).itertuples():
            print(f"  {row.property:28s} {100 * row.importance:5.1f} %")
    print(f"\nwall time {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
    with results_run("baselines"):
        main()
