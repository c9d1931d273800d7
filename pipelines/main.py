"""Entry point `main`: fit what users serve in one command, reusing steps that already ran.

curate -> train_li -> baselines (all ions) -> transfer (all ions) -> uip (universal-potential families)
-> interpret -> router (per ion the better champion of CGCNN and potential families), and with
`--evaluate true` the repeated-split grid (`evaluate`). The fit steps train and register on one split
(random repeat 0): the n_repeats x strategies statistics are evaluate's job. A step is
reused when a FINISHED run of the same entry point with the same parameters and the same source
version exists (MLflow's multistep-workflow pattern); otherwise it is launched with
`mlflow.projects.run` and its run id feeds the next step. The parameters of a step include the run
ids it consumes (`dataset` = the curate run; `upstream` = the runs that registered the models it
reads), so a relaunched step relaunches everything downstream of it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.utils import mlflow_tags

from pipelines.common import SOURCE_VERSION_TAG, main_guard, setup_tracking, source_version
from voltmodels.config import parse_ions
from voltmodels.potentials.calculators import DEFAULT_POTENTIAL

PROJECT = str(Path(__file__).resolve().parent.parent)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profile", default="quick", choices=["quick", "paper"])
    p.add_argument("--snapshot", default="")
    p.add_argument("--seed", default="0")
    p.add_argument("--interpret-ions", default="Li,Mg,Zn,Al")
    p.add_argument("--multi-ion", default="true", choices=["true", "false"], help="transfer also compares the shared multi-ion model")
    p.add_argument("--potential", default=DEFAULT_POTENTIAL, help="universal potential(s) of the uip step; 'none' leaves the step out")
    p.add_argument("--evaluate", default="false", choices=["true", "false"], help="also run the repeated-split grid (evaluate) after the fit steps")
    return p.parse_args(argv)


_source_version = source_version  # a module name the tests can stand in for


def find_finished(entry_point: str, parameters: dict, version: str | None):
    """A finished run of `entry_point` with exactly these parameters at this source version."""
    if version is None:
        return None
    client = MlflowClient()
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiment_ids,
        filter_string=f"tags.`{mlflow_tags.MLFLOW_PROJECT_ENTRY_POINT}` = '{entry_point}' and attributes.status = 'FINISHED' "
        f"and tags.`{SOURCE_VERSION_TAG}` = '{version}'",
        order_by=["attributes.start_time DESC"],
    )
    wanted = {k: str(v) for k, v in parameters.items()}
    for run in runs:
        logged = run.data.params
        # Every wanted parameter must be logged with this value: a run without one (e.g. from before
        # `upstream` existed) was not made from these inputs.
        if all(logged.get(k.replace("-", "_"), logged.get(k)) == v for k, v in wanted.items()):
            return run
    return None


def get_or_run(entry_point: str, parameters: dict, version: str | None) -> str:
    existing = find_finished(entry_point, parameters, version)
    if existing is not None:
        print(f"[main] reusing {entry_point} run {existing.info.run_id}")
        return existing.info.run_id
    print(f"[main] running {entry_point} {parameters}")
    submitted = mlflow.projects.run(PROJECT, entry_point, parameters=parameters, env_manager="local", synchronous=True)
    return submitted.run_id


@main_guard
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_tracking()
    version = _source_version()
    with mlflow.start_run(run_name=f"main-{args.profile}") as run:
        mlflow.set_tag("voltmodels.step", "main")
        curate = get_or_run("curate", {"snapshot": args.snapshot, "seed": args.seed}, version)
        common = {"dataset": curate, "profile": args.profile, "seed": args.seed}
        steps = {"curate": curate}
        steps["train_li"] = get_or_run("train_li", common, version)
        fit = {"n_repeats": 1, "split": "random"}  # one split: the repeated-split statistics are evaluate's
        steps["baselines"] = get_or_run("baselines", {**common, **fit, "ion": "all"}, version)
        steps["transfer"] = get_or_run("transfer", {**common, **fit, "ion": "all", "multi_ion": args.multi_ion, "upstream": steps["train_li"]}, version)
        if args.potential.strip().lower() != "none":
            steps["uip"] = get_or_run("uip", {**common, **fit, "potential": args.potential}, version)
        if "interpret" in _entry_points():
            for ion in parse_ions(args.interpret_ions, every=()):
                steps[f"interpret_{ion}"] = get_or_run("interpret", {"ion": ion, "dataset": curate, "upstream": f"{steps['train_li']},{steps['transfer']}"}, version)
        if "router" in _entry_points():
            upstream = ",".join(steps[k] for k in ("train_li", "transfer", "uip") if k in steps)
            steps["router"] = get_or_run("router", {"upstream": upstream}, version)
        if args.evaluate == "true":
            grid = {"potential": args.potential} if args.potential.strip().lower() != "none" else {"families": "li,transfer,baselines"}
            steps["evaluate"] = get_or_run("evaluate", {**common, **grid, "upstream": steps["train_li"]}, version)
        mlflow.log_dict(steps, "steps.json")
        print(f"[main] done: {steps}; main run {run.info.run_id}")


def _entry_points() -> set[str]:
    # MLflow has no public API that lists a project's entry points; the MLproject file is plain YAML.
    import yaml

    return set(yaml.safe_load((Path(PROJECT) / "MLproject").read_text())["entry_points"])


if __name__ == "__main__":
    main()
