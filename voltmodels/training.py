"""Training loop for CGCNN: MSE loss, MAE metric, early stopping, best-epoch checkpoint.

MLflow is not imported here: callers pass `on_epoch` to log or prune.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from voltmodels.config import torch_device
from voltmodels.graphs.batch import collate
from voltmodels.graphs.graph import CrystalGraph, GraphSettings
from voltmodels.model import CGCNN


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    patience: int = 40  # epochs without validation improvement before stopping
    seed: int = 0
    #: "all" trains everything; "head" trains only the hidden FC + output layers (frozen body).
    trainable: str = "all"
    #: Where the epochs run ("cpu", "cuda"); the returned model is always on the CPU.
    device: str = field(default_factory=torch_device)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GraphSet:
    """Graphs with their targets and row ids, in one fixed order."""

    graphs: list[CrystalGraph]
    targets: np.ndarray
    ids: list[str]

    def __len__(self) -> int:
        return len(self.graphs)


@dataclass
class TrainResult:
    model: CGCNN  # at its best validation epoch
    best_epoch: int
    best_val_mae: float
    history: list[dict] = field(default_factory=list)
    seconds_per_epoch: float = 0.0
    stopped_early: bool = False


class Pruned(Exception):
    """Raised by an `on_epoch` callback to abandon training (Optuna pruning)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def iterate_batches(data: GraphSet, settings: GraphSettings, batch_size: int, rng: np.random.Generator | None = None, device: torch.device | str = "cpu"):
    """(GraphBatch, targets) on `device`; shuffled and without a lone leftover when `rng` is given."""
    order = rng.permutation(len(data)) if rng is not None else np.arange(len(data))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if rng is not None and len(idx) < 2:
            continue  # BatchNorm needs two samples; a lone leftover is skipped this epoch
        batch = collate([data.graphs[i] for i in idx], settings)
        target = torch.as_tensor(data.targets[idx], dtype=torch.float32)
        yield batch.to(device), target.to(device)


@torch.no_grad()
def predict(model: CGCNN, data: GraphSet, settings: GraphSettings, batch_size: int = 256) -> np.ndarray:
    """Predicted volts for every graph, in order (on whatever device the model is)."""
    model.eval()
    device = model_device(model)
    out = [model.predict_volts(batch).cpu().numpy() for batch, _ in iterate_batches(data, settings, batch_size, device=device)]
    return np.concatenate(out) if out else np.zeros(0)


def _set_train_mode(model: CGCNN, trainable: str) -> None:
    model.train()
    if trainable == "head":
        # A frozen body is a fixed feature extractor: keep its BatchNorm statistics from the source task.
        for name, module in model.named_children():
            if name not in CGCNN.HEAD_LAYERS:
                module.eval()


