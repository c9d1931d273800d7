"""Screening throughput: structures/s of `screen` on pandas (one process) vs Spark (local[N]), same model.

    python benchmarks/screening.py --model models:/voltage-predictor-cgcnn@champion
    python benchmarks/screening.py --model ... --sets snapshot --engines spark --master local[2]

Sets: `snapshot`, every structure of the snapshot's CIF file (7,595; each with the working ion of an
electrode it belongs to), and `candidates`, hypothetical electrodes from `voltmodels.candidates`
(every source ion -> Mg, Ca, Zn, Al, with the 3d host-metal swaps; --min-candidates of
them, a seeded sample made once and kept under outputs/benchmarks/). Per set and engine: rows, predicted, failed, seconds
(reading, scoring and ranking; the model download is not counted) and structures/s. Each row of the
table is a real `screen` call (pipelines/screen.py), so it is logged to MLflow like any screen.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from voltmodels.machine import machine_line  # noqa: E402
from voltmodels.tracking import results_run  # noqa: E402
from pipelines.common import setup_tracking  # noqa: E402

OUT = Path("outputs/benchmarks")
TARGETS = ("Mg", "Ca", "Zn", "Al")


def snapshot_table(snapshot: Path) -> Path:
    """Every CIF of the snapshot as a structure table; a structure's ion is that of its first electrode."""
    path = OUT / "snapshot_structures.parquet"
    if path.exists():
        return path
    electrodes = pd.read_csv(snapshot / "mp_electrodes.csv")
    ion_of = {}
    for row in electrodes.itertuples():
        ion_of.setdefault(row.id_discharge, row.working_ion)
        ion_of.setdefault(row.id_charge, row.working_ion)
    with gzip.open(snapshot / "mp_electrode_structures_cif.json.gz", "rt") as fh:
        cifs = json.load(fh)
    table = pd.DataFrame({"id": sorted(cifs)})
    table["structure"] = [cifs[i] for i in table["id"]]
    table["working_ion"] = [ion_of.get(i, "Li") for i in table["id"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)
    return path


def candidate_table(minimum: int) -> Path:
    from voltmodels.candidates import REDOX_3D, generate
    from voltmodels.config import SUPPORTED_IONS
    from voltmodels.data.dataset import load_dataset

    path = OUT / f"candidates_min{minimum}.parquet"
    if path.exists():
        return path
    started = time.perf_counter()
    dataset = load_dataset("latest")
    sources = [ion for ion in SUPPORTED_IONS if ion not in TARGETS]
    candidates, _ = generate(dataset, sources, list(TARGETS), orderings=1, host_metals=REDOX_3D)
    if len(candidates) < minimum:
        more, _ = generate(dataset, sources, list(TARGETS), orderings=3, host_metals=REDOX_3D)
        candidates = more
    print(f"generated {len(candidates)} candidates in {time.perf_counter() - started:.0f} s; screening a seeded sample of {minimum}")
    path.parent.mkdir(parents=True, exist_ok=True)
    candidates.sample(n=min(minimum, len(candidates)), random_state=0).sort_values("candidate_id").to_parquet(path, index=False)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="registered model URI, e.g. models:/voltage-predictor-cgcnn@champion")
    p.add_argument("--sets", default="snapshot,candidates")
    p.add_argument("--engines", default="pandas,spark")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--min-candidates", type=int, default=50_000)
    p.add_argument("--snapshot", default=None, help="snapshot folder (default VOLTMODELS_SNAPSHOT)")
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args(argv)

    from pipelines.screen import main as screen_main
    from voltmodels.config import resolve_snapshot

    print(machine_line())
    setup_tracking()
    tables = {}
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        tables[name] = snapshot_table(resolve_snapshot(args.snapshot)) if name == "snapshot" else candidate_table(args.min_candidates)
    rows = []
    for name, path in tables.items():
        for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
            output = OUT / f"screen_{name}_{engine}.csv"
            started = time.perf_counter()
            run_id = screen_main(["--input", str(path), "--model", args.model, "--engine", engine, "--master", args.master, "--output", str(output), "--top", "100", "--batch-size", str(args.batch_size)])
            wall = time.perf_counter() - started
            import mlflow

            metrics = mlflow.get_run(run_id).data.metrics
            rows.append({"set": name, "engine": engine if engine == "pandas" else f"spark {args.master}", "rows": int(metrics["n_inputs"]), "predicted": int(metrics["n_predicted"]), "failed": int(metrics["n_failed"]), "seconds": round(metrics["seconds"], 1), "structures/s": round(metrics["structures_per_second"], 1), "wall incl. model load (s)": round(wall, 1), "run": run_id})
    table = pd.DataFrame(rows)
    print(f"\nmodel: {args.model}\n")
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    with results_run("screening"):
        main()
