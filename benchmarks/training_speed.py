"""Training speed table: seconds per CGCNN training epoch on the Li training rows, per thread count.

    python benchmarks/training_speed.py                      # champion's hyperparameters, 1 and 2 threads
    python benchmarks/training_speed.py --threads 1 --epochs 5 --dataset DATASET_DIR

Each thread count runs in its own process (torch's thread pools are fixed per process) and trains
`--epochs` epochs of the real training loop (`voltmodels.training.train`: batching, forward,
backward, AdamW, validation) on random split 0; the graphs come from the warm disk cache, so
featurization is not timed. Hyperparameters: the Li champion's `trial_params` tag when the registry
has it, else the reference CGCNN defaults; `--params` (a JSON object) overrides both. Run it on a quiet
machine: the load average printed first says whether it was.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from voltmodels.machine import machine_line  # noqa: E402
from voltmodels.tracking import results_run  # noqa: E402


def time_epochs(args: argparse.Namespace) -> dict:
    """In this process: train `args.epochs` epochs and return the timing row."""
    from voltmodels.config import set_torch_threads
    from voltmodels.data.dataset import load_dataset
    from voltmodels.featurized import dataset_graphs
    from voltmodels.graphs.graph import GraphSettings
    from voltmodels.model import CGCNN
    from voltmodels.training import build_graph_sets, train
    from voltmodels.tuning import configs_from_params

    set_torch_threads(args.threads)
    if args.dataset == "latest" or not args.params:
        from pipelines.common import setup_tracking

        setup_tracking()  # the latest curate run and the champion's hyperparameters live in the store
    if args.params:
        params = json.loads(args.params)
    else:
        from benchmarks.li_accuracy import champion_params

        params = champion_params()
    dataset = load_dataset(args.dataset)
    settings = GraphSettings()
    graphs, _ = dataset_graphs(dataset, "Li", settings, progress=False)
    sets = build_graph_sets(dataset.split("Li", "random", repeat=0), graphs)
    model_config, train_config = configs_from_params(params, args.epochs, args.epochs, 0, settings.n_edge_features)
    result = train(CGCNN(model_config), sets["train"], sets["val"], settings, train_config, progress=False)
    n_edges = sum(g.n_edges for g in sets["train"].graphs)
    return {"threads": args.threads, "train_structures": len(sets["train"]), "train_edges": n_edges, "epochs": len(result.history),
            "s_per_epoch": round(result.seconds_per_epoch, 2), "structures_per_s": round(len(sets["train"]) / result.seconds_per_epoch, 1),
            "params": json.dumps(params)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="latest", help="curated dataset folder or curate run id (default: the latest curate run)")
    p.add_argument("--threads", default="1,2", help="comma list of torch thread counts, one process each")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--params", default="", help='hyperparameters as JSON, e.g. {"atom_fea_len": 96, ...}')
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.threads = int(args.threads)
        print(json.dumps(time_epochs(args)))
        return
    import pandas as pd

    print(machine_line())
    rows = []
    for threads in [int(t) for t in args.threads.split(",") if t.strip()]:
        command = [sys.executable, __file__, "--worker", "--threads", str(threads), "--epochs", str(args.epochs), "--dataset", args.dataset, "--params", args.params]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(f"\nhyperparameters: {table.pop('params').iloc[0]}\n")
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    with results_run("training_speed"):
        main()
