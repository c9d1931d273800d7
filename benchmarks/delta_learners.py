"""The learners of the Delta model (uip_delta) one by one and their mean, on fresh seeded splits.

    python benchmarks/delta_learners.py                                # framework 40-59, random 40-49
    python benchmarks/delta_learners.py --framework 40:60 --random 40:50 --n-jobs 2 --potential sevennet-0

The reported tables use repeats 0-4 of each split strategy; this compares the candidate learners of
V_DFT - V_uip on other repeats (the same seeded split rule, other draws), so that choosing the Delta
model does not look at the reported test rows. Each learner is fitted on the train rows of all ions
(rows with a zero-shot voltage) and scored on the test rows; "mean" is the Delta model itself (the
average of the three). Prints test MAE (V) per ion averaged over the splits, the all-ion row-weighted
MAE, and each learner's paired difference to zero-shot on every ion with its standard error.
Needs the energies cached (`mlflow run . -e energies`) and a curated dataset in the tracking store.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from voltmodels.machine import machine_line  # noqa: E402
from pipelines.common import setup_tracking  # noqa: E402

IONS = ("Li", "Mg", "Ca", "Zn", "Al", "Na", "K", "Y")


def _repeats(text: str) -> list[int]:
    if not text:
        return []
    lo, hi = (int(v) for v in text.split(":"))
    return list(range(lo, hi))


def _prepared(potential: str, dataset_ref: str):
    """The dataset, its features and its potential inputs."""
    from voltmodels import baselines as bl
    from voltmodels.data.dataset import load_dataset
    from voltmodels.potentials.electrodes import DatasetInputs

    dataset = load_dataset(dataset_ref)
    return dataset, DatasetInputs(dataset, potential, "a"), bl.dataset_features(dataset)


def score_splits(splits: list[tuple[str, int]], potential: str, dataset_ref: str) -> list[dict]:
    """One worker's share of the splits, on one thread: the data is loaded once, then each split is scored.
    (A worker gets its share in one call: a cache in this script's module would not outlive a task.)"""
    from voltmodels.config import pinned_threads

    with pinned_threads(1):  # one thread per worker, as in `evaluate`
        prepared = _prepared(potential, dataset_ref)
        return [record for strategy, repeat in splits for record in score_split(strategy, repeat, *prepared)]


def score_split(strategy: str, repeat: int, dataset, inputs_of, all_features) -> list[dict]:
    """Test MAE per ion of zero-shot, each learner and their mean on one split: the Delta model as
    `uip_delta` fits it, with each of its fitted members on its own."""
    from voltmodels.potentials.families import delta_features, delta_learners, fit_family, split_arrays

    rows, inputs, X, y, ions, part = split_arrays(dataset, inputs_of, all_features, strategy, repeat)
    train = part == "train"
    model = fit_family("uip_delta", inputs.take(train), X[train], ions[train], y[train], seed=repeat)
    features = delta_features(inputs, X, ions)
    members = zip(delta_learners(repeat), model.regressor.estimators_)  # VotingRegressor keeps delta_learners' order
    predicted = {"zero-shot": inputs.v_uip, **{name: inputs.v_uip + member.predict(features) for name, member in members}, "mean": model.predict(inputs, X, ions)}
    known = np.isfinite(inputs.v_uip)
    records = []
    for method, values in predicted.items():
        for ion in IONS:
            test = (ions == ion) & (part == "test") & known
            if test.any():
                records.append({"split": strategy, "repeat": repeat, "method": method, "ion": ion, "n": int(test.sum()), "mae": float(np.abs(values[test] - y[test]).mean())})
    print(f"{strategy} repeat {repeat} done", flush=True)
    return records


def tables(records: pd.DataFrame) -> str:
    out = []
    for strategy, group in records.groupby("split", sort=False):
        n_splits = group["repeat"].nunique()
        mae = group.pivot_table(index="method", columns="ion", values="mae", aggfunc="mean", sort=False)[[i for i in IONS if i in set(group["ion"])]]
        weighted = group.assign(w=group["mae"] * group["n"]).groupby("method", sort=False)
        mae.insert(0, "all", weighted["w"].sum() / weighted["n"].sum())
        out.append(f"### {strategy} split, {n_splits} splits: test MAE (V), mean over splits\n\n{mae.round(4).to_markdown()}\n")
        paired = group.pivot_table(index=["ion", "repeat"], columns="method", values="mae")
        diff = paired.drop(columns="zero-shot").sub(paired["zero-shot"], axis=0)
        cells = diff.groupby(level="ion").agg(lambda d: f"{d.mean():+.4f} ({d.std(ddof=1) / np.sqrt(len(d)):.4f}) {int((d < 0).sum())}/{len(d)}")
        out.append(f"paired difference to zero-shot, mean (standard error) and splits lower:\n\n{cells.T[[i for i in IONS if i in cells.index]].to_markdown()}\n")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--framework", default="40:60", help="framework repeats lo:hi ('' for none)")
    p.add_argument("--random", default="40:50", help="random repeats lo:hi ('' for none)")
    p.add_argument("--potential", default="sevennet-0")
    p.add_argument("--dataset", default="latest")
    p.add_argument("--n-jobs", type=int, default=1)
    args = p.parse_args(argv)
    setup_tracking()
    from joblib import Parallel, delayed

    tasks = [("framework", r) for r in _repeats(args.framework)] + [("random", r) for r in _repeats(args.random)]
    shares = [tasks[k :: args.n_jobs] for k in range(args.n_jobs)]
    results = Parallel(n_jobs=args.n_jobs)(delayed(score_splits)(share, args.potential, args.dataset) for share in shares if share)
    records = pd.DataFrame([r for part in results for r in part])
    print(f"\n{machine_line()}\npotential: {args.potential}; learners fitted on the train rows of all ions\n")
    print(tables(records))


if __name__ == "__main__":
    main()
