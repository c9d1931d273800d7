"""Entry point `train_li`: Optuna-tuned CGCNN on Li electrodes, logged and registered as voltage-cgcnn-Li."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import optuna
from optuna.trial import TrialState

from pipelines.common import as_int, STEP_TAG, main_guard, step_run
from pipelines.evaluation import log_final_model
from voltmodels.config import VoltmodelsError, cache_dir, set_torch_threads
from voltmodels.data.dataset import load_dataset
from voltmodels.featurized import dataset_graphs
from voltmodels.graphs.graph import GraphSettings
from voltmodels.model import CGCNN, load_checkpoint, save_checkpoint
from voltmodels.training import Pruned, build_graph_sets, train
from voltmodels.tuning import configs_from_params, create_study, optimize_capped, profile, report_epoch, suggest

ION = "Li"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="latest", help="curate run id or dataset folder (default: latest curate run)")
    p.add_argument("--profile", default="quick", choices=["quick", "paper"])
    p.add_argument("--n-trials", type=as_int, default=0, help="trials the study should have (resumes an existing study); 0: the profile's")
    p.add_argument("--epochs", type=as_int, default=0, help="max epochs per trial; 0: the profile's")
    p.add_argument("--timeout", type=float, default=0, help="seconds after which no new trial starts; 0: the profile's (quick none, paper 30 min)")
    p.add_argument("--storage", default="", help="Optuna RDB URL (default: SQLite in the cache folder)")
    p.add_argument("--study-name", default="")
    p.add_argument("--seed", type=as_int, default=0)
    p.add_argument("--split", default="random", choices=["random", "framework"])
    p.add_argument("--n-workers", type=as_int, default=1, help="processes working on the study")
    p.add_argument("--register", default="true", choices=["true", "false"])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--parent-run-id", default="", help=argparse.SUPPRESS)
    p.add_argument("--max-trials", type=as_int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--worker-index", type=as_int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_objective(sets, settings: GraphSettings, epochs: int, patience: int, seed: int, parent_run_id: str):
    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial)
        model_config, train_config = configs_from_params(params, epochs, patience, seed, settings.n_edge_features)
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True, parent_run_id=parent_run_id) as run:
            mlflow.set_tags({STEP_TAG: "train_li_trial", "optuna_trial": trial.number, "optuna_study": trial.study.study_name})
            mlflow.log_params(params)
            trial.set_user_attr("mlflow_run_id", run.info.run_id)

            def on_epoch(epoch: int, metrics: dict) -> None:
                mlflow.log_metrics(metrics, step=epoch)
                report_epoch(trial, epoch, metrics["val_mae"])

            started = time.perf_counter()
            try:
                result = train(CGCNN(model_config), sets["train"], sets["val"], settings, train_config, on_epoch=on_epoch, progress=False)
            except Pruned:
                mlflow.set_tag("pruned", "true")
                raise optuna.TrialPruned()
            mlflow.log_metrics(
                {"best_val_mae": result.best_val_mae, "best_epoch": result.best_epoch, "seconds_per_epoch": result.seconds_per_epoch, "train_seconds": time.perf_counter() - started}
            )
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "checkpoint.pt"
                save_checkpoint(result.model, path, settings.to_dict(), {"ion": ION, "params": params})
                mlflow.log_artifact(str(path))  # in the tracking store, so any worker's best trial can be fetched
            trial.set_user_attr("seconds_per_epoch", result.seconds_per_epoch)
            return result.best_val_mae

    return objective


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_workers(study, objective, args, total_trials: int, timeout: float | None) -> None:
    """Work on the study here and in n_workers - 1 extra processes; trials stop at `total_trials`."""
    threads = int(os.environ.get("VOLTMODELS_TORCH_THREADS") or 0) or 1
    workers = []
    for index in range(1, max(1, args.n_workers)):
        cmd = [sys.executable, "-m", "pipelines.train_li", "--worker", "--dataset", args.dataset_resolved, "--profile", args.profile,
               "--epochs", str(args.epochs_resolved), "--storage", args.storage_resolved, "--study-name", study.study_name,
               "--seed", str(args.seed), "--split", args.split, "--parent-run-id", args.parent_run_id, "--max-trials", str(total_trials),
               "--timeout", str(args.timeout), "--worker-index", str(index)]
        env = {**os.environ, "VOLTMODELS_TORCH_THREADS": str(threads), "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
        env.pop("MLFLOW_RUN_ID", None)
        workers.append(subprocess.Popen(cmd, env=env))
    set_torch_threads(threads)
    optimize_capped(study, objective, total_trials, timeout)
    for worker in workers:
        if worker.wait() != 0:
            print(f"warning: an Optuna worker exited with status {worker.returncode}", file=sys.stderr)


def prepare(args):
    dataset = load_dataset(args.dataset)
    settings = GraphSettings()
    graphs, errors = dataset_graphs(dataset, ION, settings)
    rows = dataset.split(ION, args.split)
    return dataset, settings, graphs, errors, rows, build_graph_sets(rows, graphs)


def worker_main(args) -> None:
    set_torch_threads()
    dataset, settings, graphs, errors, rows, sets = prepare(args)
    prof = profile(args.profile)
    # Own sampler seed per worker: with the parent's seed every process proposes the same parameters.
    study = create_study(args.study_name, args.storage, args.seed + 7919 * args.worker_index)
    objective = make_objective(sets, settings, args.epochs, prof.patience, args.seed, args.parent_run_id)
    optimize_capped(study, objective, args.max_trials, args.timeout or None)


def _store_created() -> int | None:
    """Creation time (ms) of the tracking store's Default experiment, made with the store."""
    try:
        return mlflow.tracking.MlflowClient().get_experiment("0").creation_time
    except mlflow.exceptions.MlflowException:
        return None


