"""Regression metrics and their summary over seeded repeats: one definition for CGCNN, transfer and baselines."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    err = y_pred - y_true
    ss_tot = float(((y_true - y_true.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": float(1 - (err**2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
    }


def conformal_half_width(residuals, coverage: float = 0.9) -> float:
    """Split-conformal half-width: the ceil((n + 1) coverage)-th smallest |residual| of calibration
    rows (NaN residuals dropped); inf when there are too few rows for that coverage."""
    r = np.sort(np.abs(np.asarray(residuals, float)))
    r = r[np.isfinite(r)]
    k = int(np.ceil((len(r) + 1) * coverage))
    return float(r[k - 1]) if 0 < k <= len(r) else float("inf")


def cgcnn_interval(calib: tuple | None, test: tuple) -> tuple[float, float]:
    """(half-width, test coverage) of a CGCNN's 90 % interval from its (true, predicted) calibration
    and test pairs; NaN for both when the ion spared no calibration rows (no interval is served)."""
    half = conformal_half_width(calib[0] - calib[1]) if calib is not None and len(calib[0]) else float("nan")
    if not np.isfinite(half):
        return float("nan"), float("nan")
    return half, float(np.mean(np.abs(test[1] - test[0]) <= half))


def repeat_std(values) -> float:
    """Sample standard deviation (ddof=1) over repeats, missing values dropped; NaN for fewer than two."""
    values = pd.Series(values, dtype=float).dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """Per (ion, split, method): mean / std over repeats of the test metrics (std NaN for one repeat),
    mean validation MAE, and `n_train` / `n_test` of the first repeat when the records have them."""
    counts = [c for c in ("n_train", "n_test") if c in records.columns]
    columns = ["ion", "split", "method", "n_repeats", "mae_mean", "mae_std", "rmse_mean", "rmse_std", "r2_mean", "val_mae_mean", *counts]
    rows = []
    for (ion, split, method), group in records.groupby(["ion", "split", "method"], sort=False):
        rows.append(
            {
                "ion": ion,
                "split": split,
                "method": method,
                "n_repeats": len(group),
                "mae_mean": group["test_mae"].mean(),
                "mae_std": repeat_std(group["test_mae"]),
                "rmse_mean": group["test_rmse"].mean(),
                "rmse_std": repeat_std(group["test_rmse"]),
                "r2_mean": group["test_r2"].mean(),
                "val_mae_mean": group["val_mae"].mean() if "val_mae" in group else np.nan,
                **{count: int(group[count].iloc[0]) for count in counts},
            }
        )
    return pd.DataFrame(rows, columns=columns)


def over_repeated_splits(strategies, n_repeats: int, evaluate_split, n_jobs: int = 1) -> tuple[list, list, dict]:
    """Run `evaluate_split(strategy, repeat) -> (records, predictions, models)` on every repeat of
    every strategy, in `n_jobs` worker processes when more than 1; the models of random repeat 0
    (fitted for it even when `strategies` lacks "random") are the ones the fit steps register.
    Returns (records, predictions, those models), in the order of the splits either way."""
    records, predictions, final = [], [], {}
    plan = [(s, k) for s in strategies for k in range(n_repeats)]
    if ("random", 0) not in plan:
        plan.insert(0, ("random", 0))
    if n_jobs > 1 and len(plan) > 1:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=min(n_jobs, len(plan)))(delayed(_split_in_worker)(evaluate_split, strategy, repeat) for strategy, repeat in plan)
    else:
        results = (evaluate_split(strategy, repeat) for strategy, repeat in plan)
    for (strategy, repeat), (split_records, split_predictions, models) in zip(plan, results):
        if (strategy, repeat) == ("random", 0):
            final.update(models)
        if strategy in strategies:
            records += split_records
            predictions += split_predictions
    return records, predictions, final


def _split_in_worker(evaluate_split, strategy: str, repeat: int):
    """One split in a worker process: its numeric pools on one thread each (unpinned, the boosted
    trees' OpenMP pools of two workers on 2 cores stall each other), ended with the run that asked."""
    from voltmodels.config import exit_with_parent, pinned_threads

    exit_with_parent()
    with pinned_threads(1):
        return evaluate_split(strategy, repeat)


def with_selected_rows(records: pd.DataFrame, candidates, label: str) -> pd.DataFrame:
    """`records` plus, per (ion, split, repeat), a copy of the `candidates` row with the lowest
    validation MAE, its `label` column set to "selected" and the original in `selected_<label>`: the
    test MAE the champion rule delivers without a look at test rows."""
    pool = records[np.asarray(candidates, bool)]
    if pool.empty:
        return records
    best = pool.loc[pool.groupby(["ion", "split", "repeat"], sort=False)["val_mae"].idxmin()]
    return pd.concat([records, best.assign(**{f"selected_{label}": best[label], label: "selected"})], ignore_index=True)
