"""Baselines fitted and scored on seeded splits of one ion; the per-method summaries logged as metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from voltmodels.baselines.features import dataset_features
from voltmodels.baselines.search import METHODS, FitResult, fit_method
from voltmodels.config import SUPPORTED_IONS, VoltmodelsError
from voltmodels.data.curation import SPLIT_STRATEGIES
from voltmodels.metrics import over_repeated_splits, regression_metrics, summarize

#: Fewest curated electrodes of one ion for which baselines are fitted.
MIN_ROWS = 20
#: Repeats per profile when the caller does not choose.
DEFAULT_REPEATS = {"quick": 2, "paper": 5}


def check_ion(dataset, ion: str) -> int:
    """Number of curated rows of `ion`; one clear VoltmodelsError if it is unknown or too small."""
    if ion not in SUPPORTED_IONS:
        raise VoltmodelsError(f"Unknown working ion {ion!r}; use one of {', '.join(SUPPORTED_IONS)} or 'all'.")
    counts = dataset.table["working_ion"].value_counts()
    n = int(counts.get(ion, 0))
    if n == 0:
        raise VoltmodelsError(f"The dataset {dataset.digest} has no electrodes for working ion {ion!r}; it has {', '.join(dataset.ions)}.")
    if n < MIN_ROWS:
        raise VoltmodelsError(f"Working ion {ion} has only {n} curated electrodes in dataset {dataset.digest}; baselines need at least {MIN_ROWS}.")
    return n


@dataclass
class IonEvaluation:
    ion: str
    #: one row per (split, repeat, method): n_train/n_val/n_test, test_/val_ mae rmse r2, cv_mae, params, seconds
    records: pd.DataFrame
    #: test (and val) predictions of repeat 0: split, method, id, part, true, predicted
    predictions: pd.DataFrame
    #: method -> FitResult fitted on the train rows of random repeat 0 (the models to register)
    final: dict[str, FitResult] = field(default_factory=dict)


def features_and_targets(rows: pd.DataFrame, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of electrode rows from a feature table indexed by id_discharge."""
    return features.loc[rows["id_discharge"]].to_numpy(np.float64), rows["average_voltage"].to_numpy(np.float64)


def evaluate_ion(
    dataset,
    ion: str,
    features: pd.DataFrame | None = None,
    methods: Sequence[str] = METHODS,
    strategies: Sequence[str] = SPLIT_STRATEGIES,
    n_repeats: int = 5,
    profile: str = "quick",
    seed: int = 0,
    log: Callable[[str], None] | None = print,
) -> IonEvaluation:
    """Fit every method on `n_repeats` seeded splits of every strategy; test/val metrics per repeat.

    Repeat k uses ``dataset.split(ion, strategy, repeat=k)``; hyperparameters are searched by CV on its
    train rows (grouped by framework for the framework split). Random repeat 0 is always fitted (added
    if `strategies` lacks "random"): it gives the models to register.
    """
    check_ion(dataset, ion)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise VoltmodelsError(f"Unknown baseline method(s) {', '.join(unknown)}; use {', '.join(METHODS)}.")
    bad = [s for s in strategies if s not in SPLIT_STRATEGIES]
    if bad:
        raise VoltmodelsError(f"Unknown split strategy {bad[0]!r}; use one of {', '.join(SPLIT_STRATEGIES)}.")
    if n_repeats < 1:
        raise VoltmodelsError(f"n_repeats must be at least 1, not {n_repeats}.")
    if features is None:
        features = dataset_features(dataset, [ion])
    records, predictions, final = over_repeated_splits(
        strategies, n_repeats, lambda strategy, repeat: evaluate_split(dataset, ion, features, methods, strategy, repeat, profile, seed, log)
    )
    return IonEvaluation(
        ion=ion,
        records=pd.DataFrame(records),
        predictions=pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame(),
        final=final,
    )


def evaluate_split(
    dataset, ion: str, features: pd.DataFrame, methods: Sequence[str], strategy: str, repeat: int, profile: str = "quick", seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> tuple[list[dict], list[pd.DataFrame], dict[str, FitResult]]:
    """Every method on repeat `repeat` of `strategy` for one ion: records, val/test predictions of
    repeat 0, and the fitted models (with `val_mae` set). A task of the evaluation grid."""
    rows = dataset.split(ion, strategy, repeat)
    parts = {name: rows[rows["split"] == name] for name in ("train", "val", "test")}
    X_train, y_train = features_and_targets(parts["train"], features)
    groups = parts["train"]["framework_formula"].to_numpy() if strategy == "framework" else None
    records, predictions, fits = [], [], {}
    for method in methods:
        fit = fit_method(method, X_train, y_train, profile, seed + repeat, groups)
        X_val, y_val = features_and_targets(parts["val"], features)
        fit.val_mae = regression_metrics(y_val, fit.model.predict(X_val))["mae"] if len(y_val) else fit.cv_mae
        fits[method] = fit
        record = {
            "ion": ion, "split": strategy, "repeat": repeat, "method": method,
            "n_train": len(parts["train"]), "n_val": len(parts["val"]), "n_test": len(parts["test"]),
            "cv_mae": fit.cv_mae, "params": json.dumps(fit.best_params, sort_keys=True), "seconds": fit.seconds,
        }
        for part in ("val", "test"):
            X, y = features_and_targets(parts[part], features)
            pred = fit.model.predict(X) if len(y) else np.zeros(0)
            if len(y):
                record.update({f"{part}_{k}": v for k, v in regression_metrics(y, pred).items()})
            if repeat == 0:
                ids = parts[part]["id_discharge"].to_numpy()
                predictions.append(pd.DataFrame({"split": strategy, "method": method, "id_discharge": ids, "part": part, "true": y, "predicted": pred}))
        records.append(record)
        if log is not None:
            log(
                f"{ion} {strategy} repeat {repeat} {method}: test MAE {record.get('test_mae', float('nan')):.3f} V "
                f"(cv {fit.cv_mae:.3f}, {fit.seconds:.1f} s, {fit.best_params})"
            )
    return records, predictions, fits


def metric_name(method: str, quantity: str, split: str = "random") -> str:
    """Metric name shared with the transfer runs: `rfr_test_mae_mean`, `framework_rfr_test_mae_mean`."""
    return f"{method}_{quantity}" if split == "random" else f"{split}_{method}_{quantity}"


def summary_metrics(records: pd.DataFrame) -> dict[str, float]:
    """MLflow metrics of one ion: `<split_>method_test_{mae_mean,mae_std,rmse_mean,r2_mean}`, `n_train`, `n_test`."""
    metrics: dict[str, float] = {}
    for row in summarize(records).itertuples():
        for quantity, value in (
            ("test_mae_mean", row.mae_mean),
            ("test_mae_std", row.mae_std),
            ("test_rmse_mean", row.rmse_mean),
            ("test_rmse_std", row.rmse_std),
            ("test_r2_mean", row.r2_mean),
            ("val_mae_mean", row.val_mae_mean),
        ):
            metrics[metric_name(row.method, quantity, row.split)] = float(value)
    for split, group in records[records["repeat"] == 0].groupby("split"):
        prefix = "" if split == "random" else f"{split}_"
        for count in ("n_train", "n_val", "n_test"):
            metrics[f"{prefix}{count}"] = int(group[count].iloc[0])
    return metrics
