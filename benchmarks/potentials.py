"""Universal-potential families vs zero-shot potentials: per-ion test MAE over seeded splits, modes (a)/(b), cost.

    python benchmarks/potentials.py --run --profile paper --potential sevennet-0,chgnet   # run `uip`, then print
    python benchmarks/potentials.py                                                      # print the latest uip run
    python benchmarks/potentials.py --evaluate RUN_ID                                    # the tables of an `evaluate` run
    python benchmarks/potentials.py --mode-b 12                                          # + mode (b) on 12 test electrodes per ion
    python benchmarks/potentials.py --served models:/voltage-predictor@champion          # what a served model achieves
    python benchmarks/potentials.py --cost 100 --potential sevennet-0,sevennet-l3i5      # energy cost, same structures

Tables: test MAE (V) mean ± std over the repeats of every split strategy, per ion and over all test
rows (row-weighted); 90 % interval coverage; the repeat-0 errors of `mp-*` and `mvc-*` electrodes
apart (the potentials' training set MPtrj holds MP relaxations of many `mp-*` materials); how many MP
charged states still hold ions (x1 > 0); seconds per static energy and per relaxation on this machine.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from voltmodels.machine import machine_line  # noqa: E402
from voltmodels.potentials.electrodes import holds_ion  # noqa: E402
from voltmodels.tracking import results_run  # noqa: E402
from pipelines.common import setup_tracking  # noqa: E402
from voltmodels.tracking import finished_runs  # noqa: E402

IONS = ("Li", "Mg", "Ca", "Zn", "Al", "Na", "K", "Y")
FAMILY_ORDER = ("uip", "uip_recal", "uip_delta", "uip_head", "selected")


def latest_uip_run():
    runs = finished_runs("tags.`voltmodels.step` = 'uip'", max_results=1)
    if not runs:
        raise SystemExit("error: no finished uip run in the tracking store; run with --run first")
    return runs[0]


def load_csvs(run, pattern: str) -> pd.DataFrame:
    """The run's `results/<potential tag><pattern>` tables, with a `tag` column naming the potential."""
    frames = []
    for item in mlflow.artifacts.list_artifacts(run_id=run.info.run_id, artifact_path="results"):
        if item.path.endswith(pattern):
            frame = pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/{item.path}")))
            frames.append(frame.assign(tag=Path(item.path).name[: -len(pattern)]))
    return pd.concat(frames, ignore_index=True)


