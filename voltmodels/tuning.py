"""Optuna search over CGCNN hyperparameters; profiles that size the work.

The study is plain Optuna (TPE + median pruning on per-epoch validation MAE) with any RDB storage,
so several processes can share one study.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from voltmodels.config import VoltmodelsError
from voltmodels.model import CGCNNConfig
from voltmodels.training import Pruned, TrainConfig


@dataclass(frozen=True)
class Profile:
    n_trials: int
    epochs: int  # per trial
    patience: int
    n_repeats: int  # seeded splits for small-data statistics (transfer, baselines)
    transfer_epochs: int
    #: Seconds after which the Li search starts no new trial (0: none). On 2 CPU cores a paper trial
    #: takes 5-15 min: the budget keeps the paper fit within 2 hours, pruning ends weak trials early.
    search_seconds: float = 0


PROFILES = {
    # CI: minutes on 2 cores, exercises every code path.
    "quick": Profile(n_trials=2, epochs=3, patience=3, n_repeats=2, transfer_epochs=5),
    # The real numbers.
    "paper": Profile(n_trials=8, epochs=120, patience=25, n_repeats=5, transfer_epochs=120, search_seconds=1800),
}

#: Defaults from the reference CGCNN / the paper (used as the first trial).
DEFAULT_PARAMS = {"learning_rate": 2e-3, "weight_decay": 1e-5, "atom_fea_len": 64, "n_conv": 3, "h_fea_len": 128, "batch_size": 64}


def profile(name: str) -> Profile:
    if name not in PROFILES:
        raise VoltmodelsError(f"Unknown profile {name!r}; use {' or '.join(PROFILES)}.")
    return PROFILES[name]


def suggest(trial: optuna.Trial) -> dict:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-3, log=True),
        "atom_fea_len": trial.suggest_categorical("atom_fea_len", [32, 64, 96]),
        "n_conv": trial.suggest_int("n_conv", 2, 5),
        "h_fea_len": trial.suggest_categorical("h_fea_len", [64, 128, 256]),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
    }


def report_epoch(trial: optuna.Trial, epoch: int, val_mae: float) -> None:
    """Report a trial's epoch to Optuna; raise `Pruned` when the pruner stops it."""
    trial.report(val_mae, epoch)
    if trial.should_prune():
        raise Pruned()


def configs_from_params(params: dict, epochs: int, patience: int, seed: int, edge_fea_len: int) -> tuple[CGCNNConfig, TrainConfig]:
    model = CGCNNConfig(atom_fea_len=int(params["atom_fea_len"]), n_conv=int(params["n_conv"]), h_fea_len=int(params["h_fea_len"]), edge_fea_len=edge_fea_len)
    train = TrainConfig(
        epochs=epochs,
        learning_rate=float(params["learning_rate"]),
        weight_decay=float(params["weight_decay"]),
        batch_size=int(params["batch_size"]),
        patience=patience,
        seed=seed,
    )
    return model, train


#: A trial whose process died (killed session, lost worker) stops sending heartbeats; after the
#: grace period the next optimize call marks it FAIL, so a resumed study does not count it as started.
HEARTBEAT_SECONDS, GRACE_SECONDS = 60, 300


def create_study(name: str, storage, seed: int) -> optuna.Study:
    """Create or join a study; a fresh one starts with the reference defaults as its first trial.

    `storage` is None (in memory), an RDB URL (SQLite, PostgreSQL...: with trial heartbeats) or
    any Optuna storage object.
    """
    if isinstance(storage, str) and storage:
        storage = optuna.storages.RDBStorage(storage, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=10),
        load_if_exists=True,
    )
    if not study.trials:
        study.enqueue_trial(DEFAULT_PARAMS, skip_if_exists=True)
    return study


def optimize_capped(study, objective, max_trials: int, timeout: float | None) -> None:
    """Run trials one at a time while the study has started fewer than `max_trials`.

    Checked before each trial, so a worker that comes up after the others have started the last
    trials starts none; Optuna's MaxTrialsCallback only checks after a trial, so a late worker
    always starts one more.
    """
    deadline = time.monotonic() + timeout if timeout else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # trials of dead processes are not "started"
    # An enqueued (WAITING) trial is not started yet: the next optimize call runs it.
    started = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    while len(study.get_trials(deepcopy=False, states=started)) < max_trials:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            break
        study.optimize(objective, n_trials=1, timeout=remaining, gc_after_trial=True)
