"""Transfer of the Li CGCNN to another working ion, and the models it is compared with.

Methods, all evaluated on the same split of the target ion:
  li_direct  the Li model applied as is;
  scratch    a CGCNN of the same architecture trained on the ion alone;
  freeze     the paper's layer-freezing transfer: embedding and convolutions fixed, only the
             hidden FC layer and the output retrained;
  finetune   every layer retrained from the Li weights at a low learning rate (the paper's other
             scenario);
  multi_direct, multi_finetune
             a shared multi-ion CGCNN trained on the training rows of every ion of the split (the
             working-ion atoms are graph nodes, so the element embedding is the ion embedding),
             applied as is, and fine-tuned on the ion at the low learning rate. Not in the paper:
             it lets data-poor ions (Al: ~100 training rows) borrow from all the others.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from voltmodels.graphs.graph import GraphSettings
from voltmodels.model import CHECKPOINT_FORMAT, CGCNN, CGCNNConfig, load_checkpoint, save_checkpoint
from voltmodels.training import GraphSet, TrainConfig, TrainResult, build_graph_sets, concat_graph_sets, predict, train
from voltmodels.metrics import regression_metrics

METHODS = ("li_direct", "scratch", "freeze", "finetune")
MULTI_METHODS = ("multi_direct", "multi_finetune")  # need a shared multi-ion model of the split
TRANSFER_MODES = ("freeze", "finetune")  # the `mode` param chooses among these
#: Registered for the ion; `@champion` goes to whichever has the lowest validation MAE. Scratch is a
#: candidate too: on several ions a CGCNN trained on the ion alone rivals the transferred ones.
REGISTERED_METHODS = ("scratch", "freeze", "finetune", "multi_direct", "multi_finetune")
MIN_ROWS = 20  # below this a train/val/test split leaves nothing meaningful to test


@dataclass(frozen=True)
class TransferConfig:
    epochs: int = 200
    patience: int = 30
    batch_size: int = 32
    lr_freeze: float = 3e-3
    lr_finetune: float = 3e-4
    lr_scratch: float = 2e-3
    # The shared multi-ion model sees ~3,000 training rows, like Li: it is trained with the Li
    # search's best learning rate, weight decay and batch size (the pipeline reads them from the base
    # model's version; these defaults are the offline study's 48-trial search).
    lr_multi: float = 4.7365524991025715e-3
    multi_weight_decay: float = 1.5345793924782016e-05
    multi_batch_size: int = 128
    weight_decay: float = 1e-5
    seed: int = 0

    def multi_train_config(self, repeat: int) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs, learning_rate=self.lr_multi, weight_decay=self.multi_weight_decay, batch_size=self.multi_batch_size, patience=self.patience,
            seed=self.seed + repeat,
        )


#: The Li search's parameters that the shared multi-ion model takes over (it sees ~3,000 rows, like Li).
MULTI_FROM_TRIAL = {"learning_rate": "lr_multi", "weight_decay": "multi_weight_decay", "batch_size": "multi_batch_size"}


def transfer_config(epochs: int, patience: int, seed: int, trial_params: dict | None = None, **overrides) -> TransferConfig:
    """The transfer settings of a profile, with the Li champion's tuned learning rate, weight decay
    and batch size (its `trial_params`) for the shared multi-ion model; the defaults where absent."""
    trial_params = trial_params or {}
    multi = {field: type(getattr(TransferConfig, field))(trial_params[key]) for key, field in MULTI_FROM_TRIAL.items() if key in trial_params}
    return TransferConfig(epochs=epochs, patience=patience, seed=seed, **{**multi, **overrides})


def fit_method(
    method: str, base: CGCNN, sets: dict[str, GraphSet], settings: GraphSettings, config: TransferConfig, multi_base: CGCNN | None = None
) -> tuple[CGCNN, TrainResult | None]:
    """The model of one method for one split (li_direct / multi_direct: the base model, untouched)."""
    # Re-standardizing the targets to the ion's mean and std recalibrates a Li model's output to the
    # ion's voltage range; the multi-ion model already predicts this ion in volts, so it keeps its scaler.
    fit_scaler = method not in MULTI_METHODS
    if method in MULTI_METHODS:
        if multi_base is None:
            raise ValueError(f"method {method} needs the shared multi-ion model of the split")
        base, method = multi_base, {"multi_direct": "li_direct", "multi_finetune": "finetune"}[method]
    if method == "li_direct":
        return base, None
    if method == "scratch":
        model, lr, trainable = CGCNN(base.config), config.lr_scratch, "all"
    elif method == "freeze":
        model, lr, trainable = copy.deepcopy(base), config.lr_freeze, "head"
    elif method == "finetune":
        model, lr, trainable = copy.deepcopy(base), config.lr_finetune, "all"
    else:
        raise ValueError(f"unknown transfer method {method!r}")
    train_config = TrainConfig(
        epochs=config.epochs,
        learning_rate=lr,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        patience=config.patience,
        seed=config.seed,
        trainable=trainable,
    )
    result = train(model, sets["train"], sets["val"], settings, train_config, progress=False, fit_scaler=fit_scaler)
    return result.model, result


@dataclass
class MethodOutcome:
    """One method on one split: its model, validation MAE and test predictions."""

    method: str
    model: CGCNN
    val_mae: float
    test_pred: np.ndarray
    test_metrics: dict
    seconds: float

    def record(self, **keys) -> dict:
        return {**keys, "method": self.method, "val_mae": self.val_mae, **{f"test_{k}": v for k, v in self.test_metrics.items()}, "seconds": self.seconds}


def split_sets_per_ion(dataset, graphs: dict, strategy: str, repeat: int) -> dict[str, dict[str, GraphSet]]:
    """Every ion's train/val/test GraphSets of one seeded split (ions with at least MIN_ROWS rows)."""
    return {ion: build_graph_sets(dataset.split(ion, strategy, repeat), graphs) for ion in dataset.ions if len(dataset.rows(ion)) >= MIN_ROWS}


