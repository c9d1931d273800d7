"""Entry point `energies`: static energies of every structure of a curated dataset with a potential.

A one-time cost per potential (the cache keeps every energy; later steps, studies and served models
read it). Logs how many structures were computed or read, seconds per structure, and the failures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd

from pipelines.common import main_guard, step_run
from voltmodels.config import set_torch_threads
from voltmodels.data.dataset import load_dataset
from voltmodels.potentials.calculators import DEFAULT_POTENTIAL, potential_key
from voltmodels.potentials.compute import static_energies
from voltmodels.potentials.references import metal_energy_per_atom

STEP = "energies"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="latest")
    p.add_argument("--potential", default=DEFAULT_POTENTIAL, help="comma list: sevennet-0, sevennet-l3i5, sevennet-mf-0, chgnet, mace:/path/weights ...")
    p.add_argument("--ions", default="all")
    p.add_argument("--n-workers", type=lambda v: int(float(v)), default=0, help="processes computing missing energies (0: one per CPU)")
    return p.parse_args(argv)


def _progress(name: str):
    started = time.perf_counter()

    def report(done: int, total: int) -> None:
        if done % 100 == 0 or done == total:
            print(f"[energies] {name}: {done}/{total} computed, {(time.perf_counter() - started) / done:.2f} s per structure", flush=True)

    return report


@main_guard
def main(argv=None) -> None:
    args = parse_args(argv)
    set_torch_threads()
    dataset = load_dataset(args.dataset)
    rows = dataset.table if args.ions == "all" else dataset.table[dataset.table["working_ion"].isin(args.ions.split(","))]
    ids = sorted((set(rows["id_discharge"]) | set(rows["id_charge"])) & set(dataset.compact_structures))
    with step_run(STEP, {"dataset": args.dataset, "potential": args.potential, "ions": args.ions}):
        mlflow.set_tag("dataset_digest", dataset.digest)
        for name in [n.strip() for n in args.potential.split(",") if n.strip()]:
            started = time.perf_counter()
            records = static_energies({mid: dataset.compact_structures[mid] for mid in ids}, name, progress=_progress(name), n_workers=args.n_workers or os.cpu_count())
            elapsed = time.perf_counter() - started
            table = pd.DataFrame(
                [{"material_id": mid, "energy": r.energy, "n_atoms": r.n_atoms, "seconds": r.seconds, "error": r.error} for mid, r in records.items()]
            )
            references = {ion: metal_energy_per_atom(ion, name) for ion in sorted(rows["working_ion"].unique())}
            tag = potential_key(name).split("@")[0]
            mlflow.log_metrics(
                {
                    f"{tag}_structures": len(table),
                    f"{tag}_failed": int(table["error"].notna().sum()),
                    f"{tag}_seconds_per_structure": float(table["seconds"].mean()),
                    f"{tag}_wall_seconds_this_run": elapsed,
                }
            )
            mlflow.log_dict({"potential": potential_key(name), "metal_energy_per_atom": references}, f"energies/{tag}_references.json")
            with tempfile.TemporaryDirectory() as tmp:
                table.to_csv(Path(tmp) / f"{tag}_energies.csv", index=False)
                mlflow.log_artifacts(tmp, "energies")
            print(f"[energies] {name}: {len(table)} structures, {int(table['error'].notna().sum())} failed, {table['seconds'].mean():.2f} s each when computed")


if __name__ == "__main__":
    main()
