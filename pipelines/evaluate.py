"""Entry point `evaluate`: the repeated-split grid (n_repeats × split strategies × ions × families).

Tasks (voltmodels.study) run in parallel on a joblib backend: loky (a local process pool), spark
(joblibspark, Spark local mode or a cluster) or sequential. Each finished task is a nested run
(tags: its task key and the study key; metrics per method; its records as `records.json`), so the
UI's compare view shows the grid, and a rerun, or a run resuming a killed one, skips every task
whose run with the same study key finished. The parent run holds the mean ± std tables per split,
the interval coverage per ion against the binomial band of 0.90, paired comparisons with the
zero-shot potential, and the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd

from pipelines.common import as_int, check_profile, main_guard, source_version, step_run
from pipelines.uip import DEFAULT_REPEATS, QUICK_MAX_ROWS_PER_ION
from voltmodels import study
from voltmodels.config import SUPPORTED_IONS, VoltmodelsError, cache_dir, parse_ions
from voltmodels.data.curation import SPLIT_STRATEGIES
from voltmodels.data.dataset import load_dataset
from voltmodels.machine import machine_line
from voltmodels.potentials.calculators import DEFAULT_POTENTIAL
from voltmodels.tracking import finished_runs, load_cgcnn, model_identity, trial_params

STEP = "evaluate"
TASK_TAG, STUDY_TAG = "voltmodels.task_key", "voltmodels.study_key"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="latest")
    p.add_argument("--profile", default="quick", help="quick (1 repeat, 150 electrodes per ion, few epochs) or paper (5 repeats, all rows)")
    p.add_argument("--families", default=",".join(study.KINDS), help=f"comma list of {', '.join(study.KINDS)}")
    p.add_argument("--methods", default="", help="per family, e.g. 'transfer=freeze,finetune;baselines=rfr' (default: all)")
    p.add_argument("--ions", default="all")
    p.add_argument("--split", default="both", help="random, framework or both")
    p.add_argument("--n-repeats", type=as_int, default=0, help="0: the profile's (quick 1, paper 5)")
    p.add_argument("--max-rows-per-ion", type=as_int, default=-1, help="-1: the profile's (quick 150, paper all); 0: all")
    p.add_argument("--potential", default=DEFAULT_POTENTIAL, help="comma list of potentials of the uip family")
    p.add_argument("--base-model", default="models:/voltage-cgcnn-Li@champion", help="the Li base of li (its hyperparameters) and transfer")
    p.add_argument("--epochs", type=as_int, default=0, help="0: the profile's")
    p.add_argument("--backend", default="loky", help="loky (local processes), spark (joblibspark), sequential, or a registered joblib backend")
    p.add_argument("--n-jobs", type=as_int, default=0, help="parallel tasks (0: one per CPU)")
    p.add_argument("--master", default="local[2]", help="Spark master URL of the spark backend")
    p.add_argument("--seed", type=as_int, default=0)
    p.add_argument("--upstream", default="", help="run id of the step that registered the base model (recorded; main's reuse key)")
    return p.parse_args(argv)


def parse_methods(value: str) -> dict[str, tuple[str, ...]]:
    out = {}
    for part in filter(None, (p.strip() for p in value.split(";"))):
        kind, _, names = part.partition("=")
        if kind.strip() not in study.KINDS or not names.strip():
            raise VoltmodelsError(f"--methods part {part!r} is not family=method,method with a family among {', '.join(study.KINDS)}")
        out[kind.strip()] = tuple(n.strip() for n in names.split(",") if n.strip())
    return out


def export_base(uri: str) -> tuple[str, str]:
    """(checkpoint path, model id) of the Li base: written once into the cache under the identity of
    the version the URI points to now."""
    from voltmodels.model import save_checkpoint

    model_id = model_identity(uri)
    path = cache_dir() / "study" / f"base_{model_id.replace('/', '_').replace(':', '_').replace('@', '_')}.pt"
    if not path.exists():
        model, settings = load_cgcnn(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        save_checkpoint(model, partial, settings.to_dict(), {"source": uri, "model_id": model_id})
        partial.replace(path)
    return str(path), model_id


def finished_tasks(study_key: str) -> dict[str, str]:
    """{task key: run id} of the finished task runs of this study (newest first wins)."""
    found = {}
    for run in finished_runs(f"tags.`{STUDY_TAG}` = '{study_key}'"):
        key = run.data.tags.get(TASK_TAG)
        if key and key not in found:
            found[key] = run.info.run_id
    return found


def log_task(task: study.Task, records: list[dict], error: str, study_key: str) -> str:
    """A nested run per task: FINISHED with its records, or FAILED with the error (rerun next time)."""
    run = mlflow.start_run(run_name=task.key.replace("|", " "), nested=True)
    try:
        mlflow.set_tags({TASK_TAG: task.key, STUDY_TAG: study_key, "voltmodels.step": "evaluate_task", "kind": task.kind, "ion": task.ion,
                         "split": task.strategy, "repeat": str(task.repeat), "potential": task.potential})
        mlflow.log_dict(records, "records.json")
        for r in records:
            name = f"{r['method']}_{r['ion']}" if task.kind == "uip" else r["method"]
            mlflow.log_metrics({f"{name}_{q}": r[q] for q in ("test_mae", "val_mae", "test_coverage") if r.get(q) is not None})
        if error:
            mlflow.set_tag("error", error[:5000])
    finally:
        mlflow.end_run(status="FAILED" if error else "FINISHED")
    return run.info.run_id


@main_guard
def main(argv=None) -> str:
    args = parse_args(argv)
    check_profile(args.profile)
    kinds = [k.strip() for k in args.families.split(",") if k.strip()]
    strategies = SPLIT_STRATEGIES if args.split == "both" else tuple(s.strip() for s in args.split.split(","))
    n_repeats = args.n_repeats or DEFAULT_REPEATS[args.profile]
    max_rows = args.max_rows_per_ion if args.max_rows_per_ion >= 0 else (QUICK_MAX_ROWS_PER_ION if args.profile == "quick" else 0)
    potentials = tuple(p.strip() for p in args.potential.split(",") if p.strip() and p.strip().lower() != "none") if "uip" in kinds else ()
    methods = parse_methods(args.methods)
    n_jobs = args.n_jobs or os.cpu_count() or 1
    if "uip" in kinds and not potentials:
        raise VoltmodelsError("the uip family needs a potential (--potential sevennet-l3i5)")

    full = load_dataset(args.dataset)
    dataset = full.subsample(max_rows, args.seed)
    ions = parse_ions(args.ions, every=[i for i in SUPPORTED_IONS if i in dataset.ions])
    base_path, base_id, params = "", "", {}
    if {"li", "transfer"} & set(kinds):
        base_path, base_id = export_base(args.base_model)
        params = trial_params(args.base_model)
    spec = study.StudySpec(
        dataset=str(full.folder), profile=args.profile, seed=args.seed, max_rows_per_ion=max_rows, base_checkpoint=base_path,
        base_model=f"{args.base_model} ({base_id})" if base_id else "", cgcnn_params=params, epochs=args.epochs, potentials=potentials,
        # one thread per task when tasks run side by side; alone, what VOLTMODELS_TORCH_THREADS allows
        torch_threads=1 if n_jobs > 1 or args.backend == "spark" else int(os.environ.get("VOLTMODELS_TORCH_THREADS") or 1),
        source_version=source_version() or "",
    )
    key = spec.key()
    tasks = study.plan_tasks(dataset, kinds, ions, strategies, n_repeats, potentials, methods)
    if not tasks:
        raise VoltmodelsError(f"no task to run: no ion of {args.ions} has enough electrodes for the families {', '.join(kinds)}")
    logged = {"dataset": args.dataset, "profile": args.profile, "families": ",".join(kinds), "ions": ",".join(ions), "split": ",".join(strategies),
              "n_repeats": n_repeats, "max_rows_per_ion": max_rows, "potential": ",".join(potentials), "base_model": args.base_model, "methods": args.methods,
              "backend": args.backend, "n_jobs": n_jobs, "master": args.master, "seed": args.seed, "upstream": args.upstream, "epochs": args.epochs}
    with step_run(STEP, logged) as run:
        machine = machine_line(("torch", "joblib", "mlflow"), env=("VOLTMODELS_DEVICE",))
        mlflow.set_tags({STUDY_TAG: key, "dataset_digest": dataset.digest, "machine": machine, "base_model_id": base_id})
        started = time.perf_counter()
        done = finished_tasks(key)
        records = []
        for task in tasks:
            if task.key in done:
                records += _load_records(done[task.key])
        todo = [t for t in tasks if t.key not in done]
        where = "in this process" if args.backend == "sequential" or n_jobs == 1 else f"on {args.backend} with {n_jobs} jobs"
        print(f"[evaluate] {len(tasks)} tasks, {len(tasks) - len(todo)} already finished (study {key}); {len(todo)} to run {where}")
        facts = study.prepare(spec, todo, n_workers=n_jobs) if todo else {}
        mlflow.log_metrics({k: float(v) for k, v in facts.items()})
        failed = []
        for i, (task, task_records, error) in enumerate(study.run_tasks(spec, todo, args.backend, n_jobs, args.master), 1):
            log_task(task, task_records, error, key)
            records += task_records
            status = f"failed: {error.splitlines()[0]}" if error else f"{len(task_records)} records, {max((r.get('task_seconds') or 0 for r in task_records), default=0):.0f} s"
            print(f"[evaluate] {i}/{len(todo)} {task.key}: {status}", flush=True)
            if error:
                failed.append(task.key)
        seconds = time.perf_counter() - started
        mlflow.log_metrics({"evaluate_seconds": seconds, "tasks": len(tasks), "tasks_reused": len(tasks) - len(todo), "tasks_failed": len(failed)})
        table = pd.DataFrame(records)
        if table.empty:
            raise VoltmodelsError(f"every task failed ({', '.join(failed[:3])}...); see the error tags of the task runs")
        log_results(table[table["kind"] != "multi"], machine, dataset.digest, n_jobs, args.backend, seconds)
        if failed:
            mlflow.set_tag("failed_tasks", ",".join(failed)[:5000])
        print(f"evaluate run {run.info.run_id} ({seconds:.0f} s)")
    return run.info.run_id


def _load_records(run_id: str) -> list[dict]:
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/records.json")


def log_results(records: pd.DataFrame, machine: str, digest: str, n_jobs: int, backend: str, seconds: float) -> None:
    """The parent run's tables: per split ions × models (mean ± std), coverage with its band, paired
    differences with the zero-shot potential, and the selected model's metrics per ion."""
    selected = study.with_selected(records)
    rows = study.summary(selected)
    coverage = study.coverage_table(rows)
    zero_shot = next((m for m in selected["model"].unique() if m.startswith("uip[") and m.endswith(":uip")), None)
    paired = study.paired_comparison(selected, zero_shot) if zero_shot else pd.DataFrame()
    header = f"{machine}\n\nbackend {backend}, {n_jobs} jobs, {seconds:.0f} s; dataset {digest}\n"
    text = [header]
    for split, wide in study.mae_tables(rows).items():
        text.append(f"\n### test MAE (V), {split} split, mean ± std over repeats\n\n{wide.to_markdown()}\n")
    text.append(f"\n### 90 % interval coverage on the test rows, pooled over repeats\n\n{coverage.round(3).to_markdown(index=False)}\n")
    if not paired.empty:
        text.append(f"\n### paired test-MAE difference with {zero_shot} (negative: better)\n\n{paired.round(4).to_markdown(index=False)}\n")
    with tempfile.TemporaryDirectory() as tmp:
        records.to_csv(Path(tmp) / "records.csv", index=False)
        rows.to_csv(Path(tmp) / "summary.csv", index=False)
        coverage.to_csv(Path(tmp) / "coverage.csv", index=False)
        paired.to_csv(Path(tmp) / "paired.csv", index=False)
        (Path(tmp) / "tables.md").write_text("".join(text))
        mlflow.log_artifacts(tmp, "results")
    mlflow.log_table(rows, "results/summary.json")
    for r in rows[rows["model"] == "selected"].itertuples():
        prefix = "" if r.split == "random" else f"{r.split}_"
        mlflow.log_metrics({f"{prefix}selected_{r.ion}_test_mae_mean": float(r.test_mae_mean)})
        if pd.notna(r.coverage):
            mlflow.log_metric(f"{prefix}selected_{r.ion}_coverage", float(r.coverage))
    print("".join(text))
    print(json.dumps({"selected": rows[rows["model"] == "selected"][["split", "ion", "test_mae_mean", "coverage"]].round(3).to_dict("records")}))


if __name__ == "__main__":
    main()
