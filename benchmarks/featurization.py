"""Crystal-graph featurisation speed: voltmodels.graphs vs the reference CGCNN approach.

Usage: python benchmarks/featurization.py [--snapshot DIR] [--sample 300] [--n-jobs 2]

* reference: txie-93/cgcnn ``CIFData.__getitem__``'s neighbour step -- ``get_all_neighbors(radius)``,
  a Python sort of every atom's neighbours by distance, keep 12 -- on one core, timed on a random
  sample and extrapolated to the snapshot. (Its Gaussian expansion and atom features are left out,
  which favours the reference.)
* voltmodels single core: ``structure_to_graph`` on the same sample (same work, same core count).
* voltmodels snapshot: ``GraphCache.get_many`` on all structures, cold cache in a temporary folder,
  in this process (n_jobs=1) and with ``--n-jobs`` worker processes, including hashing, process
  start-up and writing the cache; then the warm-cache load of all graphs by a fresh GraphCache.

Structures are parsed once up front (both approaches start from pymatgen Structures); parsing time is
reported on its own line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voltmodels.machine import machine_line  # noqa: E402
from voltmodels.tracking import results_run  # noqa: E402
from voltmodels.config import project_root, resolve_snapshot  # noqa: E402
from voltmodels.graphs import GraphCache, GraphSettings, structure_to_graph  # noqa: E402

COMPACT_FILE = "mp_electrode_structures_compact.json.gz"


def reference_neighbors(structure, radius: float, max_num_nbr: int):
    """cgcnn/data.py CIFData.__getitem__: neighbour indices and distances, padded to max_num_nbr."""
    all_nbrs = structure.get_all_neighbors(radius)
    all_nbrs = [sorted(nbrs, key=lambda x: x.nn_distance) for nbrs in all_nbrs]
    nbr_fea_idx, nbr_fea = [], []
    for nbr in all_nbrs:
        if len(nbr) < max_num_nbr:
            nbr_fea_idx.append([x.index for x in nbr] + [0] * (max_num_nbr - len(nbr)))
            nbr_fea.append([x.nn_distance for x in nbr] + [radius + 1.0] * (max_num_nbr - len(nbr)))
        else:
            nbr_fea_idx.append([x.index for x in nbr[:max_num_nbr]])
            nbr_fea.append([x.nn_distance for x in nbr[:max_num_nbr]])
    return np.array(nbr_fea_idx), np.array(nbr_fea)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--snapshot", default=None, help="snapshot folder (default: $VOLTMODELS_SNAPSHOT or ../shared/data)"
    )
    parser.add_argument("--sample", type=int, default=300, help="structures timed with the reference approach")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    snapshot = resolve_snapshot(args.snapshot) or (project_root().parent / "shared" / "data").resolve()
    from pymatgen.core import Structure

    print(machine_line(("torch", "numpy")))
    # The cores may be shared: a load average above the core count means the timings below are inflated.
    print("load average (1, 5, 15 min) before: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    settings = GraphSettings()
    print(f"settings: {settings.to_dict()}; snapshot: {snapshot / COMPACT_FILE}")

    t0 = time.perf_counter()
    with gzip.open(snapshot / COMPACT_FILE, "rt") as handle:
        compact = json.load(handle)
    structures = {key: Structure(v["lattice"], v["species"], v["frac_coords"]) for key, v in compact.items()}
    parse_s = time.perf_counter() - t0
    n_total = len(structures)
    n_sites = sum(len(s) for s in structures.values())

    sample_ids = random.Random(args.seed).sample(sorted(structures), min(args.sample, n_total))
    sample = [structures[key] for key in sample_ids]

    t0 = time.perf_counter()
    reference = [reference_neighbors(s, settings.radius, settings.max_neighbors) for s in sample]
    reference_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    ours = [structure_to_graph(s, settings) for s in sample]
    ours_single_s = time.perf_counter() - t0

    # Same neighbour distances as the reference (indices may differ between equidistant images).
    max_gap = 0.0
    for (_, ref_dist), graph in zip(reference, ours):
        counts = np.bincount(graph.edge_src, minlength=graph.n_atoms)
        for atom, row in enumerate(np.split(graph.edge_dist, np.cumsum(counts)[:-1])):
            max_gap = max(max_gap, float(np.abs(ref_dist[atom, : len(row)] - row).max()))

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        GraphCache(tmp, settings).get_many(structures, n_jobs=1, progress=False)
        cold_serial_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cold = GraphCache(tmp, settings).get_many(structures, n_jobs=args.n_jobs, progress=False)
        cold_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = GraphCache(tmp, settings).get_many(structures, n_jobs=args.n_jobs, progress=False)
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm_compact = GraphCache(tmp, settings).get_many(compact, n_jobs=args.n_jobs, progress=False)
        warm_compact_s = time.perf_counter() - t0
        cache_mb = sum(p.stat().st_size for p in Path(tmp).rglob("*.npz")) / 1e6
    assert len(warm.graphs) == len(cold.graphs) == len(warm_compact.graphs)

    per_ref = reference_s / len(sample)
    per_single = ours_single_s / len(sample)
    extrapolated_ref = per_ref * n_total
    n_edges = sum(g.n_edges for g in cold.graphs.values())
    def row(approach: str, structures: str, seconds: float, n: int, whole: str, speedup: str) -> tuple:
        return approach, structures, f"{seconds:.2f} s", f"{n / seconds:.0f}", whole, speedup

    rows = [
        row("reference CGCNN (get_all_neighbors + sort), 1 core", f"{len(sample)} sampled", reference_s,
            len(sample), f"{extrapolated_ref:.0f} s (extrapolated)", "1.0x"),
        row("voltmodels structure_to_graph, 1 core", f"same {len(sample)}", ours_single_s, len(sample),
            f"{per_single * n_total:.1f} s (extrapolated)", f"{per_ref / per_single:.1f}x"),
        row("voltmodels GraphCache.get_many, cold, n_jobs=1", f"all {n_total}", cold_serial_s, n_total,
            f"{cold_serial_s:.1f} s (measured)", f"{extrapolated_ref / cold_serial_s:.1f}x"),
        row(f"voltmodels GraphCache.get_many, cold, n_jobs={args.n_jobs}", f"all {n_total}", cold_s, n_total,
            f"{cold_s:.1f} s (measured)", f"{extrapolated_ref / cold_s:.1f}x"),
        row("voltmodels GraphCache.get_many, warm (Structures in)", f"all {n_total}", warm_s, n_total,
            f"{warm_s:.2f} s (measured)", "-"),
        row("voltmodels GraphCache.get_many, warm (compact dicts in)", f"all {n_total}", warm_compact_s, n_total,
            f"{warm_compact_s:.2f} s (measured)", "-"),
    ]
    header = ("approach", "structures", "time", "structures/s", "whole snapshot", "speedup")
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(
        f"snapshot: {n_total} structures, {n_sites} sites, {n_edges} edges, "
        f"{len(cold.errors)} featurisation errors; cache on disk {cache_mb:.1f} MB"
    )
    print(f"parsing the compact JSON into Structures (not timed above): {parse_s:.1f} s")
    print(f"largest |distance difference| vs reference on the sample: {max_gap:.2e} Angstrom")
    for key, message in list(cold.errors.items())[:5]:
        print(f"  error {key}: {message}")
    print("load average (1, 5, 15 min) after: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    with results_run("featurization"):
        main()