def train(
    model: CGCNN,
    train_set: GraphSet,
    val_set: GraphSet,
    settings: GraphSettings,
    config: TrainConfig,
    on_epoch: Callable[[int, dict], None] | None = None,
    progress: bool = True,
    fit_scaler: bool = True,
) -> TrainResult:
    """Train on standardized targets; keep the weights of the best validation-MAE epoch.

    Runs on `config.device`; `model` is moved there, and the returned best model is on the CPU.
    """
    seed_everything(config.seed)
    device = torch.device(config.device)
    model.to(device)
    if fit_scaler:
        model.set_target_scaler(train_set.targets.mean(), train_set.targets.std())
    if config.trainable == "head":
        model.freeze_body()
    else:
        for param in model.parameters():
            param.requires_grad = True
    model.local_head.requires_grad_(False)  # trained separately, for interpretation only
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=max(3, config.patience // 4))
    loss_fn = nn.MSELoss()
    mean, std = float(model.target_mean), float(model.target_std)
    rng = np.random.default_rng(config.seed)
    best = TrainResult(model=copy.deepcopy(model), best_epoch=-1, best_val_mae=float("inf"))
    history, epoch_times = [], []
    if config.trainable == "head":
        # A frozen body (BatchNorm in eval mode) maps each crystal to a fixed vector: compute those
        # once and train the head on them, instead of re-running the convolutions every epoch.
        with torch.no_grad():
            model.eval()
            frozen_features = torch.cat([model.pooled(b) for b, _ in iterate_batches(train_set, settings, 256, device=device)])
            frozen_val = torch.cat([model.pooled(b) for b, _ in iterate_batches(val_set, settings, 256, device=device)])
        frozen_targets = torch.as_tensor(train_set.targets, dtype=torch.float32, device=device)

        def validation_predictions() -> np.ndarray:
            model.eval()
            with torch.no_grad():
                return (model.head(frozen_val) * model.target_std + model.target_mean).cpu().numpy()
    else:

        def validation_predictions() -> np.ndarray:
            return predict(model, val_set, settings)
    # The starting weights are a candidate too (epoch -1): fine-tuning a model that already fits
    # the task then never returns something worse on validation than what it started from.
    best.best_val_mae = float(np.mean(np.abs(validation_predictions() - val_set.targets)))
    bar = tqdm(range(config.epochs), desc="epochs", disable=not progress, leave=False)
    for epoch in bar:
        started = time.perf_counter()
        _set_train_mode(model, config.trainable)
        # Sums stay tensors on the device: no host sync per batch.
        total_loss, total_abs, n = torch.zeros((), device=device), torch.zeros((), device=device), 0
        if config.trainable == "head":
            order = torch.as_tensor(rng.permutation(len(frozen_targets)), device=device)
            batches = ((frozen_features[idx], frozen_targets[idx]) for idx in order.split(config.batch_size))
            forward = model.head
        else:
            batches = iterate_batches(train_set, settings, config.batch_size, rng, device=device)
            forward = model
        for batch, target in batches:
            pred = forward(batch)
            loss = loss_fn(pred, (target - mean) / std)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.detach() * len(target)
            total_abs += (pred.detach() * std + mean - target).abs().sum()
            n += len(target)
        epoch_times.append(time.perf_counter() - started)
        val_mae = float(np.mean(np.abs(validation_predictions() - val_set.targets)))
        scheduler.step(val_mae)
        metrics = {"train_loss": float(total_loss) / max(n, 1), "train_mae": float(total_abs) / max(n, 1), "val_mae": val_mae}
        history.append({"epoch": epoch, **metrics})
        if val_mae < best.best_val_mae:
            best.model, best.best_epoch, best.best_val_mae = copy.deepcopy(model), epoch, val_mae
        bar.set_postfix(val_mae=f"{val_mae:.3f}", best=f"{best.best_val_mae:.3f}")
        if on_epoch is not None:
            on_epoch(epoch, metrics)  # may raise Pruned
        if epoch - best.best_epoch >= config.patience:
            best.stopped_early = True
            break
    best.history = history
    best.seconds_per_epoch = float(np.mean(epoch_times)) if epoch_times else 0.0
    best.model.cpu().eval()
    model.cpu()
    return best


@torch.no_grad()
def fit_local_head(model: CGCNN, data: GraphSet, settings: GraphSettings, ridge: float = 1e-3) -> float:
    """Fit the paper's Eq. 2 local-voltage head with the body frozen; returns its train MAE in volts.

    The crystal voltage is the mean of per-atom linear outputs, and the mean of a linear map is the
    linear map of the mean, so the head is exactly a ridge regression of the standardized targets
    on the mean-pooled last-convolution vectors: closed form, no extra training epochs.
    """
    from voltmodels.model import crystal_mean

    model.eval()
    pooled = []
    for batch, _ in iterate_batches(data, settings, 256):
        pooled.append(crystal_mean(model.atom_vectors(batch), batch.crystal_index, batch.n_crystals))
    x = torch.cat(pooled).double()
    x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    y = ((torch.as_tensor(data.targets) - model.target_mean) / model.target_std).double().unsqueeze(1)
    gram = x1.T @ x1 + ridge * torch.eye(x1.shape[1], dtype=x.dtype)
    coef = torch.linalg.solve(gram, x1.T @ y).squeeze(1)
    model.local_head.weight.copy_(coef[:-1].float().unsqueeze(0))
    model.local_head.bias.copy_(coef[-1:].float())
    fitted = (x1 @ coef).float() * model.target_std + model.target_mean
    return float((fitted - torch.as_tensor(data.targets)).abs().mean())


def concat_graph_sets(parts: Sequence[GraphSet]) -> GraphSet:
    """One GraphSet of several (e.g. the training rows of every ion, for a shared multi-ion model)."""
    return GraphSet(
        graphs=[g for part in parts for g in part.graphs],
        targets=np.concatenate([part.targets for part in parts]).astype(np.float32),
        ids=[i for part in parts for i in part.ids],
    )


def build_graph_sets(rows, graphs: dict, split_column: str = "split") -> dict[str, GraphSet]:
    """GraphSets per part from rows with `id_discharge`, `average_voltage` and a split column: train,
    val, test, and calib, the training rows `dataset.split` set aside (its `calibration` column) for
    the conformal interval alone, so no training, early stopping or selection has seen them."""
    sets = {}
    calibration = rows["calibration"].to_numpy(bool) if "calibration" in rows else np.zeros(len(rows), bool)
    labels = np.where(calibration, "calib", rows[split_column].to_numpy(object))
    for part in ("train", "val", "test", "calib"):
        sub = rows[(labels == part) & rows["id_discharge"].isin(list(graphs)).to_numpy()]
        sets[part] = GraphSet(
            graphs=[graphs[m] for m in sub["id_discharge"]],
            targets=sub["average_voltage"].to_numpy(dtype=np.float32),
            ids=list(sub["battery_id"]),
        )
    return sets
