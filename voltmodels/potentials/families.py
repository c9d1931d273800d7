"""Voltage model families built on a universal potential, and their evaluation on the seeded splits.

  uip          zero-shot: the potential's voltage from energy differences (no training)
  uip_recal    per-ion linear map a * V_uip + b fitted on the ion's training rows
  uip_delta    Delta-learning: an ensemble (boosted trees, random trees, SVR) learns V_DFT - V_uip from
               the composition features of the baselines, the potential's energies, its learned representation
               of both end members and that representation's change per charge moved;
               one model for all ions (the ion is a feature), so data-poor ions borrow from Li
  uip_head     foundation-model transfer: the potential's frozen atomic representation, differenced
               between the end members like the energies are, under a trained linear voltage head
               (ridge), all ions together

Every family is fitted on the train rows only; its 90 % interval half-width is the conformal
quantile of the ion's out-of-fold |residual| on those train rows (cross-conformal), so neither the
validation rows (which select among families) nor the test rows shape it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from voltmodels.config import SUPPORTED_IONS, VoltmodelsError
from voltmodels.data.curation import SPLIT_STRATEGIES
from voltmodels.metrics import conformal_half_width, over_repeated_splits

FAMILIES = ("uip", "uip_recal", "uip_delta", "uip_head")
MODES = ("a", "b")
COVERAGE = 0.9
#: Below this many calibration rows an ion's interval uses the pooled residuals.
MIN_CALIBRATION_ROWS = 10


# --------------------------------------------------------------------------------------------------
# per-electrode inputs


@dataclass
class PotentialInputs:
    """What a family reads of one set of electrodes, aligned with its rows.

    v_uip: (n,) zero-shot voltage (NaN where the potential gave none); energies: (n, 2) eV/atom of the
    discharged and charged end members; embeddings: (n, 2 d) mean atomic representation of both;
    transfer: (n, d) the representation's change per unit of charge moved,
    [sum_atoms h(discharged) / host units - sum_atoms h(charged) / host units] / (dx z): the same
    difference the voltage takes of the energies, which the potential reads out of h atom by atom.
    """

    v_uip: np.ndarray
    energies: np.ndarray
    embeddings: np.ndarray
    errors: list[str | None]
    transfer: np.ndarray | None = None
    #: {potential: width of its atomic representation}: fixes the column layout of a fitted model.
    embedding_dims: dict[str, int] = field(default_factory=dict)
    #: Mode (b) rows: how the relaxation of both end members ended ("" in mode a); None: no row relaxed.
    relaxation: list[str] | None = None

    def take(self, mask) -> "PotentialInputs":
        def pick(values):
            return [v for v, m in zip(values, np.asarray(mask)) if m] if np.asarray(mask).dtype == bool else [values[i] for i in mask]

        transfer = None if self.transfer is None else self.transfer[mask]
        relaxation = None if self.relaxation is None else pick(self.relaxation)
        return PotentialInputs(self.v_uip[mask], self.energies[mask], self.embeddings[mask], pick(self.errors), transfer, self.embedding_dims, relaxation)


def combine(parts: Sequence[PotentialInputs]) -> PotentialInputs:
    """Several potentials on the same rows: the first one's zero-shot voltage is the baseline V_uip;
    the others' voltages join the energies as features, and every representation is kept."""
    first = parts[0]
    others_v = [p.v_uip[:, None] for p in parts[1:]]
    return PotentialInputs(
        first.v_uip,
        np.hstack([first.energies, *others_v, *(p.energies for p in parts[1:])]),
        np.hstack([p.embeddings for p in parts]),
        [next((e for e in errors if e), None) for errors in zip(*(p.errors for p in parts))],
        np.hstack([p.transfer for p in parts]),
        {k: v for p in parts for k, v in p.embedding_dims.items()},
        None if all(p.relaxation is None for p in parts) else ["; ".join(r for r in row if r) for row in zip(*(p.relaxation or [""] * len(p.v_uip) for p in parts))],
    )


def ion_onehot(ions: Sequence[str]) -> np.ndarray:
    index = {ion: i for i, ion in enumerate(SUPPORTED_IONS)}
    out = np.zeros((len(ions), len(SUPPORTED_IONS)))
    out[np.arange(len(ions)), [index[i] for i in ions]] = 1.0
    return out


# --------------------------------------------------------------------------------------------------
# models


