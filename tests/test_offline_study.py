"""The offline (GPU-box) study script, device selection and Optuna stale-trial recovery."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch

from tests.conftest import REPO
from voltmodels.config import torch_device
from voltmodels.transfer import METHODS
from voltmodels.tuning import create_study, optimize_capped


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


def test_offline_study_runs_every_phase_and_hands_its_best_params_to_the_project_study(li_champion, tmp_path):
    from voltmodels.data.dataset import load_dataset

    folder = load_dataset("latest").folder
    out = tmp_path / "study"
    cmd = [sys.executable, "benchmarks/offline_study.py", "--dataset", str(folder), "--out", str(out), "--workers", "1", "--n-trials", "1",
           "--epochs", "1", "--patience", "1", "--li-seeds", "1", "--n-repeats", "1", "--ions", "Mg", "--splits", "random", "--total-seconds", "600"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env={**__import__("os").environ, "VOLTMODELS_TORCH_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    li = pd.read_csv(out / "li_accuracy.csv")
    assert sorted(li["split"]) == ["framework", "random"] and li["cgcnn_test_mae"].gt(0).all()
    assert len(pd.read_csv(out / "multi_models.csv")) == 1
    transfer = pd.read_csv(out / "transfer.csv")
    assert set(transfer["method"]) == {*METHODS, "multi_direct", "multi_finetune"}
    assert "test MAE (V), random split" in proc.stdout

    # A second run on the same folder with one more repeat resumes: the saved multi-ion model and the
    # finished methods of repeat 0 are reused; repeat 1 gets its model and only the method asked for.
    rerun = subprocess.run(cmd[:cmd.index("--n-trials")] + ["--n-trials", "0", "--phases", "multi,transfer", "--methods", "multi_direct", "--n-repeats", "2",
                                                              "--ions", "Mg", "--splits", "random", "--epochs", "1", "--patience", "1"],
                           cwd=REPO, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert list(pd.read_csv(out / "multi_models.csv")["repeat"]) == [0, 1]
    again = pd.read_csv(out / "transfer.csv")
    assert len(again) == len(transfer) + 1 and again.iloc[-1][["repeat", "method"]].tolist() == [1, "multi_direct"]

    # One trial searched: its best are the defaults, which a fresh project study enqueues anyway.
    found = {**json.loads((out / "best_params.json").read_text()), "n_conv": 4, "learning_rate": 1e-3}
    (out / "best_params.json").write_text(json.dumps(found))
    storage = f"sqlite:///{tmp_path / 'project_optuna.db'}"
    subprocess.run([sys.executable, "benchmarks/offline_study.py", "--enqueue-best", str(out), "--study-name", "li", "--storage", storage], cwd=REPO, check=True, capture_output=True)
    waiting = [t for t in optuna.load_study(study_name="li", storage=storage).trials if t.state == optuna.trial.TrialState.WAITING]
    assert found in [t.system_attrs.get("fixed_params") for t in waiting]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state  # a zombie has stopped running


def test_killing_the_offline_study_ends_its_workers(li_champion, tmp_path):
    from voltmodels.data.dataset import load_dataset

    cmd = [sys.executable, "benchmarks/offline_study.py", "--dataset", str(load_dataset("latest").folder), "--out", str(tmp_path / "study"), "--workers", "1",
           "--n-trials", "0", "--phases", "li", "--li-seeds", "1", "--epochs", "1000", "--patience", "1000"]
    study = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers, deadline = [], time.time() + 120
        while not workers and time.time() < deadline:
            time.sleep(1)
            workers = [int(p) for p in Path(f"/proc/{study.pid}/task/{study.pid}/children").read_text().split()]
        assert workers, "the study started no worker process"
        study.terminate()
        study.wait(timeout=60)
        time.sleep(2)
        assert not [pid for pid in workers if _alive(pid)], "worker processes outlived the killed study"
    finally:
        study.kill()


# Stand-ins named like the study's tasks: dependencies are matched by task name and first two args.
_EVENTS: list[tuple[str, tuple, float]] = []


def multi_task(strategy, repeat, seconds):
    _EVENTS.append(("start multi", (strategy, repeat), time.perf_counter()))
    time.sleep(seconds)
    if repeat == 2:
        raise RuntimeError("this multi-ion training fails")
    _EVENTS.append(("end multi", (strategy, repeat), time.perf_counter()))
    return repeat


def transfer_task(ion, strategy, repeat):
    _EVENTS.append(("start transfer", (strategy, repeat), time.perf_counter()))
    return ion


def test_a_transfer_task_starts_when_its_own_multi_ion_model_is_ready(capsys):
    """Not when every multi-ion model is: a short split's transfer runs beside a long training."""
    from concurrent.futures import ThreadPoolExecutor

    sys.path.insert(0, str(REPO))
    from benchmarks.offline_study import _run_tasks

    _EVENTS.clear()
    results = []
    multis = [(multi_task, "random", 0, 0.05), (multi_task, "random", 1, 1.0), (multi_task, "random", 2, 0.05)]
    waiting = [((transfer_task, "Mg", "random", r), {("multi_task", ("random", r))}) for r in range(3)]
    waiting.append(((transfer_task, "Ca", "random", 9), set()))  # nothing to wait for
    with ThreadPoolExecutor(2) as pool:
        _run_tasks(pool, multis, time.time() + 30, lambda name, result: results.append((name, result)), waiting)
    when = {(kind, key): t for kind, key, t in _EVENTS}
    assert when[("start transfer", ("random", 0))] < when[("end multi", ("random", 1))], "transfer of split 0 waited for split 1's model"
    assert when[("start transfer", ("random", 1))] >= when[("end multi", ("random", 1))], "transfer of split 1 started before its model"
    # A failed dependency still releases its task (which then reports what it lacks); the failure is printed.
    assert sorted(r for name, r in results if name == "transfer_task") == ["Ca", "Mg", "Mg", "Mg"]
    assert "multi_task('random', 2, 0.05) failed" in capsys.readouterr().out
