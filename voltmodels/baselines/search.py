"""The baseline regressors (impute -> standardize -> SVR / KRR / random forest) and their hyperparameter search."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from voltmodels.config import VoltmodelsError

METHODS = ("svr", "krr", "rfr")
METHOD_TITLES = {"svr": "SVR (RBF)", "krr": "KRR (RBF)", "rfr": "Random forest"}


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
