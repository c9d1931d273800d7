"""The paper-profile accuracy study without a tracking store, spread over processes (and a GPU).

For a machine that has torch, pymatgen and Optuna but no MLflow (a rented GPU box): the same
library code and seeded splits as `train_li`, `benchmarks/li_accuracy.py` and `transfer`, with the
MLflow logging left out. Phases, in order:

  search    Optuna (TPE + median pruning, reference defaults first) over CGCNN hyperparameters on
            the Li random split 0, `--workers` processes sharing one journal-file study;
  li        the best parameters trained on Li over `--li-seeds` seeds of the random and the
            framework split, beside the random forest on the same rows (when --features is given);
            the random-split seed-0 model is the transfer base, as the registered champion is;
  multi     a shared multi-ion CGCNN per split strategy and repeat, trained on the union of every
            ion's training rows of that split (the atoms of the working ion are nodes of the
            graph, so the ion is an input like any other element); no ion's test rows are seen;
  transfer  per ion, strategy and repeat: li_direct, scratch, freeze, finetune, and multi_direct /
            multi_finetune (the shared model as is, and fine-tuned on the ion).

Every result is appended to a CSV in --out when it is ready, so a run cut short keeps what it did.

    VOLTMODELS_DEVICE=cuda python benchmarks/offline_study.py --dataset DATASET_DIR \\
        --features features.parquet --out results --workers 12 --search-seconds 240

What to copy to the GPU box: the dataset folder (`load_dataset("latest").folder`), the graph cache
(`$VOLTMODELS_CACHE/graphs`, point VOLTMODELS_CACHE at its parent there), and for the RF column
`voltmodels.baselines.dataset_features(dataset).to_parquet("features.parquet")`; pymatgen-core,
monty, orjson, ruamel.yaml, optuna and colorlog as wheels if the box lacks them.

Bring the search home with `python benchmarks/offline_study.py --enqueue-best results` (adds the
best parameters as the next trial of the project's Li study; `train_li` then trains, logs and
registers it). Print the tables with `--report results`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from voltmodels.config import SUPPORTED_IONS, parse_ions, set_torch_threads, torch_device  # noqa: E402
from voltmodels.data.dataset import load_dataset  # noqa: E402
from voltmodels.featurized import dataset_graphs  # noqa: E402
from voltmodels.graphs.graph import GraphSettings  # noqa: E402
from voltmodels.model import CGCNN, load_checkpoint, save_checkpoint  # noqa: E402
from voltmodels.training import GraphSet, Pruned, build_graph_sets, concat_graph_sets, predict, train  # noqa: E402
from voltmodels.metrics import regression_metrics, summarize  # noqa: E402
from voltmodels.transfer import (  # noqa: E402
    METHODS, MULTI_METHODS, TransferConfig, compare_methods, comparison_tables, multi_ion_cache_path, shared_multi_ion_model, split_sets_per_ion, with_selected,
)
from voltmodels.tuning import DEFAULT_PARAMS, configs_from_params, create_study, optimize_capped, report_epoch, suggest  # noqa: E402

STUDY = "li-offline"
SPLITS = ("random", "framework")

# Per worker process: the dataset and all its graphs, loaded once.
_STATE: dict = {}


def _init_worker(args: argparse.Namespace) -> None:
    set_torch_threads(1)
    dataset = load_dataset(args.dataset)
    settings = GraphSettings()
    graphs, errors = dataset_graphs(dataset, None, settings, progress=False)
    _STATE.update(args=args, dataset=dataset, settings=settings, graphs=graphs, n_graph_errors=len(errors))


def _append(path: Path, row: dict) -> None:
    frame = pd.DataFrame([row])
    frame.to_csv(path, mode="a", header=not path.exists(), index=False)


def _sets(ion: str, strategy: str, repeat: int) -> dict[str, GraphSet]:
    return build_graph_sets(_STATE["dataset"].split(ion, strategy, repeat), _STATE["graphs"])


def _journal(out: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(out / "optuna.journal")))


def search_worker(index: int, n_trials: int, deadline: float) -> int:
    args, settings = _STATE["args"], _STATE["settings"]
    sets = _sets("Li", "random", 0)
    study = create_study(STUDY, _journal(Path(args.out)), args.seed + 7919 * index)

    def objective(trial) -> float:
        params = suggest(trial)
        model_config, train_config = configs_from_params(params, args.epochs, args.patience, args.seed, settings.n_edge_features)

        try:
            on_epoch = lambda epoch, metrics: report_epoch(trial, epoch, metrics["val_mae"])  # noqa: E731
            result = train(CGCNN(model_config), sets["train"], sets["val"], settings, train_config, on_epoch=on_epoch, progress=False)
        except Pruned:
            import optuna

            raise optuna.TrialPruned()
        trial.set_user_attr("seconds_per_epoch", result.seconds_per_epoch)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("device", str(train_config.device))
        return result.best_val_mae

    optimize_capped(study, objective, n_trials, max(1.0, deadline - time.time()))
    return index


def best_params(out: Path) -> dict:
    """The search's best parameters (or those a previous run left in best_params.json), else the defaults."""
    import optuna

    saved = out / "best_params.json"
    if saved.exists() and not (out / "optuna.journal").exists():
        return json.loads(saved.read_text())
    try:
        study = optuna.load_study(study_name=STUDY, storage=_journal(out))
        return dict(study.best_trial.params)
    except (KeyError, ValueError):
        return dict(DEFAULT_PARAMS)


