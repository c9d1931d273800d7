"""The evaluate entry point: the repeated-split grid on a local process pool and on Spark local mode,
its tasks logged as nested runs and skipped when finished (rerun, wider grid, killed run); device
selection and Optuna's stale-trial recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import numpy as np
import optuna
import pandas as pd
import psutil
import pytest
import torch

from tests.conftest import REPO, run_entry_point
from voltmodels import study
from voltmodels.config import torch_device
from voltmodels.tuning import create_study, optimize_capped

GRID = ["--families", "li,transfer,baselines", "--max-rows-per-ion", "60", "--n-repeats", "1", "--split", "both", "--epochs", "1",
        "--methods", "transfer=li_direct,freeze,multi_direct;baselines=rfr"]


@pytest.mark.parametrize("value, expected", [("cpu", "cpu"), ("cuda:1", "cuda:1"), ("", "cpu"), ("auto", "cuda" if torch.cuda.is_available() else "cpu")])
def test_torch_device_comes_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("VOLTMODELS_DEVICE", value)
    assert torch_device() == expected


def test_a_trial_left_running_by_a_dead_process_is_failed_and_the_study_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr("voltmodels.tuning.HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr("voltmodels.tuning.GRACE_SECONDS", 1)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = create_study("resume", url, seed=0)
    orphan = study.ask()  # started by a worker that then died: RUNNING, heartbeat goes stale
    study._storage.record_heartbeat(orphan._trial_id)
    time.sleep(2.5)
    resumed = create_study("resume", url, seed=0)
    optimize_capped(resumed, lambda trial: trial.suggest_float("x", 0, 1), max_trials=2, timeout=None)
    states = [t.state for t in resumed.trials]
    assert states[0] == optuna.trial.TrialState.FAIL
    assert states.count(optuna.trial.TrialState.COMPLETE) == 1


def _evaluate_run(out: str):
    run_id = out.strip().splitlines()[-1].split()[2]
    return mlflow.get_run(run_id)


def _task_runs(study_key: str) -> list:
    return mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.`voltmodels.study_key` = '{study_key}' and tags.`voltmodels.step` = 'evaluate_task'",
                              output_format="list")


@pytest.fixture(scope="module")
def grid_run(li_champion, isolated_tracking):
    out = run_entry_point("pipelines.evaluate", *GRID, "--ions", "Li,Mg,Al", "--backend", "loky", "--n-jobs", "2", cwd=isolated_tracking)
    return _evaluate_run(out)


def test_evaluate_runs_the_grid_on_a_process_pool_and_logs_each_task(grid_run):
    key = grid_run.data.tags["voltmodels.study_key"]
    tasks = _task_runs(key)
    # per strategy: 1 multi-ion model, Li, 2 transfer ions, 3 baseline ions
    assert len(tasks) == 2 * (1 + 1 + 2 + 3) == grid_run.data.metrics["tasks"]
    assert all(t.info.status == "FINISHED" for t in tasks) and grid_run.data.metrics["tasks_failed"] == 0
    freeze = [t for t in tasks if t.data.tags["kind"] == "transfer" and t.data.tags["ion"] == "Mg" and t.data.tags["split"] == "random"]
    assert "freeze_test_mae" in freeze[0].data.metrics and "multi_direct_val_mae" in freeze[0].data.metrics
    summary = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{grid_run.info.run_id}/results/summary.csv"))
    models = set(summary["model"])
    assert {"li:cgcnn", "transfer:freeze", "transfer:multi_direct", "baselines:rfr", "selected"} <= models
    assert set(summary[summary["model"] == "selected"]["ion"]) == {"Li", "Mg", "Al"}
    coverage = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{grid_run.info.run_id}/results/coverage.csv"))
    li = coverage[(coverage["model"] == "li:cgcnn")]
    assert len(li) == 2 and li["coverage"].between(0, 1).all() and (li["band_low"] < 0.9).all() and (li["band_high"] > 0.9).all()
    tables = mlflow.artifacts.load_text(f"runs:/{grid_run.info.run_id}/results/tables.md")
    assert tables.startswith("machine: ") and "test MAE (V), framework split" in tables
    assert grid_run.data.tags["dataset_digest"] and grid_run.data.tags["machine"].startswith("machine: ")


def test_a_rerun_skips_finished_tasks_and_a_wider_grid_runs_only_what_is_new(grid_run, isolated_tracking):
    key = grid_run.data.tags["voltmodels.study_key"]
    before = len(_task_runs(key))
    again = _evaluate_run(run_entry_point("pipelines.evaluate", *GRID, "--ions", "Li,Mg,Al", "--backend", "loky", "--n-jobs", "2", cwd=isolated_tracking))
    assert again.data.tags["voltmodels.study_key"] == key
    assert again.data.metrics["tasks_reused"] == again.data.metrics["tasks"] == before and len(_task_runs(key)) == before
    wider = _evaluate_run(run_entry_point("pipelines.evaluate", *GRID, "--ions", "Li,Mg,Al,Ca", "--backend", "sequential", cwd=isolated_tracking))
    assert wider.data.metrics["tasks"] - wider.data.metrics["tasks_reused"] == 4  # Ca: transfer and baselines, both strategies
    assert len(_task_runs(key)) == before + 4


def test_a_killed_evaluate_resumes_where_it_stopped_and_leaves_no_worker_behind(li_champion, isolated_tracking):
    args = ["--families", "baselines", "--ions", "Li,Mg,Al,Ca,Zn,Na", "--max-rows-per-ion", "60", "--n-repeats", "1", "--split", "random",
            "--methods", "baselines=rfr,krr", "--seed", "5", "--backend", "loky", "--n-jobs", "2"]
    env = {**os.environ, "VOLTMODELS_TORCH_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.evaluate", *args], cwd=isolated_tracking, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        finished = []
        while not finished and time.time() - started < 300 and proc.poll() is None:
            time.sleep(0.2)
            finished = [r for r in mlflow.search_runs(search_all_experiments=True, filter_string="tags.`voltmodels.step` = 'evaluate_task' and attributes.status = 'FINISHED'",
                                                      output_format="list") if r.info.start_time >= started * 1000 and r.data.tags.get("kind") == "baselines"]
        assert finished, "no task finished before the deadline"
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "popen_loky" in " ".join(p.cmdline())]
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # loky's workers, computing or idle, used to outlive a killed run (idle ones for loky's 300 s timeout)
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"{len(alive)} loky workers still running 30 s after the evaluate run was killed"
    finally:
        proc.kill()
    # the backend is not part of the study key: the grid killed on loky resumes in one process
    resumed = _evaluate_run(run_entry_point("pipelines.evaluate", *args[:-4], "--backend", "sequential", cwd=isolated_tracking))
    assert resumed.data.metrics["tasks"] == 6
    assert 1 <= resumed.data.metrics["tasks_reused"] < 6, "the resumed run redid every task, or the kill came after the last"
    summary = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{resumed.info.run_id}/results/summary.csv"))
    assert set(summary[summary["model"] == "baselines:krr"]["ion"]) == {"Li", "Mg", "Al", "Ca", "Zn", "Na"}


def test_evaluate_on_spark_local_mode_gives_the_records_of_an_in_process_run(li_champion, isolated_tracking):
    pytest.importorskip("joblibspark")
    args = ["--families", "baselines,li", "--ions", "Li,Mg", "--max-rows-per-ion", "60", "--n-repeats", "1", "--split", "random", "--epochs", "1",
            "--methods", "baselines=rfr,krr", "--seed", "3", "--backend", "spark", "--master", "local[2]", "--n-jobs", "2"]
    run = _evaluate_run(run_entry_point("pipelines.evaluate", *args, cwd=isolated_tracking))
    assert run.data.metrics["tasks"] == 3 and run.data.metrics["tasks_failed"] == 0
    records = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/results/records.csv"))
    from voltmodels.data.dataset import load_dataset

    spec = study.StudySpec(dataset=str(load_dataset("latest").folder), profile="quick", seed=3, max_rows_per_ion=60)
    local = pd.DataFrame(study.run_task(spec, study.Task("baselines", "random", 0, "Mg", ("rfr", "krr"))))
    spark = records[(records["kind"] == "baselines") & (records["ion"] == "Mg")].set_index("method")
    assert np.allclose(spark.loc[local["method"], "test_mae"].to_numpy(), local["test_mae"].to_numpy(), atol=1e-9)


def test_summary_tables_selection_coverage_band_and_paired_differences():
    rows = []
    for repeat in range(3):
        for method, val, test, inside in (("uip", 0.10, 0.12, 9), ("uip_delta", 0.08, 0.10 - 0.01 * repeat, 18)):
            rows.append({"kind": "uip", "potential": "sevennet-0", "ion": "Mg", "split": "random", "repeat": repeat, "method": method, "val_mae": val,
                         "test_mae": test, "n_test": 20, "test_in_interval": inside})
        rows.append({"kind": "baselines", "potential": "", "ion": "Mg", "split": "random", "repeat": repeat, "method": "rfr", "val_mae": 0.01, "test_mae": 0.3,
                     "n_test": 20, "test_in_interval": np.nan})
    records = pd.DataFrame(rows)
    selected = study.with_selected(records)
    picked = selected[selected["model"] == "selected"]
    assert set(picked["selected_model"]) == {"uip[sevennet-0]:uip_delta"}  # baselines are not routed: never selected
    summary = study.summary(selected)
    delta = summary[summary["model"] == "uip[sevennet-0]:uip_delta"].iloc[0]
    assert delta["test_mae_mean"] == pytest.approx(0.09) and delta["test_mae_std"] == pytest.approx(0.01) and delta["coverage"] == pytest.approx(54 / 60)
    coverage = study.coverage_table(summary).set_index("model")
    assert coverage.loc["uip[sevennet-0]:uip_delta", "in_band"] and not coverage.loc["uip[sevennet-0]:uip", "in_band"]  # 27/60 = 0.45
    low, high = study.binomial_band(60)
    assert low == pytest.approx(0.9 - 1.96 * np.sqrt(0.09 / 60))
    paired = study.paired_comparison(selected, "uip[sevennet-0]:uip").set_index("model")
    assert paired.loc["uip[sevennet-0]:uip_delta", "wins"] == 3 and paired.loc["uip[sevennet-0]:uip_delta", "mae_diff_mean"] == pytest.approx(-0.03)
    table = study.mae_tables(summary)["random"]
    assert table.loc["Mg", "uip[sevennet-0]:uip_delta"] == "0.090 ± 0.010"


def test_plan_tasks_puts_multi_ion_models_first_and_refuses_unknown_families(li_champion):
    from voltmodels.config import VoltmodelsError
    from voltmodels.data.dataset import load_dataset

    dataset = load_dataset("latest")
    tasks = study.plan_tasks(dataset, ["transfer", "uip"], ["Li", "Mg"], ["random"], 2, ["sevennet-0"])
    assert [t.kind for t in tasks[:2]] == ["multi", "multi"]
    assert {t.key for t in tasks if t.kind == "transfer"} == {f"transfer|-|Mg|random|{r}|li_direct,scratch,freeze,finetune,multi_direct,multi_finetune" for r in range(2)}
    assert [t.ion for t in tasks if t.kind == "uip"] == ["Li,Mg", "Li,Mg"]
    with pytest.raises(VoltmodelsError, match="unknown families gnn"):
        study.plan_tasks(dataset, ["gnn"], ["Li"], ["random"], 1)


def test_a_benchmark_prints_its_tables_and_logs_them_as_a_results_run(isolated_tracking, capsys):
    from voltmodels.machine import machine_line
    from voltmodels.tracking import RESULTS_EXPERIMENT, results_run

    with results_run("unit-table"):
        print(machine_line())
        print("dataset 0123456789abcdef: 3 electrodes")
        print(pd.DataFrame({"ion": ["Li"], "mae": [0.1]}).to_markdown(index=False))
    assert "results run " in capsys.readouterr().out
    run = mlflow.search_runs(experiment_names=[RESULTS_EXPERIMENT], filter_string="tags.table = 'unit-table'", output_format="list")[0]
    assert run.data.tags["dataset_digest"] == "0123456789abcdef" and run.data.tags["machine"].startswith("machine: ")
    report = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/tables/report.md")
    assert "| Li    |   0.1 |" in report