@dataclass
class FamilyModel:
    """A fitted family: predicts voltages of rows from their potential inputs, features and ions."""

    family: str
    recal: dict[str, tuple[float, float]] = field(default_factory=dict)  # uip_recal: ion -> (a, b)
    regressor: object | None = None  # uip_delta / uip_head: a fitted sklearn estimator
    fallback: dict[str, float] = field(default_factory=dict)  # ion -> train median, where V_uip is missing
    half_width: dict[str, float] = field(default_factory=dict)  # ion -> conformal 90 % half-width
    #: Mode (b) rows get half_width x this (>= 1; `mode_b_scale`): their relaxed end members err more
    #: than the given ones the half-widths were calibrated on. 1.0: not measured.
    mode_b_scale: float = 1.0
    #: uip_delta: whether the Delta model reads the representation's change per charge moved
    #: (`PotentialInputs.transfer`). Models logged before that input was added read without it.
    delta_transfer: bool = True

    def predict(self, inputs: PotentialInputs, features: np.ndarray, ions: Sequence[str]) -> np.ndarray:
        v = inputs.v_uip.astype(np.float64)
        if self.family == "uip":
            out = v.copy()
        elif self.family == "uip_recal":
            a_b = np.array([self.recal.get(ion, (1.0, 0.0)) for ion in ions]).reshape(-1, 2)
            out = a_b[:, 0] * v + a_b[:, 1]
        elif self.family == "uip_delta":
            out = v + self.regressor.predict(delta_features(inputs, features, ions, self.delta_transfer))
        elif self.family == "uip_head":
            out = self.regressor.predict(head_features(inputs, ions))
        else:
            raise VoltmodelsError(f"unknown family {self.family!r}; use one of {', '.join(FAMILIES)}")
        missing = ~np.isfinite(out)
        out[missing] = [self.fallback.get(ion, np.nan) for ion in np.asarray(ions)[missing]]
        return out

    def interval(self, ions: Sequence[str], mode_b: Sequence[bool] | None = None) -> np.ndarray:
        """90 % half-widths of rows of `ions`; rows where `mode_b` is true are widened by `mode_b_scale`."""
        pooled = self.half_width.get("*", np.nan)
        half = np.array([self.half_width.get(ion, pooled) for ion in ions], dtype=np.float64)
        return half if mode_b is None else np.where(np.asarray(mode_b, bool), half * self.mode_b_scale, half)


def mode_b_scale(model: FamilyModel, inputs_a: PotentialInputs, inputs_b: PotentialInputs, features: np.ndarray, ions: Sequence[str], y: np.ndarray) -> float:
    """How much wider a mode (b) interval must be: the 90 % quantile of |residual| with relaxed end
    members over that with the given ones, on the same rows, floored at 1.

    The rows must be ones the model never trained on (the validation rows) and whose MP charged state
    holds no working ion (x1 = 0), so that mode (b) computes the reaction MP did. A ratio rather than a
    quantile of its own: the per-ion half-widths keep their shape, and a few dozen relaxed rows suffice.
    """
    ra = y - model.predict(inputs_a, features, ions)
    rb = y - model.predict(inputs_b, features, ions)
    both = np.isfinite(inputs_a.v_uip) & np.isfinite(inputs_b.v_uip)
    if both.sum() < 2:
        return 1.0
    qa, qb = np.quantile(np.abs(ra[both]), COVERAGE), np.quantile(np.abs(rb[both]), COVERAGE)
    return float(max(1.0, qb / qa)) if qa > 0 else 1.0


def delta_features(inputs: PotentialInputs, features: np.ndarray, ions: Sequence[str], transfer: bool = True) -> np.ndarray:
    """The Delta model's inputs. The representation's change per charge moved (`transfer`) is the
    difference the potential's readout turns into the voltage; from the two mean representations alone
    the learners cannot form it (it needs the host normalization). With it, the Delta model on
    SevenNet-l3i5 errs 2 mV less over all ions and 4 mV less on Li on fresh splits
    (docs/results.md, "Choosing the Δ model on fresh splits")."""
    parts = [inputs.v_uip[:, None], inputs.energies, inputs.embeddings]
    if transfer:
        parts.append(inputs.transfer if inputs.transfer is not None else np.zeros((len(inputs.v_uip), 0)))
    return np.hstack([*parts, features, ion_onehot(ions)])


def head_features(inputs: PotentialInputs, ions: Sequence[str]) -> np.ndarray:
    """The frozen body's representation change per charge moved, and the ion (whose metal's chemical
    potential over z is then a learned constant): a linear head on it has the form of the voltage."""
    return np.hstack([inputs.transfer, ion_onehot(ions)])


