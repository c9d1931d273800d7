"""The evaluation grid: independent tasks, their records, and their summary tables.

A task is "evaluate the methods of one model family on repeat k of split strategy s for ion i";
it returns records (one per ion and method: validation and test metrics, interval coverage,
seconds). The fit entry points call the same per-split functions for the one split they register:

  li         the CGCNN with the Li champion's hyperparameters, trained on Li        (this module)
  transfer   li_direct, scratch, freeze, finetune, multi_direct, multi_finetune     (voltmodels.transfer)
  baselines  SVR, KRR, random forest on matminer features                           (voltmodels.baselines)
  uip        a universal potential's zero-shot, recalibrated, Delta, head families  (voltmodels.potentials)
  multi      the shared multi-ion CGCNN of a split: a prerequisite of the multi_* transfer methods,
             trained into the cache that the fit entry point reads too

Tasks run on joblib's backend mechanism: "loky" (a local process pool, the default), "spark"
(joblibspark: Spark local mode or a cluster's executors), "sequential" (this process), or any backend
registered with joblib (Dask, Ray). Every worker reads the dataset, graphs, features and potential
energies from the disk caches `prepare` filled, so on a cluster the dataset folder and
$VOLTMODELS_CACHE must be on storage every executor reads.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from voltmodels.config import SUPPORTED_IONS, VoltmodelsError, exit_with_parent, pinned_threads
from voltmodels.data.curation import SPLIT_STRATEGIES
from voltmodels.metrics import cgcnn_interval, regression_metrics, repeat_std

KINDS = ("li", "transfer", "baselines", "uip")
BACKENDS = ("loky", "spark", "sequential")
COVERAGE = 0.9
#: The record columns every kind fills (NaN where a kind has no such quantity).
RECORD_COLUMNS = (
    "kind", "potential", "ion", "split", "repeat", "method", "val_mae", "test_mae", "test_rmse", "test_r2",
    "n_train", "n_test", "test_coverage", "test_in_interval", "seconds",
)


@dataclass(frozen=True)
class StudySpec:
    """Everything that determines the records of a study (its `key` names them for reuse)."""

    dataset: str  # a curated dataset folder
    profile: str = "quick"
    seed: int = 0
    max_rows_per_ion: int = 0  # 0: every row; else a seeded sample per ion (the dataset's digest names it)
    base_checkpoint: str = ""  # the Li base the transfer methods start from (a CGCNN checkpoint file)
    base_model: str = ""  # where it came from (recorded)
    cgcnn_params: dict = field(default_factory=dict)  # the Li champion's hyperparameters
    epochs: int = 0  # 0: the profile's
    potentials: tuple[str, ...] = ()
    torch_threads: int = 1  # per task: torch, OpenMP and BLAS pools
    source_version: str = ""  # digest of the committed code: records of other code are not reused

    def key(self) -> str:
        # The base is named by `base_model` (its URI and LoggedModel id), not by where its file lies.
        spec = {k: v for k, v in asdict(self).items() if k not in ("base_checkpoint", "torch_threads")}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Task:
    kind: str
    strategy: str
    repeat: int
    ion: str = "*"  # multi: "*" (trained on every ion); uip: the comma list of ions reported (fitted on all)
    methods: tuple[str, ...] = ()
    potential: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}|{self.potential or '-'}|{self.ion}|{self.strategy}|{self.repeat}|{','.join(self.methods)}"

    @property
    def needs_multi(self) -> bool:
        from voltmodels.transfer import MULTI_METHODS

        return self.kind == "transfer" and any(m in MULTI_METHODS for m in self.methods)


# --------------------------------------------------------------------------------------------------
# the grid


def plan_tasks(
    dataset, kinds: Sequence[str], ions: Sequence[str], strategies: Sequence[str], n_repeats: int, potentials: Sequence[str] = (),
    methods: dict[str, Sequence[str]] | None = None, min_rows: int = 20,
) -> list[Task]:
    """The tasks of a grid: per strategy and repeat, Li (li kind), every other ion (transfer), every
    ion (baselines), all ions pooled per potential (uip), and the multi-ion model the multi_* methods need."""
    from voltmodels import baselines as bl
    from voltmodels.potentials.families import FAMILIES
    from voltmodels.transfer import METHODS, MULTI_METHODS

    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise VoltmodelsError(f"unknown families {', '.join(unknown)}; use a comma list of {', '.join(KINDS)}")
    bad = [s for s in strategies if s not in SPLIT_STRATEGIES]
    if bad:
        raise VoltmodelsError(f"unknown split {bad[0]!r}; use random, framework or both")
    if n_repeats < 1:
        raise VoltmodelsError(f"n_repeats must be at least 1, not {n_repeats}")
    methods = {"li": ("cgcnn",), "transfer": METHODS + MULTI_METHODS, "baselines": bl.METHODS, "uip": FAMILIES, **(methods or {})}
    counts = dataset.table["working_ion"].value_counts()
    usable = [i for i in ions if counts.get(i, 0) >= min_rows]
    tasks = []
    for strategy in strategies:
        for repeat in range(n_repeats):
            if "li" in kinds and "Li" in usable:
                tasks.append(Task("li", strategy, repeat, "Li", ("cgcnn",)))
            if "transfer" in kinds:
                tasks += [Task("transfer", strategy, repeat, ion, tuple(methods["transfer"])) for ion in usable if ion != "Li"]
            if "baselines" in kinds:
                tasks += [Task("baselines", strategy, repeat, ion, tuple(methods["baselines"])) for ion in usable]
            if "uip" in kinds:
                # pooled over every ion of the dataset; records for the requested ones
                tasks += [Task("uip", strategy, repeat, ",".join(usable), tuple(methods["uip"]), potential) for potential in potentials]
    for strategy, repeat in dict.fromkeys((t.strategy, t.repeat) for t in tasks if t.needs_multi):
        tasks.insert(0, Task("multi", strategy, repeat))
    return tasks


def prepare(spec: StudySpec, tasks: Sequence[Task], n_workers: int | None = None, log=print) -> dict:
    """Fill the disk caches the tasks read (graphs, composition features, potential energies), once,
    in this process, so that workers only read; returns what it computed, for the run's metrics."""
    from voltmodels.graphs.graph import GraphSettings
    from voltmodels.featurized import dataset_graphs

    dataset = _dataset(spec)
    started, facts = time.perf_counter(), {}
    kinds = {t.kind for t in tasks}
    if kinds & {"li", "transfer", "multi"}:
        graphs, errors = dataset_graphs(dataset, None, GraphSettings(), progress=False)
        facts.update(n_graphs=len(graphs), n_graph_errors=len(errors))
    if kinds & {"baselines", "uip"}:
        from voltmodels import baselines as bl

        facts["n_feature_rows"] = len(bl.dataset_features(dataset))
    for potential in sorted({t.potential for t in tasks if t.kind == "uip"}):
        from voltmodels.potentials.calculators import potential_tag
        from voltmodels.potentials.electrodes import DatasetInputs

        inputs = DatasetInputs(dataset, potential, "a", n_workers=n_workers or os.cpu_count())
        facts[f"rows_without_voltage_{potential_tag(potential)}"] = int((~np.isfinite(inputs.inputs.v_uip)).sum())
    facts["prepare_seconds"] = time.perf_counter() - started
    if log is not None:
        log(f"[study] caches ready in {facts['prepare_seconds']:.0f} s: {facts}")
    return facts