def li_task(strategy: str, seed: int, params: dict) -> dict:
    args, settings = _STATE["args"], _STATE["settings"]
    rows = _STATE["dataset"].split("Li", strategy, seed)
    sets = build_graph_sets(rows, _STATE["graphs"])
    model_config, train_config = configs_from_params(params, args.epochs, args.patience, seed, settings.n_edge_features)
    started = time.perf_counter()
    result = train(CGCNN(model_config), sets["train"], sets["val"], settings, train_config, progress=False)
    metrics = regression_metrics(sets["test"].targets, predict(result.model, sets["test"], settings))
    row = {"split": strategy, "seed": seed, "cgcnn_test_mae": metrics["mae"], "cgcnn_test_r2": metrics["r2"], "val_mae": result.best_val_mae,
           "epochs": len(result.history), "best_epoch": result.best_epoch, "s_per_epoch": result.seconds_per_epoch, "train_s": time.perf_counter() - started,
           "device": train_config.device}
    if strategy == "random" and seed == 0:
        save_checkpoint(result.model, Path(args.out) / "li_base.pt", settings.to_dict(), {"ion": "Li", "params": params})
    if args.features:
        from voltmodels import baselines

        features = pd.read_parquet(args.features)
        X, y = baselines.features_and_targets(rows[rows.split == "train"], features)
        Xt, yt = baselines.features_and_targets(rows[rows.split == "test"], features)
        rf = baselines.fit_method("rfr", X, y, profile="paper", seed=seed)
        row["rfr_test_mae"] = float(np.mean(np.abs(rf.model.predict(Xt) - yt)))
    return row


def multi_config(params: dict) -> TransferConfig:
    """The transfer settings of this study; the shared multi-ion model uses the Li search's best."""
    args = _STATE["args"]
    return TransferConfig(epochs=args.epochs, patience=args.patience, seed=args.seed, lr_multi=float(params["learning_rate"]),
                          multi_weight_decay=float(params["weight_decay"]), multi_batch_size=int(params["batch_size"]))


def multi_path(params: dict, strategy: str, repeat: int) -> Path:
    """The study's copy of a split's multi-ion model, named by its cache key (see shared_multi_ion_model)."""
    return multi_ion_cache_path(Path(_STATE["args"].out), _STATE["dataset"].digest, strategy, repeat, _model_config(params), multi_config(params).multi_train_config(repeat), _STATE["settings"])