def delta_learners(seed: int) -> dict:
    """The three unlike learners of the residual V_DFT - V_uip whose mean is the Delta model: boosted
    trees (absolute loss), extremely randomized trees, and an RBF support-vector machine on
    standardized features.

    Their errors differ (boosting fits sharp splits, the random trees average many rough ones, the
    SVR is smooth in the potential's representation), so over all ions their mean errs less than any one:
    `python benchmarks/delta_learners.py` compares them on fresh seeded splits, not those reported.
    Fixed settings, not tuned on validation rows: those select among families.
    """
    from sklearn.ensemble import ExtraTreesRegressor, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    def imputed(*steps):  # missing representations (a potential that gave none) become the median
        return make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), *steps)

    return {
        "boosted_trees": HistGradientBoostingRegressor(loss="absolute_error", learning_rate=0.05, max_iter=400, max_leaf_nodes=15, min_samples_leaf=10, l2_regularization=1.0, random_state=seed),
        "random_trees": imputed(ExtraTreesRegressor(n_estimators=300, min_samples_leaf=3, max_features=0.3, random_state=seed)),
        "svr": imputed(StandardScaler(), SVR(C=1.0, epsilon=0.02)),
    }


def _delta_regressor(seed: int):
    from sklearn.ensemble import VotingRegressor

    return VotingRegressor(list(delta_learners(seed).items()))


def _head_regressor(seed: int):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # A linear probe: the ridge strength is chosen by leave-one-out on the train rows only.
    return make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))


def fit_family(family: str, inputs: PotentialInputs, features: np.ndarray, ions: np.ndarray, y: np.ndarray, seed: int = 0) -> FamilyModel:
    """Fit `family` on training rows (all ions together; per-ion parts where the family has them)."""
    ions = np.asarray(ions)
    model = FamilyModel(family, fallback={ion: float(np.median(y[ions == ion])) for ion in np.unique(ions)})
    known = np.isfinite(inputs.v_uip)
    if family == "uip_recal":
        for ion in np.unique(ions):
            rows = (ions == ion) & known
            if rows.sum() >= 5:
                a, b = np.polyfit(inputs.v_uip[rows], y[rows], 1)
                model.recal[ion] = (float(a), float(b))
    elif family == "uip_delta":
        import warnings

        model.regressor = _delta_regressor(seed)
        X = delta_features(inputs, features, ions)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.regressor.fit(X[known], (y - inputs.v_uip)[known])
    elif family == "uip_head":
        import warnings

        model.regressor = _head_regressor(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLP convergence notes
            model.regressor.fit(head_features(inputs, ions)[known], y[known])
    elif family != "uip":
        raise VoltmodelsError(f"unknown family {family!r}; use one of {', '.join(FAMILIES)}")
    return model


def calibration_groups(rows: pd.DataFrame, strategy: str) -> np.ndarray | None:
    """The fold groups of `calibrate_cross` for training rows of `strategy`: none on the random split;
    (ion, framework) on the framework split, which holds out an ion's frameworks, not the formula
    across ions (Li's CoO2 rows may train a model tested on Ca's CoO2). Grouping the formula across
    ions held out hosts the test never hides, so the folds were harder than the test, the interval wide."""
    if strategy != "framework":
        return None
    return (rows["working_ion"].astype(str) + "|" + rows["framework_formula"].astype(str)).to_numpy()


#: Folds of the cross-conformal residuals that set the interval.
CALIBRATION_FOLDS = 5


def calibrate_cross(
    model: FamilyModel, inputs: PotentialInputs, features: np.ndarray, ions: np.ndarray, y: np.ndarray, seed: int = 0, groups: np.ndarray | None = None,
    folds: int = CALIBRATION_FOLDS,
) -> None:
    """Set the interval half-widths from out-of-fold residuals of the training rows (cross-conformal).

    Each training row is predicted by the family refitted without its fold, so the residuals come
    from rows no fit of theirs saw, and the validation rows stay for selection alone (the champion
    rule compares families on them). `groups` (ion and framework on the framework split) keeps a
    framework's rows in one fold, as its test rows are frameworks never trained on. The zero-shot
    family fits nothing: its residuals on the training rows are already out of sample.
    """
    ions = np.asarray(ions)
    if model.family == "uip":
        residuals = y - model.predict(inputs, features, ions)
    else:
        from sklearn.model_selection import GroupKFold, KFold

        splitter = GroupKFold(folds) if groups is not None else KFold(folds, shuffle=True, random_state=seed)
        residuals = np.full(len(y), np.nan)
        for fit_rows, held_out in splitter.split(features, y, groups):
            fold_model = fit_family(model.family, inputs.take(fit_rows), features[fit_rows], ions[fit_rows], y[fit_rows], seed=seed)
            residuals[held_out] = y[held_out] - fold_model.predict(inputs.take(held_out), features[held_out], ions[held_out])
    model.half_width["*"] = conformal_half_width(residuals)
    for ion in np.unique(ions):
        rows = (ions == ion) & np.isfinite(residuals)
        if rows.sum() >= MIN_CALIBRATION_ROWS:
            model.half_width[ion] = conformal_half_width(residuals[rows])


# --------------------------------------------------------------------------------------------------
# evaluation on the seeded splits


def evaluate(
    dataset,
    inputs_of: Callable[[pd.DataFrame], PotentialInputs],
    features: pd.DataFrame,
    families: Sequence[str] = FAMILIES,
    strategies: Sequence[str] = SPLIT_STRATEGIES,
    n_repeats: int = 5,
    ions: Sequence[str] | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
    n_jobs: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, FamilyModel]]:
    """Records (ion, split, repeat, method, metrics, coverage), repeat-0 val/test predictions, and the
    models of random repeat 0 (fitted and cross-conformally calibrated on its train rows: what gets registered).
    The splits are fitted in `n_jobs` worker processes (the Delta model's cross-conformal refits are
    minutes per split).

    Repeat k of strategy s uses `dataset.split(ion, s, k)` for every ion, the same rows as the CGCNN
    and the baselines; the pooled families train on the union of every ion's train rows.
    """
    ions = list(ions or dataset.ions)
    records, predictions, final = over_repeated_splits(
        strategies, n_repeats, lambda strategy, repeat: evaluate_split(dataset, inputs_of, features, families, strategy, repeat, ions, seed, log), n_jobs
    )
    return pd.DataFrame(records), (pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame()), final