def run_tasks(spec: StudySpec, tasks: Sequence[Task], backend: str = "loky", n_jobs: int = 1, master: str = "local[2]") -> Iterator[tuple[Task, list[dict], str]]:
    """Run tasks and yield (task, records, error) as each ends (error "" on success; a failed task
    never stops the others). The multi-ion models come first when transfer tasks need them."""
    if backend not in BACKENDS:
        from joblib.parallel import BACKENDS as registered

        if backend not in registered:
            raise VoltmodelsError(f"unknown backend {backend!r}; use loky, spark, sequential or a joblib backend registered in this process")
    multi = [t for t in tasks if t.kind == "multi"]
    first = multi + [t for t in tasks if t.kind != "multi" and not t.needs_multi]
    later = [t for t in tasks if t.needs_multi]
    for phase in (first, later):
        if phase:
            yield from _parallel(spec, phase, backend, n_jobs, master)


def _parallel(spec, tasks, backend, n_jobs, master):
    if backend == "sequential" or n_jobs == 1 and backend == "loky":
        for task in tasks:
            yield run_task_safely(spec, task)
        return
    from joblib import Parallel, delayed, parallel_config

    if backend == "spark":
        from joblibspark import register_spark

        from voltmodels.spark import spark_session

        spark_session(master, "voltmodels-evaluate")  # joblibspark runs on the active session
        register_spark()
    with parallel_config(backend=backend, n_jobs=n_jobs):
        parallel = Parallel()
        if getattr(parallel._backend, "supports_return_generator", False):
            yield from Parallel(return_as="generator_unordered")(delayed(run_task_safely)(spec, task) for task in tasks)
            return
        # Backends that only return whole lists (joblibspark): waves of n_jobs tasks, so that every
        # wave's records are logged (and a killed run resumes) before the next wave starts.
        for start in range(0, len(tasks), max(1, n_jobs)):
            yield from parallel(delayed(run_task_safely)(spec, task) for task in tasks[start : start + max(1, n_jobs)])


