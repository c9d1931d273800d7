"""Entry point `candidates`: hypothetical electrodes by substituting the working ion (voltmodels/candidates.py).

Writes a Parquet structure table (`structure`, `structure_charged`, `working_ion` and provenance
columns) that `screen` reads with either engine, the skipped source electrodes with why, and a count
table per target ion next to the paper's screening set; all three are logged to the run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mlflow
import pandas as pd

from pipelines.common import as_int, main_guard, step_run
from voltmodels.candidates import DEFAULT_MAX_SITES, REDOX_3D, RULE, generate
from voltmodels.config import parse_ions
from voltmodels.data.dataset import load_dataset

STEP = "candidates"
#: Zhang et al. (2022), Supplementary Table 36: multivalent electrodes not in MP that the paper screened.
PAPER_COUNTS = {"Mg": 369, "Ca": 278, "Zn": 377, "Al": 613}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="latest")
    p.add_argument("--source-ion", default="Li", help="working ion(s) to substitute: one, a comma list, or all")
    p.add_argument("--target-ion", default="Mg", help="ion(s) put on their sites: one, a comma list, or all")
    p.add_argument("--orderings", type=as_int, default=1, help="distinct arrangements of the target ions per candidate")
    p.add_argument("--max-sites", type=as_int, default=DEFAULT_MAX_SITES)
    p.add_argument("--host-metals", default="", help=f"also swap host metals among this comma list ('3d' = {','.join(REDOX_3D)}; default none)")
    p.add_argument("--output", default="outputs/candidates.parquet")
    return p.parse_args(argv)


def count_table(candidates: pd.DataFrame, targets) -> pd.DataFrame:
    counts = candidates.groupby("working_ion").agg(candidates=("candidate_id", "size"), source_electrodes=("source_battery_id", "nunique"))
    counts = counts.reindex(targets, fill_value=0)
    counts["paper"] = [PAPER_COUNTS.get(ion) for ion in counts.index]
    return counts.rename_axis("working_ion").reset_index()


@main_guard
def main(argv=None) -> str:
    args = parse_args(argv)
    sources, targets = parse_ions(args.source_ion), parse_ions(args.target_ion)
    value = args.host_metals.strip()
    host_metals = list(REDOX_3D) if value == "3d" else [] if value in ("", "none") else [m.strip() for m in value.split(",") if m.strip()]
    dataset = load_dataset(args.dataset)
    params = {"dataset": args.dataset, "source_ion": ",".join(sources), "target_ion": ",".join(targets), "orderings": args.orderings, "max_sites": args.max_sites, "host_metals": ",".join(host_metals), "output": args.output}
    with step_run(STEP, params) as run:
        mlflow.set_tags({"dataset_digest": dataset.digest, "rule": RULE})
        started = time.perf_counter()
        candidates, skipped = generate(dataset, sources, targets, args.orderings, args.max_sites, host_metals)
        seconds = time.perf_counter() - started
        out = Path(args.output).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        candidates.to_parquet(out, index=False)
        skipped_path = out.with_name(out.stem + "_skipped.csv")
        skipped.to_csv(skipped_path, index=False)
        counts = count_table(candidates, targets)
        counts_path = out.with_name(out.stem + "_counts.csv")
        counts.to_csv(counts_path, index=False)
        mlflow.log_metrics({"n_candidates": len(candidates), "n_skipped": len(skipped), "seconds": seconds})
        mlflow.log_metrics({f"n_candidates_{row.working_ion}": int(row.candidates) for row in counts.itertuples()})
        for path in (out, skipped_path, counts_path):
            mlflow.log_artifact(str(path), "candidates")
        print(f"{len(candidates)} candidates from {', '.join(sources)} electrodes in {seconds:.0f} s ({len(skipped)} skipped); table: {out}")
        print(counts.to_string(index=False))
    return run.info.run_id


if __name__ == "__main__":
    main()
