"""The `main` chain reuses a finished step only for the same entry point, params and source version."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.utils import mlflow_tags

from pipelines.main import find_finished


def make_run(entry_point: str, params: dict, commit: str, status: str = "FINISHED") -> str:
    client = MlflowClient()
    experiment = mlflow.set_experiment("main-reuse-test")
    run = client.create_run(experiment.experiment_id, tags={mlflow_tags.MLFLOW_PROJECT_ENTRY_POINT: entry_point, mlflow_tags.MLFLOW_GIT_COMMIT: commit})
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_find_finished_matches_entry_point_params_and_commit():
    done = make_run("train_li", {"dataset": "abc", "profile": "quick", "seed": "0"}, "c1")
    make_run("train_li", {"dataset": "abc", "profile": "quick", "seed": "0"}, "c1", status="FAILED")
    assert find_finished("train_li", {"dataset": "abc", "profile": "quick", "seed": "0"}, "c1").info.run_id == done
    assert find_finished("train_li", {"dataset": "abc", "profile": "paper", "seed": "0"}, "c1") is None
    assert find_finished("train_li", {"dataset": "abc", "profile": "quick", "seed": "0"}, "c2") is None
    assert find_finished("transfer", {"dataset": "abc", "profile": "quick", "seed": "0"}, "c1") is None
    assert find_finished("train_li", {"dataset": "abc"}, None) is None  # not a git checkout: never reuse