def _model_config(params: dict):
    """The searched architecture (the training part of `configs_from_params` is not used here)."""
    return configs_from_params(params, 1, 1, 0, _STATE["settings"].n_edge_features)[0]


def multi_task(strategy: str, repeat: int, params: dict) -> dict:
    """A shared CGCNN on every ion's training rows of this split; saved in --out for the transfer phase
    (copy it into $VOLTMODELS_CACHE/multi_ion/ and the transfer entry point reuses it)."""
    args, settings, dataset = _STATE["args"], _STATE["settings"], _STATE["dataset"]
    started = time.perf_counter()
    model, reused = shared_multi_ion_model(dataset, _STATE["graphs"], _model_config(params), settings, multi_config(params).multi_train_config(repeat), strategy, repeat, Path(args.out))
    per_ion = split_sets_per_ion(dataset, _STATE["graphs"], strategy, repeat)
    val = concat_graph_sets([sets["val"] for sets in per_ion.values()])
    return {"split": strategy, "repeat": repeat, "n_train": sum(len(sets["train"]) for sets in per_ion.values()),
            "val_mae": regression_metrics(val.targets, predict(model, val, settings))["mae"], "train_s": time.perf_counter() - started, "reused": reused}


def transfer_task(ion: str, strategy: str, repeat: int, methods: tuple[str, ...], params: dict) -> list[dict]:
    args, settings = _STATE["args"], _STATE["settings"]
    out = Path(args.out)
    sets = _sets(ion, strategy, repeat)
    if min(len(s) for s in sets.values()) < 2:
        return []
    config = multi_config(params)
    keys = dict(ion=ion, split=strategy, repeat=repeat)
    base, _, _ = load_checkpoint(out / "li_base.pt")
    saved = multi_path(params, strategy, repeat)
    multi = load_checkpoint(saved)[0] if saved.exists() else None
    methods = [m for m in methods if multi is not None or m not in MULTI_METHODS]
    return [o.record(**keys) for o in compare_methods(methods, base, sets, settings, config, multi)]


def missing_methods(out: Path, methods: tuple[str, ...]):
    """Per (ion, split, repeat): which of `methods` have no row in transfer.csv yet (a rerun resumes)."""
    path = out / "transfer.csv"
    done = set()
    if path.exists():
        done = set(pd.read_csv(path)[["ion", "split", "repeat", "method"]].itertuples(index=False, name=None))
    return lambda ion, strategy, repeat: tuple(m for m in methods if (ion, strategy, repeat, m) not in done)