def train_multi_ion(config: CGCNNConfig, per_ion_sets: dict[str, dict[str, GraphSet]], settings: GraphSettings, train_config: TrainConfig) -> CGCNN:
    """A CGCNN of the base architecture trained from scratch on every ion's training rows of one split.

    Validation (early stopping) uses every ion's validation rows; no ion's test rows are seen, so
    the model is a fair starting point for any of these ions on this split.
    """
    union = {part: concat_graph_sets([sets[part] for sets in per_ion_sets.values()]) for part in ("train", "val")}
    return train(CGCNN(config), union["train"], union["val"], settings, train_config, progress=False).model


#: Part of every cache key: bump it when `train_multi_ion` changes what a cached model would be.
MULTI_ION_CACHE_VERSION = 1


def multi_ion_cache_path(cache: Path, dataset_digest: str, strategy: str, repeat: int, model_config: CGCNNConfig, train_config: TrainConfig, settings: GraphSettings) -> Path:
    """Where the shared model of one split lives: the key is everything that determines it (the
    device is left out: CPU and GPU trainings are interchangeable)."""
    spec = {
        "version": MULTI_ION_CACHE_VERSION, "checkpoint_format": CHECKPOINT_FORMAT, "dataset": dataset_digest, "split": strategy, "repeat": repeat, "model": model_config.to_dict(),
        "train": {k: v for k, v in asdict(train_config).items() if k != "device"}, "graphs": settings.to_dict(),
    }
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache) / f"multi_ion_{strategy}_{repeat}_{key}.pt"


def shared_multi_ion_model(
    dataset, graphs: dict, model_config: CGCNNConfig, settings: GraphSettings, train_config: TrainConfig, strategy: str, repeat: int, cache: Path | None = None
) -> tuple[CGCNN, bool]:
    """The shared multi-ion model of one split and whether it came from `cache`.

    One training takes ~30 min on a CPU core, and every ion of the split, every later run (and an
    offline study whose files are copied in) uses the same model: it is trained once per key.
    """
    path = multi_ion_cache_path(cache, dataset.digest, strategy, repeat, model_config, train_config, settings) if cache is not None else None
    if path is not None and path.exists():
        return load_checkpoint(path)[0], True
    model = train_multi_ion(model_config, split_sets_per_ion(dataset, graphs, strategy, repeat), settings, train_config)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        save_checkpoint(model, partial, settings.to_dict(), {"dataset": dataset.digest, "split": strategy, "repeat": repeat, "train": asdict(train_config)})
        partial.replace(path)  # atomic: a concurrent run never reads half a file
    return model, False


def compare_methods(
    methods, base: CGCNN, sets: dict[str, GraphSet], settings: GraphSettings, config: TransferConfig, multi_base: CGCNN | None = None
) -> list[MethodOutcome]:
    """Fit and evaluate each method on the same train/val/test sets."""
    outcomes = []
    for method in methods:
        started = time.perf_counter()
        model, _ = fit_method(method, base, sets, settings, config, multi_base)
        test_pred = predict(model, sets["test"], settings)
        val_mae = regression_metrics(sets["val"].targets, predict(model, sets["val"], settings))["mae"]
        metrics = regression_metrics(sets["test"].targets, test_pred)
        outcomes.append(MethodOutcome(method, model, val_mae, test_pred, metrics, time.perf_counter() - started))
    return outcomes


def comparison_tables(summary: pd.DataFrame, method_order, repeats: pd.Series) -> dict[str, pd.DataFrame]:
    """Per split, ions × methods of "mean ± std" cells ("mean" alone from one repeat; methods in
    `method_order`), with a repeats column from `repeats` (indexed by ion and split)."""
    summary = summary.assign(cell=summary.apply(lambda r: f"{r.mae_mean:.3f}" if pd.isna(r.mae_std) else f"{r.mae_mean:.3f} ± {r.mae_std:.3f}", axis=1))
    tables = {}
    for split, part in summary.groupby("split", sort=False):
        wide = part.pivot_table(index="ion", columns="method", values="cell", aggfunc="first")
        wide = wide[[m for m in method_order if m in wide.columns]].fillna("–")
        wide = wide.reindex([i for i in dict.fromkeys(part["ion"])])
        wide.insert(0, "repeats", [repeats.get((ion, split)) for ion in wide.index])
        tables[split] = wide
    return tables


def with_selected(records: pd.DataFrame, candidates=REGISTERED_METHODS) -> pd.DataFrame:
    """`records` plus a method "selected" per ion, split and repeat: the candidate with the lowest
    validation MAE on that split (its name in `selected_method`)."""
    from voltmodels.metrics import with_selected_rows

    return with_selected_rows(records, records["method"].isin(candidates), "method")