def run_task_safely(spec: StudySpec, task: Task) -> tuple[Task, list[dict], str]:
    exit_with_parent()  # in a loky worker: a killed evaluate run leaves none computing on
    try:
        return task, run_task(spec, task), ""
    except Exception as exc:  # reported beside the task; the other tasks go on
        return task, [], f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"


def run_task(spec: StudySpec, task: Task) -> list[dict]:
    """One task's records (JSON-ready dicts with RECORD_COLUMNS and whatever else its kind reports)."""
    started = time.perf_counter()
    with pinned_threads(spec.torch_threads):
        records = {"li": _li, "transfer": _transfer, "baselines": _baselines, "uip": _uip, "multi": _multi}[task.kind](spec, task)
    base = {c: np.nan for c in RECORD_COLUMNS}
    out = []
    for record in records:
        row = {**base, "kind": task.kind, "potential": task.potential, "split": task.strategy, "repeat": task.repeat, **record}
        row.setdefault("task_seconds", time.perf_counter() - started)
        out.append({k: _plain(v) for k, v in row.items()})
    return out


def _plain(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# --------------------------------------------------------------------------------------------------
# per-worker state: what every task of a process shares, loaded once

_STATE: dict = {}


def _dataset(spec: StudySpec):
    from voltmodels.data.dataset import load_dataset

    key = ("dataset", spec.dataset, spec.max_rows_per_ion, spec.seed)
    if key not in _STATE:
        _STATE[key] = load_dataset(spec.dataset).subsample(spec.max_rows_per_ion, spec.seed)
    return _STATE[key]


def _graphs(spec: StudySpec, ion: str | None):
    from voltmodels.featurized import dataset_graphs
    from voltmodels.graphs.graph import GraphSettings

    key = ("graphs", spec.dataset, ion)
    if key not in _STATE:
        _STATE[key] = dataset_graphs(_dataset(spec), ion, GraphSettings(), progress=False)[0]
    return _STATE[key]


def _features(spec: StudySpec):
    from voltmodels import baselines as bl

    key = ("features", spec.dataset, spec.max_rows_per_ion)
    if key not in _STATE:
        _STATE[key] = bl.dataset_features(_dataset(spec))
    return _STATE[key]


def _profile(spec: StudySpec):
    from voltmodels.tuning import profile

    return profile(spec.profile)


def _base(spec: StudySpec):
    from voltmodels.model import load_checkpoint

    if not spec.base_checkpoint:
        raise VoltmodelsError("the transfer and multi tasks need a Li base model (base_checkpoint)")
    key = ("base", spec.base_checkpoint)
    if key not in _STATE:
        _STATE[key] = load_checkpoint(spec.base_checkpoint)[0]
    return _STATE[key]


def transfer_config(spec: StudySpec):
    from voltmodels.transfer import transfer_config as config

    prof = _profile(spec)
    return config(spec.epochs or prof.transfer_epochs, prof.patience, spec.seed, spec.cgcnn_params)


# --------------------------------------------------------------------------------------------------
# the kinds


def cgcnn_record(ion: str, method: str, model, sets: dict, settings, seconds: float, val_mae: float | None = None) -> dict:
    """A CGCNN's record on one split: test metrics and the coverage of its interval calibrated on
    the split's calibration rows (never trained or selected on)."""
    from voltmodels.training import predict

    pairs = {part: (sets[part].targets, predict(model, sets[part], settings)) for part in ("val", "test", "calib") if len(sets.get(part, ()))}
    half, coverage = cgcnn_interval(pairs.get("calib"), pairs["test"])
    test = regression_metrics(*pairs["test"])
    val = regression_metrics(*pairs["val"])["mae"] if "val" in pairs else np.nan
    return {
        "ion": ion, "method": method, "val_mae": val if val_mae is None else val_mae, **{f"test_{k}": v for k, v in test.items()},
        "n_train": len(sets["train"]), "n_test": len(sets["test"]), "n_calib": len(sets.get("calib", ())), "half_width": half,
        "test_coverage": coverage, "test_in_interval": int(round(coverage * len(sets["test"]))) if np.isfinite(coverage) else np.nan, "seconds": seconds,
    }


def _li(spec: StudySpec, task: Task) -> list[dict]:
    from voltmodels.graphs.graph import GraphSettings
    from voltmodels.model import CGCNN
    from voltmodels.training import build_graph_sets, train
    from voltmodels.tuning import DEFAULT_PARAMS, configs_from_params

    settings, prof = GraphSettings(), _profile(spec)
    sets = build_graph_sets(_dataset(spec).split("Li", task.strategy, task.repeat), _graphs(spec, "Li"))
    params = {**DEFAULT_PARAMS, **spec.cgcnn_params}
    model_config, train_config = configs_from_params(params, spec.epochs or prof.epochs, prof.patience, spec.seed + task.repeat, settings.n_edge_features)
    started = time.perf_counter()
    result = train(CGCNN(model_config), sets["train"], sets["val"], settings, train_config, progress=False)
    record = cgcnn_record("Li", "cgcnn", result.model, sets, settings, time.perf_counter() - started, result.best_val_mae)
    return [{**record, "epochs": len(result.history), "best_epoch": result.best_epoch, "s_per_epoch": result.seconds_per_epoch, "device": train_config.device}]


def _multi_model(spec: StudySpec, strategy: str, repeat: int, train_if_missing: bool):
    from voltmodels.config import cache_dir
    from voltmodels.graphs.graph import GraphSettings
    from voltmodels.transfer import multi_ion_cache_path, shared_multi_ion_model

    settings, config, base = GraphSettings(), transfer_config(spec), _base(spec)
    dataset = _dataset(spec)
    if not train_if_missing:
        path = multi_ion_cache_path(cache_dir() / "multi_ion", dataset.digest, strategy, repeat, base.config, config.multi_train_config(repeat), settings)
        if not path.exists():
            raise VoltmodelsError(f"the shared multi-ion model of {strategy} split {repeat} is missing ({path}); its multi task failed")
    return shared_multi_ion_model(dataset, _graphs(spec, None), base.config, settings, config.multi_train_config(repeat), strategy, repeat, cache_dir() / "multi_ion")


def _multi(spec: StudySpec, task: Task) -> list[dict]:
    started = time.perf_counter()
    _, reused = _multi_model(spec, task.strategy, task.repeat, train_if_missing=True)
    return [{"ion": "*", "method": "multi_ion_model", "seconds": time.perf_counter() - started, "reused": reused}]


def _transfer(spec: StudySpec, task: Task) -> list[dict]:
    from voltmodels.graphs.graph import GraphSettings
    from voltmodels.training import build_graph_sets
    from voltmodels.transfer import compare_methods

    settings = GraphSettings()
    sets = build_graph_sets(_dataset(spec).split(task.ion, task.strategy, task.repeat), _graphs(spec, task.ion))
    if min(len(sets[p]) for p in ("train", "val", "test")) < 2:
        raise VoltmodelsError(f"{task.ion} has too few electrodes for a {task.strategy} train/val/test split")
    multi = _multi_model(spec, task.strategy, task.repeat, train_if_missing=False)[0] if task.needs_multi else None
    outcomes = compare_methods(task.methods, _base(spec), sets, settings, transfer_config(spec), multi)
    return [cgcnn_record(task.ion, o.method, o.model, sets, settings, o.seconds, o.val_mae) for o in outcomes]


def _baselines(spec: StudySpec, task: Task) -> list[dict]:
    from voltmodels import baselines as bl

    records, _, _ = bl.evaluate_split(_dataset(spec), task.ion, _features(spec), task.methods, task.strategy, task.repeat, spec.profile, spec.seed)
    return records


def _uip(spec: StudySpec, task: Task) -> list[dict]:
    from voltmodels.potentials.electrodes import DatasetInputs
    from voltmodels.potentials.families import evaluate_split

    dataset = _dataset(spec)
    key = ("inputs", spec.dataset, spec.max_rows_per_ion, task.potential)
    if key not in _STATE:
        _STATE[key] = DatasetInputs(dataset, task.potential, "a", n_workers=1)  # cached energies: read, not computed
    records, _, _ = evaluate_split(dataset, _STATE[key], _features(spec), task.methods, task.strategy, task.repeat, task.ion.split(","), seed=spec.seed)
    return records


# --------------------------------------------------------------------------------------------------
# tables


def model_label(records: pd.DataFrame) -> pd.Series:
    """One name per evaluated model: `transfer:freeze`, `baselines:rfr`, `uip[sevennet-0]:uip_delta`."""
    potential = records["potential"].fillna("").astype(str)
    kind = records["kind"].where(potential == "", records["kind"] + "[" + potential + "]")
    return kind + ":" + records["method"].astype(str)


def with_selected(records: pd.DataFrame) -> pd.DataFrame:
    """`records` plus a model "selected" per (ion, split, repeat): the one with the lowest validation
    MAE among the families the router serves (the CGCNN's registered methods and the potential
    families): what the champion rule delivers, chosen without a look at test rows."""
    from voltmodels.transfer import REGISTERED_METHODS

    from voltmodels.metrics import with_selected_rows

    records = records.assign(model=model_label(records))
    registered = records["kind"].isin(["li", "uip"]) | (records["kind"].eq("transfer") & records["method"].isin(REGISTERED_METHODS))
    out = with_selected_rows(records, registered & records["val_mae"].notna() & records["test_mae"].notna(), "model")
    return out.assign(kind=out["kind"].where(out["model"] != "selected", "selected"))


def summary(records: pd.DataFrame) -> pd.DataFrame:
    """Per (split, ion, model): test MAE mean and std over repeats, repeats, validation MAE, coverage."""
    records = with_selected(records) if "model" not in records else records
    rows = []
    for (split, ion, model), group in records.groupby(["split", "ion", "model"], sort=False):
        n_test = group["n_test"].sum()
        inside = group["test_in_interval"].sum(min_count=1)
        rows.append({
            "split": split, "ion": ion, "model": model, "n_repeats": len(group), "test_mae_mean": group["test_mae"].mean(),
            "test_mae_std": repeat_std(group["test_mae"]), "val_mae_mean": group["val_mae"].mean(),
            "coverage": float(inside / n_test) if pd.notna(inside) and n_test else np.nan, "n_test": int(n_test),
        })
    return pd.DataFrame(rows)


def mae_tables(summary_rows: pd.DataFrame, models: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Per split: ions × models of "mean ± std" test MAE cells (V)."""
    cells = summary_rows.assign(cell=[f"{m:.3f}" if pd.isna(s) else f"{m:.3f} ± {s:.3f}" for m, s in zip(summary_rows["test_mae_mean"], summary_rows["test_mae_std"])])
    tables = {}
    for split, part in cells.groupby("split", sort=False):
        wide = part.pivot_table(index="ion", columns="model", values="cell", aggfunc="first").fillna("–")
        order = [m for m in (models or sorted(wide.columns)) if m in wide.columns]
        ions = [i for i in SUPPORTED_IONS if i in wide.index]
        tables[split] = wide.loc[ions, order]
    return tables


def binomial_band(n: int, coverage: float = COVERAGE, z: float = 1.96) -> tuple[float, float]:
    """The normal-approximation 95 % band of an interval's observed coverage over n test rows."""
    if n <= 0:
        return (np.nan, np.nan)
    half = z * math.sqrt(coverage * (1 - coverage) / n)
    return coverage - half, coverage + half


def coverage_table(summary_rows: pd.DataFrame) -> pd.DataFrame:
    """Per (split, model, ion) with an interval: test coverage pooled over repeats, the binomial band
    of 0.90 for that many test rows, and whether the coverage lies in it."""
    rows = summary_rows[summary_rows["coverage"].notna()].copy()
    bands = [binomial_band(n) for n in rows["n_test"]]
    rows["band_low"] = [b[0] for b in bands]
    rows["band_high"] = [b[1] for b in bands]
    rows["in_band"] = (rows["coverage"] >= rows["band_low"]) & (rows["coverage"] <= rows["band_high"])
    return rows[["split", "model", "ion", "n_repeats", "n_test", "coverage", "band_low", "band_high", "in_band"]]


def paired_comparison(records: pd.DataFrame, reference: str, candidates: Iterable[str] | None = None) -> pd.DataFrame:
    """Per (split, ion, model): the test-MAE difference model - reference over the repeats both ran
    (mean, std, wins = repeats where the model is lower), the paired view of a repeated-split study."""
    records = with_selected(records) if "model" not in records else records
    ref = records[records["model"] == reference].set_index(["split", "ion", "repeat"])["test_mae"]
    rows = []
    for (split, ion, model), group in records[records["model"] != reference].groupby(["split", "ion", "model"], sort=False):
        if candidates is not None and model not in candidates:
            continue
        diff = (group.set_index(["split", "ion", "repeat"])["test_mae"] - ref).dropna()
        if len(diff):
            rows.append({"split": split, "ion": ion, "model": model, "reference": reference, "n_repeats": len(diff), "mae_diff_mean": diff.mean(),
                         "mae_diff_std": repeat_std(diff), "wins": int((diff < 0).sum())})
    return pd.DataFrame(rows)