def split_arrays(dataset, inputs_of: Callable[[pd.DataFrame], PotentialInputs], features: pd.DataFrame, strategy: str, repeat: int):
    """Repeat `repeat` of `strategy`, every ion's rows together: (rows, potential inputs, features,
    target voltages, ions, part) with part the rows' 'train' / 'val' / 'test'."""
    rows = pd.concat([dataset.split(ion, strategy, repeat) for ion in dataset.ions], ignore_index=True)
    X = features.loc[rows["id_discharge"]].to_numpy(np.float64)
    return rows, inputs_of(rows), X, rows["average_voltage"].to_numpy(np.float64), rows["working_ion"].to_numpy(), rows["split"].to_numpy()


def evaluate_split(
    dataset,
    inputs_of: Callable[[pd.DataFrame], PotentialInputs],
    features: pd.DataFrame,
    families: Sequence[str],
    strategy: str,
    repeat: int,
    ions: Sequence[str] | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> tuple[list[dict], list[pd.DataFrame], dict[str, FamilyModel]]:
    """Every family on repeat `repeat` of `strategy`, all ions pooled: per-ion records, val/test
    predictions of repeat 0, and the fitted models. A task of the evaluation grid."""
    from voltmodels.metrics import regression_metrics

    ions = list(ions or dataset.ions)
    rows, inputs, X, y, row_ions, part = split_arrays(dataset, inputs_of, features, strategy, repeat)

    def take(mask):
        return inputs.take(mask), X[mask], row_ions[mask], y[mask]

    records, predictions, models = [], [], {}
    groups = calibration_groups(rows[part == "train"], strategy)
    for family in families:
        started = time.perf_counter()
        model = fit_family(family, *take(part == "train"), seed=seed + repeat)
        calibrate_cross(model, *take(part == "train"), seed=seed + repeat, groups=groups)
        seconds = time.perf_counter() - started
        models[family] = model
        predicted = model.predict(inputs, X, row_ions)
        half = model.interval(row_ions)
        for ion in ions:
            record = {"ion": ion, "split": strategy, "repeat": repeat, "method": family, "seconds": seconds}
            record.update({f"{name}_{k}": np.nan for name in ("val", "test") for k in ("mae", "rmse", "r2")})
            for name in ("train", "val", "test"):
                mask = (row_ions == ion) & (part == name)
                record[f"n_{name}"] = int(mask.sum())
                if name != "train" and mask.any():
                    record.update({f"{name}_{k}": v for k, v in regression_metrics(y[mask], predicted[mask]).items()})
            for name in ("val", "test") if repeat == 0 else ():
                mask = (row_ions == ion) & (part == name)
                predictions.append(pd.DataFrame({"split": strategy, "method": family, "ion": ion, "part": name, "battery_id": rows.loc[mask, "battery_id"], "true": y[mask], "predicted": predicted[mask], "half_width": half[mask]}))
            test = (row_ions == ion) & (part == "test")
            record["test_coverage"] = float(np.mean(np.abs(y[test] - predicted[test]) <= half[test])) if test.any() else np.nan
            record["test_in_interval"] = int(np.sum(np.abs(y[test] - predicted[test]) <= half[test]))
            record["test_no_potential"] = int((~np.isfinite(inputs.v_uip[test])).sum())
            records.append(record)
        if log is not None:
            mean = np.nanmean([r["test_mae"] for r in records[-len(ions):]])
            log(f"{strategy} repeat {repeat} {family}: mean per-ion test MAE {mean:.3f} V ({seconds:.1f} s)")
    return records, predictions, models