def _stop_workers(pool) -> None:
    """Running tasks cannot be cancelled: end the worker processes, or they outlive the study."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


def _run_tasks(pool, tasks: list[tuple], deadline: float, on_result, waiting: list[tuple[tuple, set]] = ()) -> None:
    """Submit (fn, *args) tasks; hand each result to on_result(fn name, result); stop waiting at the deadline.

    `waiting` holds (task, dependencies) pairs, a dependency being (fn name, first two args) of a
    task in this call: a waiting task is submitted as soon as all of its dependencies have ended
    (failed ones included: the task then reports what it lacks), so no worker idles while a
    ready task waits behind an unrelated one.
    """
    waiting = [(task, set(deps)) for task, deps in waiting]
    futures, pending = {}, set()

    def submit(task: tuple) -> None:
        fn, *fn_args = task
        future = pool.submit(fn, *fn_args)
        futures[future] = (fn.__name__, tuple(fn_args))
        pending.add(future)

    def release(ended: tuple | None) -> None:
        nonlocal waiting
        for task, deps in waiting:
            deps.discard(ended)
        for task in [task for task, deps in waiting if not deps]:
            submit(task)
        waiting = [(task, deps) for task, deps in waiting if deps]

    for task in tasks:
        submit(task)
    release(None)
    while pending:
        done, _ = wait(pending, timeout=max(0.0, deadline - time.time()), return_when=FIRST_COMPLETED)
        if not done:
            print(f"deadline: {len(pending) + len(waiting)} tasks left unfinished", flush=True)
            _stop_workers(pool)
            raise TimeoutError("deadline reached")
        for future in done:
            pending.discard(future)
            name, fn_args = futures[future]
            try:
                on_result(name, future.result())
            except Exception:
                print(f"{name}{fn_args} failed:\n{traceback.format_exc()}", flush=True)
            release((name, fn_args[:2]))
    if waiting:  # a dependency that was never a task of this call
        print(f"{len(waiting)} tasks never started: their dependencies {sorted(set().union(*(d for _, d in waiting)))} did not run", flush=True)


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    deadline = start + args.total_seconds
    stamp = lambda: f"[{time.time() - start:6.0f} s]"  # noqa: E731
    dataset = load_dataset(args.dataset)
    print(f"dataset {dataset.digest}; device {torch_device()}; {args.workers} workers", flush=True)
    ions = parse_ions(args.ions, every=SUPPORTED_IONS[1:])
    pool = ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(args,))
    try:
        if "search" in args.phases and args.n_trials:
            search_deadline = min(deadline, start + args.search_seconds)
            _run_tasks(pool, [(search_worker, i, args.n_trials, search_deadline) for i in range(args.workers)], deadline, lambda name, result: None)
            import optuna

            study = optuna.load_study(study_name=STUDY, storage=_journal(out))
            study.trials_dataframe().to_csv(out / "search_trials.csv", index=False)
            print(f"{stamp()} search: {len(study.trials)} trials, best val MAE {study.best_value:.3f} V with {study.best_params}", flush=True)
        params = best_params(out)
        (out / "best_params.json").write_text(json.dumps(params, indent=2))

        files = {"li_task": out / "li_accuracy.csv", "multi_task": out / "multi_models.csv", "transfer_task": out / "transfer.csv"}

        def record(name: str, result) -> None:
            for row in result if isinstance(result, list) else [result]:
                _append(files[name], row)
                print(stamp(), {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)

        splits = [s for s in args.splits.split(",") if s]
        li_tasks = [(li_task, s, seed, params) for s in SPLITS for seed in range(args.li_seeds)] if "li" in args.phases else []
        # A multi-ion model already saved in --out, and a method already in transfer.csv, are reused:
        # a stopped study resumes where it was.
        _STATE.update(args=args, dataset=dataset, settings=GraphSettings())  # for multi_path in this process
        multi_pending = {(s, r) for s in splits for r in range(args.n_repeats) if not multi_path(params, s, r).exists()} if "multi" in args.phases else set()
        multi_tasks = [(multi_task, s, r, params) for s, r in sorted(multi_pending)]
        wanted = tuple(m for m in METHODS + MULTI_METHODS if not args.methods or m in args.methods)
        missing = (lambda ion, strategy, repeat: wanted) if "li" in args.phases else missing_methods(out, wanted)  # a new Li base redoes them all
        transfer_tasks = [(transfer_task, ion, s, r, missing(ion, s, r), params) for s in splits for r in range(args.n_repeats) for ion in ions] if "transfer" in args.phases else []
        transfer_tasks = [t for t in transfer_tasks if t[-1]]
        # Transfer needs the Li base (random split, seed 0) and its split's multi-ion model: a task
        # starts as soon as those exist, beside the trainings still running.
        def dependencies(task: tuple) -> set:
            _, ion, strategy, repeat, *_ = task
            deps = {("multi_task", (strategy, repeat))} if (strategy, repeat) in multi_pending else set()
            return deps | ({("li_task", ("random", 0))} if li_tasks else set())

        _run_tasks(pool, li_tasks + multi_tasks, deadline, record, [(t, dependencies(t)) for t in transfer_tasks])
        pool.shutdown()
        print(f"{stamp()} done", flush=True)
    except TimeoutError:
        print(f"{stamp()} stopped at the deadline; the CSV files hold what finished", flush=True)
    finally:
        _stop_workers(pool)  # also on Ctrl-C or kill (SIGTERM, below): no orphaned worker keeps training


def print_report(out: Path) -> None:
    li = out / "li_accuracy.csv"
    if li.exists():
        table = pd.read_csv(li)
        print("\n### Li test MAE (V)\n")
        print(table.round(3).to_markdown(index=False))
        agg = {"cgcnn_mean": ("cgcnn_test_mae", "mean"), "cgcnn_std": ("cgcnn_test_mae", "std"), "n": ("seed", "count"), "s_per_epoch": ("s_per_epoch", "mean")}
        if "rfr_test_mae" in table:
            agg.update(rfr_mean=("rfr_test_mae", "mean"), rfr_std=("rfr_test_mae", "std"))
        print("\n" + table.groupby("split").agg(**agg).round(3).to_markdown())
    tr = out / "transfer.csv"
    if tr.exists():
        records = with_selected(pd.read_csv(tr))
        repeats = records.groupby(["ion", "split"])["repeat"].nunique()
        for split, wide in comparison_tables(summarize(records), (*METHODS, *MULTI_METHODS, "selected"), repeats).items():
            print(f"\n### test MAE (V), {split} split, mean ± std over repeats\n")
            print(wide.to_markdown())


def enqueue_best(out: Path, study_name: str, storage: str) -> None:
    """Add the offline search's best parameters as the next trial of the project's Li study."""
    params = json.loads((out / "best_params.json").read_text())
    study = create_study(study_name, storage, 0)
    study.enqueue_trial(params, skip_if_exists=True)
    print(f"enqueued {params} in study {study_name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="latest", help="curated dataset folder (or curate run id where MLflow is installed)")
    p.add_argument("--features", default="", help="parquet of matminer features (index id_discharge) for the RF beside Li")
    p.add_argument("--out", default="offline_study")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--n-trials", type=int, default=48, help="trials for the study (0: skip the search)")
    p.add_argument("--search-seconds", type=float, default=240)
    p.add_argument("--total-seconds", type=float, default=3600)
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--patience", type=int, default=25)
    p.add_argument("--li-seeds", type=int, default=3)
    p.add_argument("--n-repeats", type=int, default=5)
    p.add_argument("--ions", default="Mg,Ca,Zn,Al,Na,K,Y,Rb,Cs")
    p.add_argument("--phases", default="search,li,multi,transfer", help="which phases to run; transfer without li needs li_base.pt in --out")
    p.add_argument("--methods", default="", help="comma list of transfer methods to run (default: all; multi_* need the multi phase)")
    p.add_argument("--splits", default="random,framework", help="split strategies of the multi and transfer phases")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", default="", help="print the tables of a finished --out folder and stop")
    p.add_argument("--enqueue-best", default="", help="an --out folder whose best parameters go to the project's Li study")
    p.add_argument("--study-name", default="", help="with --enqueue-best")
    p.add_argument("--storage", default="", help="with --enqueue-best (default: the project's optuna.db)")
    args = p.parse_args()
    args.phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    args.methods = {m.strip() for m in args.methods.split(",") if m.strip()}
    if args.methods - set(METHODS + MULTI_METHODS):
        p.error(f"unknown methods {sorted(args.methods - set(METHODS + MULTI_METHODS))}; use {', '.join(METHODS + MULTI_METHODS)}")
    if args.report:
        print_report(Path(args.report))
    elif args.enqueue_best:
        from voltmodels.config import cache_dir

        enqueue_best(Path(args.enqueue_best), args.study_name, args.storage or f"sqlite:///{cache_dir() / 'optuna.db'}")
    else:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        run(args)
        print_report(Path(args.out))


if __name__ == "__main__":
    main()
