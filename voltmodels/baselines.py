"""Conventional-ML baselines: SVR, KRR and random forest on matminer descriptors of the discharged structure.

Zhang et al. (2022) compare CGCNN with support-vector regression, kernel ridge regression and a random
forest trained on composition descriptors. Here the descriptors come from matminer, computed on the
discharged (ion-rich) structure of every electrode:

* composition: Magpie ``ElementProperty`` statistics (132), ``Stoichiometry``, ``ValenceOrbital``,
  ``IonProperty(fast=True)``, ``BandCenter``, ``TMetalFraction``;
* structure: ``DensityFeatures`` and the numeric ``GlobalSymmetryFeatures``.

Matminer's own NaN imputation is off: missing elemental data stays NaN and is imputed inside each
sklearn Pipeline (median of the training rows), so a served model imputes exactly as in training.
A featurizer that fails on a structure leaves NaN for its block instead of raising.

Features are cached on disk (``cache_dir()/features/<feature-set key>.parquet``), one row per
structure content digest; the key changes when the featurizer list, this module's feature version
or the matminer version changes, so a stale cache is never read.

Nothing here knows about MLflow: ``pipelines/baselines.py`` logs, ``serving/baseline_model.py`` serves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from voltmodels.config import SUPPORTED_IONS, VoltmodelsError, cache_dir
from voltmodels.data.curation import SPLIT_STRATEGIES
from voltmodels.graphs.convert import parse_structure, structure_digest  # one content hash for every cache

#: Bump when featurize_structure's output changes for the same featurizer list (invalidates caches).
FEATURE_VERSION = 2  # 2: rows keyed by the graph cache's structure digest
METHODS = ("svr", "krr", "rfr")
METHOD_TITLES = {"svr": "SVR (RBF)", "krr": "KRR (RBF)", "rfr": "Random forest"}
#: Fewest curated electrodes of one ion for which baselines are fitted.
MIN_ROWS = 20
#: Repeats per profile when the caller does not choose.
DEFAULT_REPEATS = {"quick": 2, "paper": 5}
_CHECKPOINT_EVERY = 500

# (block name, matminer class, kwargs, input: "composition" | "structure")
FEATURIZERS: tuple[tuple[str, str, dict, str], ...] = (
    ("magpie", "composition.ElementProperty", {"preset": "magpie", "impute_nan": False}, "composition"),
    ("stoichiometry", "composition.Stoichiometry", {}, "composition"),
    ("valence_orbital", "composition.ValenceOrbital", {"impute_nan": False}, "composition"),
    ("ion_property", "composition.IonProperty", {"fast": True, "impute_nan": False}, "composition"),
    ("band_center", "composition.BandCenter", {"impute_nan": False}, "composition"),
    ("tmetal_fraction", "composition.TMetalFraction", {}, "composition"),
    ("density", "structure.DensityFeatures", {}, "structure"),
    (
        "symmetry",
        "structure.GlobalSymmetryFeatures",
        {"desired_features": ["spacegroup_num", "crystal_system_int", "is_centrosymmetric", "n_symmetry_ops"]},
        "structure",
    ),
)


# --------------------------------------------------------------------------------------------------
# featurization


@lru_cache(maxsize=1)
def _featurizers() -> tuple[tuple[str, object, str, tuple[str, ...]], ...]:
    """(block, featurizer, input kind, labels) for every block; matminer loads its data tables once."""
    import importlib

    built = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matminer warns about impute_nan defaults
        for block, path, kwargs, kind in FEATURIZERS:
            module_name, class_name = path.rsplit(".", 1)
            cls = getattr(importlib.import_module(f"matminer.featurizers.{module_name}"), class_name)
            kwargs = dict(kwargs)
            preset = kwargs.pop("preset", None)
            featurizer = cls.from_preset(preset, **kwargs) if preset else cls(**kwargs)
            built.append((block, featurizer, kind, tuple(featurizer.feature_labels())))
    return tuple(built)


def feature_names() -> list[str]:
    """Matminer's labels, in column order (unique across blocks)."""
    names = [label for _, _, _, labels in _featurizers() for label in labels]
    if len(set(names)) != len(names):
        raise RuntimeError("feature labels of the baseline featurizers collide")
    return names


def feature_blocks() -> dict[str, str]:
    """Feature name -> featurizer block."""
    return {label: block for block, _, _, labels in _featurizers() for label in labels}


def feature_set_key() -> str:
    """Short hash of everything that determines a feature vector: featurizers, FEATURE_VERSION, matminer."""
    from importlib.metadata import version

    spec = {"version": FEATURE_VERSION, "featurizers": FEATURIZERS, "matminer": version("matminer")}
    return hashlib.blake2b(json.dumps(spec, sort_keys=True, default=str).encode(), digest_size=6).hexdigest()


