"""Where the time of `mlflow run .` (main) goes: one row per step with its wall time.

    python benchmarks/steps.py                 # the latest finished main run of the store
    python benchmarks/steps.py --run-id RUN    # a given one

Reads the main run's `steps.json` (the run id of each step) and each step run's start and end; a
step reused from an earlier main run is marked so and not counted in the total.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mlflow
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipelines.common import setup_tracking  # noqa: E402
from voltmodels.machine import machine_line  # noqa: E402
from voltmodels.tracking import finished_runs, results_run  # noqa: E402


def step_table(main_run) -> pd.DataFrame:
    steps = mlflow.artifacts.load_dict(f"runs:/{main_run.info.run_id}/steps.json")
    rows = []
    for step, run_id in steps.items():
        run = mlflow.get_run(run_id)
        reused = run.info.start_time < main_run.info.start_time
        minutes = (run.info.end_time - run.info.start_time) / 60000 if run.info.end_time else float("nan")
        rows.append({"step": step, "run_id": run_id, "reused": reused, "minutes": round(minutes, 2), "profile": run.data.params.get("profile", "")})
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-id", default="", help="a main run (default: the latest finished one)")
    args = p.parse_args()
    setup_tracking()
    if args.run_id:
        run = mlflow.get_run(args.run_id)
    else:
        runs = finished_runs("tags.`voltmodels.step` = 'main'", max_results=1)
        if not runs:
            raise SystemExit("error: no finished main run in this store; run `mlflow run . --env-manager local` first")
        run = runs[0]
    print(machine_line())
    table = step_table(run)
    dataset = mlflow.get_run(table.loc[table["step"] == "curate", "run_id"].iloc[0]).data.tags.get("dataset_digest", "") if "curate" in set(table["step"]) else ""
    wall = (run.info.end_time - run.info.start_time) / 60000
    print(f"main run {run.info.run_id} ({run.info.run_name}), dataset {dataset}: {wall:.1f} min wall, "
          f"{table.loc[~table['reused'], 'minutes'].sum():.1f} min in the steps it ran")
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    with results_run("steps"):
        main()