@main_guard
def main(argv=None) -> str | None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return None
    set_torch_threads()
    prof = profile(args.profile)
    n_trials = args.n_trials or prof.n_trials
    args.timeout = args.timeout or prof.search_seconds  # workers get the resolved budget too
    epochs = args.epochs or prof.epochs
    dataset, settings, graphs, errors, rows, sets = prepare(args)
    storage = args.storage or f"sqlite:///{cache_dir() / 'optuna.db'}"
    # The default study belongs to one tracking store: its trials point at runs (and checkpoints)
    # there, so another store (tests, a server) must not resume it, nor a new store made at the same
    # URI (mlflow.db deleted to start afresh): the Default experiment's creation time tells those apart.
    store = hashlib.sha1(f"{mlflow.get_tracking_uri()}|{_store_created()}".encode()).hexdigest()[:8]
    study_name = args.study_name or f"voltage-cgcnn-{ION}-{dataset.digest}-{args.split}-{args.profile}-{store}"
    logged = {**vars(args), "n_trials": n_trials, "epochs": epochs, "storage": storage.split("@")[-1], "study_name": study_name}
    for internal in ("worker", "parent_run_id", "max_trials", "worker_index"):
        logged.pop(internal)
    with step_run("train_li", logged) as parent:
        mlflow.set_tags({"ion": ION, "dataset_digest": dataset.digest, "split": args.split})
        mlflow.log_metrics({"n_graph_errors": len(errors), **{f"n_{k}": len(v) for k, v in sets.items()}})
        study = create_study(study_name, storage, args.seed)
        args.dataset_resolved = str(dataset.folder)
        args.epochs_resolved, args.storage_resolved, args.parent_run_id = epochs, storage, parent.info.run_id
        # n_trials is the study's target: rerunning with the same study resumes it up to the target.
        started = time.perf_counter()
        if finished_trials(study) < n_trials:
            run_workers(study, make_objective(sets, settings, epochs, prof.patience, args.seed, parent.info.run_id), args, n_trials, args.timeout or None)
        states = [t.state.name for t in study.trials]
        mlflow.log_metrics(
            {"search_seconds": time.perf_counter() - started, "n_trials_total": len(states), "n_trials_complete": states.count("COMPLETE"), "n_trials_pruned": states.count("PRUNED")}
        )
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            raise VoltmodelsError(f"No trial of study {study_name} completed (all pruned or failed); see the trial runs, or raise n_trials/epochs.")
        best = study.best_trial
        mlflow.log_params({f"best_{k}": v for k, v in best.params.items()})
        mlflow.log_metric("best_trial_val_mae", best.value)
        if "seconds_per_epoch" in best.user_attrs:
            mlflow.log_metric("seconds_per_epoch", best.user_attrs["seconds_per_epoch"])
        fig = optuna.visualization.matplotlib.plot_optimization_history(study).figure
        mlflow.log_figure(fig, "optuna_history.png")
        checkpoint = mlflow.artifacts.download_artifacts(run_id=best.user_attrs["mlflow_run_id"], artifact_path="checkpoint.pt")
        model, _, _ = load_checkpoint(checkpoint)
        version = log_final_model(
            model, ION, sets, settings, dataset, rows, register=args.register == "true",
            tags={"trial_params": json.dumps(best.params, sort_keys=True), "optuna_study": study_name, "best_trial": best.number},
        )
        print(f"Li model: best trial {best.number} val MAE {best.value:.3f} V; registered version {version}")
    return parent.info.run_id


if __name__ == "__main__":
    main()