def featurize_structure(structure) -> np.ndarray:
    """Feature vector (float64, NaN where a featurizer has no value) of one pymatgen Structure."""
    composition = structure.composition
    parts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _block, featurizer, kind, labels in _featurizers():
            try:
                values = featurizer.featurize(composition if kind == "composition" else structure)
                row = np.array([float(v) if v is not None else np.nan for v in values], dtype=np.float64)
                if row.shape != (len(labels),):
                    raise ValueError("unexpected feature count")
            except Exception:  # a block without a value is imputed downstream, never fatal
                row = np.full(len(labels), np.nan)
            row[~np.isfinite(row)] = np.nan
            parts.append(row)
    return np.concatenate(parts)


def featurize_structures(structures: Sequence) -> np.ndarray:
    """Feature matrix (n_structures x n_features) of Structures, uncached (the served models' path)."""
    if not structures:
        return np.zeros((0, len(feature_names())))
    return np.vstack([featurize_structure(s) for s in structures])


class FeatureCache:
    """Baseline feature vectors on disk, keyed by structure content digest and the feature-set key.

    One parquet file per feature set (index: digest). Writers take an exclusive lock, merge their new
    rows into the current file and ``os.replace`` a temporary file over it, so readers never see a
    partial file and concurrent writers never lose each other's rows.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.directory = Path(root) if root is not None else cache_dir() / "features"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"v{FEATURE_VERSION}-{feature_set_key()}.parquet"
        self.last_featurized = 0  # structures featurized (cache misses) by the last get_many

    def load(self) -> pd.DataFrame:
        if not self.path.is_file():
            return pd.DataFrame(columns=feature_names(), dtype=np.float64)
        table = pd.read_parquet(self.path)
        if list(table.columns) != feature_names():  # cannot happen with a matching key; be safe anyway
            return pd.DataFrame(columns=feature_names(), dtype=np.float64)
        return table

    def __len__(self) -> int:
        return len(self.load())

    def get_many(self, structures: Mapping[str, object], progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
        """Features of {id: Structure} as a DataFrame indexed by id (cached rows read, the rest computed)."""
        keys = list(structures)
        digest_of = {key: structure_digest(structures[key]) for key in keys}
        cached = self.load()
        missing: dict[str, object] = {}
        for key in keys:
            digest = digest_of[key]
            if digest not in cached.index and digest not in missing:
                missing[digest] = structures[key]
        self.last_featurized = len(missing)
        if missing:
            names = feature_names()
            new_rows: dict[str, np.ndarray] = {}
            for done, (digest, structure) in enumerate(missing.items(), 1):
                new_rows[digest] = featurize_structure(structure)
                if len(new_rows) >= _CHECKPOINT_EVERY:  # an interrupted run keeps its work
                    cached = self._store(pd.DataFrame.from_dict(new_rows, orient="index", columns=names))
                    new_rows = {}
                if progress is not None:
                    progress(done, len(missing))
            if new_rows:
                cached = self._store(pd.DataFrame.from_dict(new_rows, orient="index", columns=names))
        frame = cached.loc[[digest_of[key] for key in keys]]
        frame.index = pd.Index(keys, name="id")
        return frame.astype(np.float64)

    def _store(self, rows: pd.DataFrame) -> pd.DataFrame:
        with self._lock():
            current = self.load()
            merged = pd.concat([current, rows[~rows.index.isin(current.index)]]) if len(current) else rows
            merged.index.name = "digest"
            temporary = self.directory / f".{self.path.name}.{uuid.uuid4().hex}.tmp"
            try:
                merged.to_parquet(temporary)
                os.replace(temporary, self.path)
            finally:
                temporary.unlink(missing_ok=True)
        return merged

    @contextlib.contextmanager
    def _lock(self):
        import fcntl

        with open(self.directory / f".{self.path.stem}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def dataset_features(dataset, ions: Iterable[str] | None = None, cache: FeatureCache | None = None, progress=None) -> pd.DataFrame:
    """Features of the discharged structures of the dataset's electrodes (of `ions`), indexed by id_discharge."""
    table = dataset.table if ions is None else dataset.table[dataset.table["working_ion"].isin(list(ions))]
    ids = sorted(set(table["id_discharge"]))
    compact = dataset.compact_structures
    return (cache if cache is not None else FeatureCache()).get_many({mid: parse_structure(compact[mid]) for mid in ids}, progress=progress)


# --------------------------------------------------------------------------------------------------
# models