def _cell(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    return f"{values.mean():.3f}" if len(values) == 1 else f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def with_selected(records: pd.DataFrame) -> pd.DataFrame:
    """Adds method `selected`: per potential, split, repeat and ion, the family with the lowest
    validation MAE, and its test MAE (what the @champion rule delivers, without peeking at test rows)."""
    keys = ["potential", "split", "repeat", "ion"]
    valid = records.dropna(subset=["val_mae"])
    chosen = valid.loc[valid.groupby(keys)["val_mae"].idxmin()].assign(method="selected")
    return pd.concat([records, chosen], ignore_index=True)


def mae_table(records: pd.DataFrame, split: str) -> pd.DataFrame:
    records = with_selected(records[records["split"] == split])
    rows = []
    for (potential, family), group in records.groupby(["potential", "method"], sort=False):
        pooled = group.groupby("repeat").apply(lambda g: np.average(g["test_mae"], weights=g["n_test"]), include_groups=False)
        row = {"potential": potential, "family": family, "all": _cell(pooled)}
        for ion in IONS:
            row[ion] = _cell(group.loc[group["ion"] == ion, "test_mae"])
        row["coverage"] = f"{group['test_coverage'].mean():.2f}"
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(["potential", "family"], key=lambda c: c.map({f: i for i, f in enumerate(FAMILY_ORDER)}) if c.name == "family" else c)


def print_mae_tables(records: pd.DataFrame) -> None:
    for split in ("random", "framework"):
        if (records["split"] == split).any():
            print(f"\n### {split} split: test MAE (V), mean ± std over repeats, mode (a)\n")
            print(markdown(mae_table(records, split)))


def provenance_table(predictions: pd.DataFrame) -> pd.DataFrame:
    test = predictions[(predictions["part"] == "test") & (predictions["split"] == "random")].copy()
    test["source"] = np.where(test["battery_id"].str.startswith("mvc-"), "mvc-*", "mp-*")
    test["error"] = (test["true"] - test["predicted"]).abs()
    return test.pivot_table(index=["tag", "method"], columns="source", values="error", aggfunc=["mean", "count"]).round(3)


def markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def mode_b(potential: str, per_ion: int, seed: int, dataset_ref: str, families, calibration_rows: int) -> pd.DataFrame:
    """Mode (a) vs (b) on the same test electrodes of random split 0, with the repeat-0 models, their
    mode (b) intervals widened as `uip` registers them (from `calibration_rows` validation rows)."""
    from voltmodels import baselines as bl
    from voltmodels.data.dataset import load_dataset
    from voltmodels.potentials.cache import PotentialCache
    from voltmodels.potentials.calculators import potential_key
    from voltmodels.potentials.electrodes import DatasetInputs, calibrate_mode_b
    from voltmodels.potentials.families import evaluate

    dataset = load_dataset(dataset_ref)
    features = bl.dataset_features(dataset)
    full = DatasetInputs(dataset, potential, "a")  # cached
    _, _, final = evaluate(dataset, full, features, families, ("random",), 1, log=None)
    started = time.perf_counter()
    used = calibrate_mode_b(final, dataset, full, features, calibration_rows, seed=seed, n_workers=os.cpu_count())
    print(f"\nmode (b) interval scale from {used} validation rows (x1 = 0, {time.perf_counter() - started:.0f} s): "
          + ", ".join(f"{family} {model.mode_b_scale:.2f}" for family, model in final.items()))
    picked = []
    for ion in IONS:
        rows = dataset.split(ion, "random", 0)
        rows = rows[rows["split"] == "test"]
        picked.append(rows.sample(n=min(per_ion, len(rows)), random_state=seed))
    rows = pd.concat(picked, ignore_index=True)
    started = time.perf_counter()
    b = DatasetInputs(dataset, potential, "b", rows=rows, n_workers=os.cpu_count())
    elapsed = time.perf_counter() - started
    a = full(rows)
    X = features.loc[rows["id_discharge"]].to_numpy(np.float64)
    ions = rows["working_ion"].to_numpy()
    y = rows["average_voltage"].to_numpy()
    # Mode (b) removes every ion; where MP's charged state keeps some (x1 > 0) it computes another reaction.
    x1 = holds_ion(rows)
    out = []
    for family, model in final.items():
        for mode, inputs in (("a", a), ("b", b(rows))):
            err = np.abs(model.predict(inputs, X, ions) - y)
            row = {"family": family, "mode": mode, "all": f"{err.mean():.3f}", f"x1 = 0 ({(~x1).sum()})": f"{err[~x1].mean():.3f}", f"x1 > 0 ({x1.sum()})": f"{err[x1].mean():.3f}"}
            row.update({ion: f"{err[ions == ion].mean():.3f}" for ion in IONS if (ions == ion).any()})
            # The served 90 % interval: does it hold in mode (b), widened by the validation rows' scale (and without)?
            inside = err <= model.interval(ions, mode_b=np.full(len(ions), mode == "b"))
            unscaled = err <= model.interval(ions)
            row.update({"coverage": f"{inside.mean():.2f}", "coverage x1 = 0": f"{inside[~x1].mean():.2f}", "x1 = 0, unscaled": f"{unscaled[~x1].mean():.2f}"})
            out.append(row)
    failed = sum(1 for e, v in zip(b.inputs.errors, b.inputs.v_uip) if e and not np.isfinite(v))
    with PotentialCache()._connect() as db:
        relax_rows = db.execute("select avg(seconds), count(*), avg(n_steps), avg(converged) from relaxed where potential = ? and settings like '%\"fmax\": 0.1%'", [potential_key(potential)]).fetchone()
    print(f"\nmode (b): {len(rows)} test electrodes ({per_ion} per ion), {failed} without a voltage; this run {elapsed:.0f} s; "
          f"relaxations in the cache: {relax_rows[1]}, {relax_rows[0]:.1f} s each on average, {relax_rows[2]:.0f} FIRE steps, {100 * relax_rows[3]:.0f} % converged")
    return pd.DataFrame(out)


def served_table(model_uri: str, potential: str, dataset_ref: str) -> pd.DataFrame:
    """Test MAE (V) per ion on random split 0 of a registered model as a user gets it (both end
    members given as structure JSON), next to the zero-shot potential on the same rows."""
    import json

    from voltmodels.data.dataset import load_dataset
    from voltmodels.potentials.electrodes import DatasetInputs

    dataset = load_dataset(dataset_ref)
    rows = pd.concat([dataset.split(ion, "random", 0) for ion in IONS if ion in dataset.ions], ignore_index=True)
    rows = rows[rows["split"] == "test"].reset_index(drop=True)
    compact = dataset.compact_structures
    request = pd.DataFrame({
        "structure": [json.dumps(compact[m]) for m in rows["id_discharge"]],
        "working_ion": rows["working_ion"],
        "structure_charged": [json.dumps(compact[m]) if m in compact else None for m in rows["id_charge"]],
    })
    model = mlflow.pyfunc.load_model(model_uri)
    out = model.predict(request, params={"on_error": "row"})
    zero_shot = DatasetInputs(dataset, potential, "a", rows=rows)(rows).v_uip
    y = rows["average_voltage"].to_numpy()
    table = []
    for name, predicted in ((model_uri, out["voltage"].to_numpy(dtype=float)), (f"{potential} zero-shot", zero_shot)):
        err = np.abs(predicted - y)
        row = {"model": name, "all": f"{np.nanmean(err):.3f}"}
        row.update({ion: f"{np.nanmean(err[rows['working_ion'] == ion]):.3f}" for ion in IONS if (rows["working_ion"] == ion).any()})
        table.append(row)
    members = out.groupby("working_ion")["model_name"].first().to_dict()
    print(f"\nmembers that answered: {', '.join(f'{i}: {m}' for i, m in members.items())}; {int((out['error'] != '').sum())} rows without an answer")
    return pd.DataFrame(table)


def cost_table(potentials) -> pd.DataFrame:
    from voltmodels.potentials.cache import PotentialCache
    from voltmodels.potentials.calculators import potential_key

    rows = []
    with PotentialCache()._connect() as db:
        for p in potentials:
            n, mean, atoms = db.execute("select count(*), avg(seconds), avg(n_atoms) from energies where potential = ? and error is null", [potential_key(p)]).fetchone()
            rows.append({"potential": potential_key(p), "static energies cached": n, "s per structure": f"{mean:.3f}" if mean else "–", "mean atoms": f"{atoms:.1f}" if atoms else "–"})
    return pd.DataFrame(rows)


def timed_energies(potentials, n: int, dataset_ref: str, n_workers: int = 2) -> pd.DataFrame:
    """Seconds per static energy of each potential on the same `n` structures (every k-th of the
    dataset), each computed afresh into an empty cache by `n_workers` one-thread workers."""
    import tempfile

    from voltmodels.data.dataset import load_dataset
    from voltmodels.potentials.cache import PotentialCache
    from voltmodels.potentials.compute import static_energies

    compact = load_dataset(dataset_ref).compact_structures
    ids = sorted(compact)[:: max(1, len(compact) // n)][:n]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in potentials:
            started = time.perf_counter()
            records = static_energies({m: compact[m] for m in ids}, name, PotentialCache(Path(tmp) / "cost.sqlite"), n_workers=n_workers)
            wall = time.perf_counter() - started
            rows.append({
                "potential": name,
                "structures": len(records),
                "mean atoms": f"{np.mean([r.n_atoms for r in records.values()]):.1f}",
                "s per energy, one-thread worker": f"{np.mean([r.seconds for r in records.values()]):.2f}",
                f"wall s, {n_workers} workers (model loads included)": f"{wall:.0f}",
            })
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="store_true", help="run the uip entry point first")
    p.add_argument("--profile", default="paper")
    p.add_argument("--potential", default="sevennet-0,chgnet")
    p.add_argument("--dataset", default="latest")
    p.add_argument("--mode-b", type=int, default=0, help="test electrodes per ion to relax for mode (b) (0: skip)")
    p.add_argument("--mode-b-calibration", type=int, default=40, help="validation rows relaxed to widen the mode (b) interval, as `uip -P mode_b_rows`")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--served", default="", help="also: test MAE of this registered model (e.g. models:/voltage-predictor@champion) on random split 0")
    p.add_argument("--cost", type=int, default=0, help="only: time each potential's static energies on this many structures, from an empty cache")
    p.add_argument("--evaluate", default="", metavar="RUN_ID", help="only: the MAE tables of the potential families of this `evaluate` run (its results/records.csv)")
    args = p.parse_args(argv)
    setup_tracking()
    if args.evaluate:
        run = mlflow.get_run(args.evaluate)
        records = load_csvs(run, "records.csv")
        print(f"evaluate run {run.info.run_id} (its machine: the run's results/tables.md)")
        print_mae_tables(records[records["kind"] == "uip"])
        return
    if args.cost:
        print(machine_line())
        print(f"\n### static energies of the same {args.cost} structures, each potential from an empty cache\n")
        print(markdown(timed_energies([x.strip() for x in args.potential.split(",")], args.cost, args.dataset)))
        return
    if args.served:
        print(machine_line())
        print(f"\n### {args.served} on the test rows of random split 0 (both end members given): MAE (V)\n")
        print(markdown(served_table(args.served, args.potential.split(",")[0].strip(), args.dataset)))
        return
    if args.run:
        cmd = [sys.executable, "-m", "pipelines.uip", "--profile", args.profile, "--potential", args.potential, "--dataset", args.dataset]
        subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parent.parent)
    run = latest_uip_run()
    records = load_csvs(run, "_repeats.csv")
    predictions = load_csvs(run, "_predictions_repeat0.csv")
    print(machine_line())
    print(f"uip run {run.info.run_id}, dataset {run.data.tags.get('dataset_digest')}, {records['repeat'].nunique()} repeats per split")
    print_mae_tables(records)
    print("\n### random split repeat 0: mean |error| (V) and rows by id source\n")
    print(provenance_table(predictions).to_string())
    from voltmodels.data.dataset import load_dataset

    table = load_dataset(args.dataset).table
    holds = holds_ion(table)
    print(f"\nMP charged states that still hold the working ion (x1 > 0): {sum(holds)} of {len(table)} electrodes ({100 * np.mean(holds):.1f} %)")
    print("\n### cost on this machine\n")
    print(markdown(cost_table([x.strip() for x in args.potential.split(",")])))
    if args.mode_b:
        for potential in [x.strip() for x in args.potential.split(",")][:1]:  # relaxations are costly: the first potential
            print(f"\n### mode (a) vs mode (b), {potential}: test MAE (V) on the same electrodes\n")
            print(markdown(mode_b(potential, args.mode_b, args.seed, args.dataset, FAMILY_ORDER[:-1], args.mode_b_calibration)))


if __name__ == "__main__":
    with results_run("potentials"):
        main()
