"""Per-ion transfer table: MAE mean ± std of Li-direct, scratch, freeze, finetune and the baselines.

    python benchmarks/transfer.py --run --ions Mg,Ca,Zn,Al --profile paper --n-repeats 5 --multi-ion true
    python benchmarks/transfer.py            # only print the table of the latest transfer runs

Runs `pipelines.transfer` per ion (against $MLFLOW_TRACKING_URI or the project's SQLite store), then
reads each ion's latest finished transfer run and prints one markdown table.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from voltmodels.machine import machine_line  # noqa: E402
from voltmodels.tracking import results_run  # noqa: E402
from pipelines.common import setup_tracking  # noqa: E402
from pipelines.transfer import baseline_rows  # noqa: E402
from voltmodels.config import SUPPORTED_IONS, parse_ions  # noqa: E402
from voltmodels.tracking import finished_runs  # noqa: E402
from voltmodels.transfer import METHODS, MULTI_METHODS, comparison_tables  # noqa: E402

METHOD_ORDER = [*METHODS, *MULTI_METHODS, "selected", "svr", "krr", "rfr"]


def latest_comparison(ion: str) -> pd.DataFrame | None:
    runs = finished_runs(f"tags.`voltmodels.step` LIKE 'transfer%' and tags.ion = '{ion}'")
    for run in runs:
        try:
            text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/comparison_{ion}.csv")
        except Exception:
            continue
        table = pd.read_csv(io.StringIO(text))
        if not table["method"].isin(["svr", "krr", "rfr"]).any():
            # Baselines that ran after this transfer run: same dataset, same seeded splits.
            table = pd.concat([table, baseline_rows(ion, run.data.tags.get("dataset_digest", ""))], ignore_index=True)
        table["n_repeats"] = int(run.data.metrics.get("n_repeats", 0))
        table["profile"] = run.data.params.get("profile", "?")
        return table
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ions", default="Mg,Ca,Zn,Al,Na,K,Y,Rb,Cs")
    p.add_argument("--run", action="store_true", help="run the transfer entry point first")
    p.add_argument("--profile", default="paper")
    p.add_argument("--n-repeats", default="0")
    p.add_argument("--split", default="both")
    p.add_argument("--multi-ion", default="false", choices=["true", "false"])
    args = p.parse_args()
    print(machine_line())
    setup_tracking()
    ions = parse_ions(args.ions, every=SUPPORTED_IONS[1:])
    if args.run:
        started = time.perf_counter()  # one run for all ions: the multi-ion models are trained once per split
        subprocess.run(
            [sys.executable, "-m", "pipelines.transfer", "--ion", ",".join(ions), "--profile", args.profile, "--n-repeats", args.n_repeats, "--split", args.split,
             "--multi-ion", args.multi_ion],
            check=True,
        )
        print(f"transfer of {', '.join(ions)} took {time.perf_counter() - started:.0f} s")
    tables = [t for t in (latest_comparison(ion) for ion in ions) if t is not None]
    if not tables:
        print("no finished transfer runs found")
        return
    table = pd.concat(tables, ignore_index=True)
    repeats = table.groupby(["ion", "split"])["n_repeats"].first()
    for split, wide in comparison_tables(table, METHOD_ORDER, repeats).items():
        print(f"\n### test MAE (V), {split} split, mean ± std over repeats\n")
        print(wide.to_markdown())


if __name__ == "__main__":
    with results_run("transfer"):
        main()