def make_pipeline(method: str, seed: int = 0):
    """Impute (median) -> standardize -> regressor. SVR and KRR learn standardized targets (KRR has no intercept)."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    if method == "svr":
        model = TransformedTargetRegressor(regressor=SVR(kernel="rbf"), transformer=StandardScaler())
    elif method == "krr":
        model = TransformedTargetRegressor(regressor=KernelRidge(kernel="rbf"), transformer=StandardScaler())
    elif method == "rfr":
        model = RandomForestRegressor(n_estimators=200, random_state=seed, n_jobs=1)
    else:
        raise VoltmodelsError(f"Unknown baseline method {method!r}; use one of {', '.join(METHODS)}.")
    # keep_empty_features: columns stay aligned with feature_names() (for importances) even if all-NaN.
    return Pipeline(
        [("impute", SimpleImputer(strategy="median", keep_empty_features=True)), ("scale", StandardScaler()), ("model", model)]
    )


@dataclass(frozen=True)
class SearchSpec:
    """A hyperparameter search: an exhaustive grid, or `n_iter` random draws from it, with `cv` folds."""

    grid: dict[str, list]
    cv: int
    n_iter: int | None = None  # None: GridSearchCV


def search_spec(method: str, profile: str, n_features: int) -> SearchSpec:
    """Search spaces: small grids for `quick`, randomized search over wider grids for `paper`.

    RBF widths are multiples of 1 / n_features (sklearn's 'scale' for standardized features).
    """
    g = 1.0 / max(n_features, 1)
    if profile == "quick":
        grids = {
            "svr": {"model__regressor__C": [3.0, 30.0], "model__regressor__gamma": [1.0 * g, 3.0 * g], "model__regressor__epsilon": [0.1]},
            "krr": {"model__regressor__alpha": [0.01, 0.1], "model__regressor__gamma": [1.0 * g, 3.0 * g]},
            "rfr": {"model__n_estimators": [100], "model__max_features": [0.33, 1.0], "model__min_samples_leaf": [1]},
        }
        return SearchSpec(grid=grids[method], cv=3)
    if profile != "paper":
        raise VoltmodelsError(f"Unknown profile {profile!r}; use quick or paper.")
    grids = {
        "svr": {
            "model__regressor__C": [0.3, 1.0, 3.0, 10.0, 30.0, 100.0],
            "model__regressor__gamma": [f * g for f in (0.1, 0.3, 1.0, 3.0, 10.0)],
            "model__regressor__epsilon": [0.02, 0.05, 0.1, 0.2],
        },
        "krr": {
            "model__regressor__alpha": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
            "model__regressor__gamma": [f * g for f in (0.1, 0.3, 1.0, 3.0, 10.0)],
        },
        "rfr": {
            "model__n_estimators": [200],
            "model__max_features": [0.2, 0.33, 0.5],
            "model__min_samples_leaf": [1, 2, 4],
        },
    }
    # Random draws keep Li (1.5k training rows, 10 seeded splits) within minutes per method on 2 cores.
    cv, n_iter = {"svr": (5, 20), "krr": (5, 15), "rfr": (3, 5)}[method]
    return SearchSpec(grid=grids[method], cv=cv, n_iter=n_iter)


def _cv_splitter(n_folds: int, n_rows: int, groups: np.ndarray | None, seed: int):
    from sklearn.model_selection import GroupKFold, KFold

    n_folds = max(2, min(n_folds, n_rows // 4 or 2))
    if groups is not None and len(set(groups)) >= n_folds:
        # Framework split: keep a framework's rows in one fold, as the outer split does.
        return GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return KFold(n_splits=n_folds, shuffle=True, random_state=seed)


@dataclass
class FitResult:
    model: object  # fitted Pipeline
    best_params: dict
    cv_mae: float
    seconds: float
    val_mae: float = float("nan")  # set by evaluate_ion for the random repeat-0 fits


def fit_method(method: str, X: np.ndarray, y: np.ndarray, profile: str = "quick", seed: int = 0, groups: np.ndarray | None = None) -> FitResult:
    """Search hyperparameters by cross-validation on (X, y) and refit the best pipeline on all of it."""
    from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

    started = time.perf_counter()
    spec = search_spec(method, profile, X.shape[1])
    cv = _cv_splitter(spec.cv, len(y), groups, seed)
    common = dict(scoring="neg_mean_absolute_error", cv=cv, n_jobs=1, refit=True, error_score="raise")
    n_grid = int(np.prod([len(v) for v in spec.grid.values()]))
    if spec.n_iter is None or spec.n_iter >= n_grid:
        search = GridSearchCV(make_pipeline(method, seed), spec.grid, **common)
    else:
        search = RandomizedSearchCV(make_pipeline(method, seed), spec.grid, n_iter=spec.n_iter, random_state=seed, **common)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(X, y, groups=groups)
    params = {k.replace("model__regressor__", "").replace("model__", ""): _plain(v) for k, v in search.best_params_.items()}
    return FitResult(model=search.best_estimator_, best_params=params, cv_mae=float(-search.best_score_), seconds=time.perf_counter() - started)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    from voltmodels.training import regression_metrics as metrics  # one definition project-wide (lazy: pulls in torch)

    return metrics(y_true, y_pred)


# --------------------------------------------------------------------------------------------------
# evaluation on seeded splits


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
    records, predictions, final = [], [], {}
    plan = [(s, k) for s in strategies for k in range(n_repeats)]
    if "random" not in strategies:
        plan.insert(0, ("random", 0))
    for strategy, repeat in plan:
        rows = dataset.split(ion, strategy, repeat)
        parts = {name: rows[rows["split"] == name] for name in ("train", "val", "test")}
        X_train, y_train = features_and_targets(parts["train"], features)
        groups = parts["train"]["framework_formula"].to_numpy() if strategy == "framework" else None
        for method in methods:
            fit = fit_method(method, X_train, y_train, profile, seed + repeat, groups)
            if strategy == "random" and repeat == 0:
                X_val, y_val = features_and_targets(parts["val"], features)
                fit.val_mae = regression_metrics(y_val, fit.model.predict(X_val))["mae"] if len(y_val) else fit.cv_mae
                final[method] = fit
            if strategy not in strategies:
                continue  # random repeat 0 fitted for registration only
            record = {
                "ion": ion,
                "split": strategy,
                "repeat": repeat,
                "method": method,
                "n_train": len(parts["train"]),
                "n_val": len(parts["val"]),
                "n_test": len(parts["test"]),
                "cv_mae": fit.cv_mae,
                "params": json.dumps(fit.best_params, sort_keys=True),
                "seconds": fit.seconds,
            }
            for part in ("val", "test"):
                X, y = features_and_targets(parts[part], features)
                pred = fit.model.predict(X) if len(y) else np.zeros(0)
                if len(y):
                    record.update({f"{part}_{k}": v for k, v in regression_metrics(y, pred).items()})
                if repeat == 0:
                    ids = parts[part]["id_discharge"].to_numpy()
                    predictions.append(
                        pd.DataFrame({"split": strategy, "method": method, "id_discharge": ids, "part": part, "true": y, "predicted": pred})
                    )
            records.append(record)
            if log is not None:
                log(
                    f"{ion} {strategy} repeat {repeat} {method}: test MAE {record.get('test_mae', float('nan')):.3f} V "
                    f"(cv {fit.cv_mae:.3f}, {fit.seconds:.1f} s, {fit.best_params})"
                )
    return IonEvaluation(
        ion=ion,
        records=pd.DataFrame(records),
        predictions=pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame(),
        final=final,
    )


def metric_name(method: str, quantity: str, split: str = "random") -> str:
    """Metric name shared with the transfer runs: `rfr_test_mae_mean`, `framework_rfr_test_mae_mean`."""
    return f"{method}_{quantity}" if split == "random" else f"{split}_{method}_{quantity}"


def repeat_std(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """Per (ion, split, method): mean / std over repeats of the test (and val) metrics."""
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
                "n_train": int(group["n_train"].iloc[0]),
                "n_test": int(group["n_test"].iloc[0]),
            }
        )
    return pd.DataFrame(rows)


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


# --------------------------------------------------------------------------------------------------
# random-forest importances


def gini_importances(model, names: Sequence[str] | None = None, top: int | None = 20) -> pd.DataFrame:
    """Mean-decrease-in-impurity importances of a fitted RFR pipeline, largest first (shares summing to 1)."""
    forest = model.named_steps["model"]
    names = list(names) if names is not None else feature_names()
    values = np.asarray(forest.feature_importances_, dtype=float)
    if len(values) != len(names):
        raise ValueError(f"{len(values)} importances for {len(names)} feature names")
    blocks = feature_blocks()
    table = pd.DataFrame({"feature": names, "block": [blocks.get(n, "") for n in names], "importance": values})
    table = table.sort_values("importance", ascending=False, ignore_index=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.head(top) if top else table


def importance_by_property(importances: pd.DataFrame) -> pd.DataFrame:
    """Importances summed per elemental property (Magpie statistics of one property grouped), largest first.

    The paper reports covalent radius as the top property (~20 % of the Gini importance).
    """
    def prop(feature: str) -> str:
        return feature.split(" ", 2)[2] if feature.startswith("MagpieData ") else feature

    grouped = importances.assign(property=importances["feature"].map(prop)).groupby("property", as_index=False)["importance"].sum()
    return grouped.sort_values("importance", ascending=False, ignore_index=True)


def importance_plot(importances: pd.DataFrame, title: str):
    """Horizontal bar chart of the (top) importances, largest on top."""
    from voltmodels import plots  # sets the headless backend

    table = importances.iloc[::-1]
    fig, ax = plots.plt.subplots(figsize=(7, 0.3 * len(table) + 1.2))
    ax.barh(table["feature"], table["importance"], color="#4C72B0")
    ax.set_xlabel("Gini importance (mean decrease in impurity)")
    ax.set_title(title)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig
