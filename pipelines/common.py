"""What every entry point shares: tracking set-up, the run context, user-facing errors."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

import mlflow

from voltmodels.config import VoltmodelsError, default_tracking_uri

EXPERIMENT = "voltmodels"
STEP_TAG = "voltmodels.step"
PROFILES = ("quick", "paper")


def setup_tracking() -> None:
    mlflow.set_tracking_uri(default_tracking_uri())
    # `mlflow run` has already chosen the experiment and created the run; standalone calls use ours.
    if not os.environ.get("MLFLOW_RUN_ID") and not os.environ.get("MLFLOW_EXPERIMENT_NAME") and not os.environ.get("MLFLOW_EXPERIMENT_ID"):
        mlflow.set_experiment(EXPERIMENT)


@contextlib.contextmanager
def step_run(step: str, params: dict | None = None, nested: bool = False, run_name: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """Start (or join, under `mlflow run`) the step's run, tag it and log its params."""
    if not nested:
        setup_tracking()
    with mlflow.start_run(nested=nested, run_name=run_name) as run:
        mlflow.set_tag(STEP_TAG, step)
        version = source_version()
        if version is not None:
            mlflow.set_tag(SOURCE_VERSION_TAG, version)
        if params:
            log_resolved_params(run, params)
        yield run


def log_resolved_params(run, params: dict) -> None:
    """Log params; under `mlflow run` the entry point's raw params are already logged, and a
    resolved value that differs (e.g. n_trials 0 -> the profile's 2) goes in as resolved_<name>."""
    already = mlflow.get_run(run.info.run_id).data.params
    to_log = {}
    for key, value in params.items():
        if value is None:
            continue
        value = str(value)
        if key not in already:
            to_log[key] = value
        elif already[key] != value:
            to_log[f"resolved_{key}"] = value
    mlflow.log_params(to_log)


def as_int(value: str) -> int:
    """Integer option that also accepts MLflow's float rendering ("5.0")."""
    return int(float(value))


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise VoltmodelsError(f"Unknown profile {profile!r}; use quick or paper.")
    return profile


def main_guard(func):
    """Run an entry point; a VoltmodelsError becomes one sentence on stderr and exit status 2."""

    def wrapper(argv=None):
        try:
            setup_tracking()  # before anything looks up runs (e.g. the latest curated dataset)
            return func(argv)
        except VoltmodelsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


#: What a run executes: a commit that changes none of these (docs, tests, benchmarks) keeps its
#: finished steps and evaluation tasks reusable.
CODE_PATHS = ("voltmodels", "pipelines", "serving", "MLproject", "pyproject.toml")
SOURCE_VERSION_TAG = "voltmodels.source_version"


def source_version(root: str | os.PathLike | None = None) -> str | None:
    """A digest of the committed code (the git trees of `CODE_PATHS` at HEAD), what step reuse and
    study keys are tied to; None outside git. Uncommitted edits do not change it, as with the commit."""
    import hashlib
    from pathlib import Path

    try:
        import git

        tree = git.Repo(root or Path(__file__).resolve().parent.parent, search_parent_directories=True).head.commit.tree
    except Exception:  # not a git checkout: nothing is reused
        return None
    ids = []
    for path in CODE_PATHS:
        try:
            ids.append(f"{path}={tree[path].hexsha}")
        except KeyError:
            ids.append(f"{path}=-")
    return hashlib.sha1(";".join(ids).encode()).hexdigest()
