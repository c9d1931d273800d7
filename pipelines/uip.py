"""Entry point `uip`: universal-potential voltage families, evaluated on the seeded splits and registered.

For each potential: zero-shot, per-ion recalibrated, Delta-learning and foundation-head families
(voltmodels.potentials.families), on `n_repeats` seeded random and framework splits (the same rows as
the CGCNN and the baselines). Logged: per-repeat records, the mean ± std table, coverage of the 90 %
intervals, repeat-0 predictions. Each family fitted on random repeat 0 is logged as a pyfunc and
registered as `voltage-uip-<ion>` for every ion, with that ion's validation MAE deciding `@champion`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from pipelines.common import as_int, check_profile, main_guard, step_run
from voltmodels import baselines as bl
from voltmodels.config import VoltmodelsError, set_torch_threads
from voltmodels.data.curation import SPLIT_STRATEGIES
from voltmodels.data.dataset import load_dataset
from voltmodels.potentials.calculators import DEFAULT_POTENTIAL, potential_key, potential_tag, split_name
from voltmodels.potentials.compute import RelaxSettings
from voltmodels.potentials.electrodes import DatasetInputs, calibrate_mode_b
from voltmodels.potentials.families import FAMILIES, evaluate
from voltmodels.registry import potential_name
from voltmodels.tracking import DEFAULT_SELECTION_RULE, register

STEP = "uip"
DEFAULT_REPEATS = {"quick": 1, "paper": 5}
#: Electrodes per ion the quick profile uses (a seeded sample; its one-time energy cost is ~40 % of all).
QUICK_MAX_ROWS_PER_ION = 150
#: Validation electrodes relaxed in mode (b) to scale its interval (two relaxations each, ~20-80 s apiece).
MODE_B_ROWS = {"quick": 12, "paper": 40}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="latest")
    p.add_argument("--potential", default=DEFAULT_POTENTIAL, help="comma list: sevennet-0, sevennet-l3i5, sevennet-mf-0, chgnet, mace:/path/weights ...; a+b combines potentials")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--profile", default="quick", help="quick (1 repeat per split) or paper (5)")
    p.add_argument("--n-repeats", type=as_int, default=0)
    p.add_argument("--split", default="both", help="random, framework or both")
    p.add_argument("--seed", type=as_int, default=0)
    p.add_argument("--max-rows-per-ion", type=as_int, default=-1, help="seeded sample of electrodes per ion (-1: quick 150, paper all; 0: all)")
    p.add_argument("--fmax", type=float, default=RelaxSettings.fmax, help="mode (b) relaxation force threshold, eV/Å")
    p.add_argument("--max-steps", type=as_int, default=RelaxSettings.max_steps, help="mode (b) relaxation step cap")
    p.add_argument("--mode-b-rows", type=as_int, default=-1,
                   help="validation electrodes relaxed in mode (b) to widen the served mode (b) interval (-1: quick 12, paper 40; 0: none)")
    p.add_argument("--register", default="true", choices=["true", "false"])
    p.add_argument("--n-workers", type=lambda v: int(float(v)), default=0, help="processes computing missing energies and fitting the splits (0: one per CPU)")
    return p.parse_args(argv)


def _choices(value: str, allowed, what: str) -> list[str]:
    chosen = list(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    bad = [v for v in chosen if v not in allowed]
    if bad or not chosen:
        raise VoltmodelsError(f"unknown {what} {', '.join(bad) or '(none)'}; use a comma list of {', '.join(allowed)}")
    return chosen


def input_example(dataset, ion: str) -> pd.DataFrame:
    """Two rows of real CIFs of one test electrode: with its charged structure (mode a) and without (b)."""
    from pymatgen.io.cif import CifWriter

    from voltmodels.graphs.convert import parse_structure

    rows = dataset.split(ion, "random", 0)
    rows = rows[rows["id_charge"].isin(list(dataset.compact_structures))]
    row = rows.assign(order=rows["split"] != "test").sort_values(["order", "battery_id"]).iloc[0]  # a test row if any
    cif = {k: str(CifWriter(parse_structure(dataset.compact_structures[row[k]]))) for k in ("id_discharge", "id_charge")}
    return pd.DataFrame({"structure": [cif["id_discharge"]], "working_ion": [ion], "structure_charged": [cif["id_charge"]]})


@main_guard
def main(argv=None) -> str:
    from serving.potential_model import family_metadata, log_potential_model

    args = parse_args(argv)
    check_profile(args.profile)
    set_torch_threads()
    potentials = [p.strip() for p in args.potential.split(",") if p.strip()]
    for p in potentials:
        split_name(p)  # one clear sentence for an unknown potential, before any work
    families = _choices(args.families, FAMILIES, "family")
    strategies = SPLIT_STRATEGIES if args.split == "both" else _choices(args.split, SPLIT_STRATEGIES, "split")
    n_repeats = args.n_repeats or DEFAULT_REPEATS[args.profile]
    relax_settings = RelaxSettings(fmax=args.fmax, max_steps=args.max_steps)
    max_rows = args.max_rows_per_ion if args.max_rows_per_ion >= 0 else (QUICK_MAX_ROWS_PER_ION if args.profile == "quick" else 0)
    dataset = load_dataset(args.dataset).subsample(max_rows, args.seed)
    params = {"max_rows_per_ion": max_rows, "dataset": args.dataset, "potential": args.potential, "families": ",".join(families), "profile": args.profile, "n_repeats": n_repeats, "split": args.split, "seed": args.seed}
    with step_run(STEP, params) as run:
        mlflow.set_tags({"dataset_digest": dataset.digest, "feature_set": bl.feature_set_key()})
        mlflow.log_input(mlflow.data.from_pandas(dataset.table, targets="average_voltage", name=f"mp-electrodes-{dataset.digest}", digest=dataset.digest), context="training")
        started = time.perf_counter()
        features = bl.dataset_features(dataset)
        mlflow.log_metric("featurize_seconds", time.perf_counter() - started)
        all_records = []
        for potential in potentials:
            tag = potential_tag(potential)
            started = time.perf_counter()
            inputs = DatasetInputs(dataset, potential, "a", relax_settings=relax_settings, n_workers=args.n_workers or os.cpu_count())
            n_missing = int((~np.isfinite(inputs.inputs.v_uip)).sum())
            mlflow.log_metrics({f"{tag}_energies_seconds": time.perf_counter() - started, f"{tag}_rows_without_voltage": n_missing})
            print(f"[uip] {potential}: zero-shot voltages for {len(inputs.position) - n_missing} of {len(inputs.position)} electrodes")
            records, predictions, final = evaluate(dataset, inputs, features, families, strategies, n_repeats, seed=args.seed, n_jobs=args.n_workers or os.cpu_count())
            records.insert(0, "potential", potential)
            all_records.append(records)
            with tempfile.TemporaryDirectory() as tmp:
                records.to_csv(Path(tmp) / f"{tag}_repeats.csv", index=False)
                predictions.to_csv(Path(tmp) / f"{tag}_predictions_repeat0.csv", index=False)
                mlflow.log_artifacts(tmp, "results")
            summary = bl.summarize(records)
            for row in summary.itertuples():
                prefix = "" if row.split == "random" else f"{row.split}_"
                mlflow.log_metric(f"{prefix}{tag}_{row.method}_{row.ion}_test_mae_mean", float(row.mae_mean))
            if args.register == "true":
                n_rows = args.mode_b_rows if args.mode_b_rows >= 0 else MODE_B_ROWS[args.profile]
                started = time.perf_counter()
                used = calibrate_mode_b(final, dataset, inputs, features, n_rows, relax_settings, args.seed, args.n_workers or os.cpu_count())
                mlflow.log_metrics({f"{tag}_mode_b_calibration_rows": used, f"{tag}_mode_b_calibration_seconds": time.perf_counter() - started,
                                    **{f"{tag}_{family}_mode_b_interval_scale": model.mode_b_scale for family, model in final.items()}})
                print(f"[uip] {potential}: mode (b) interval scale from {used} validation electrodes: " + ", ".join(f"{f} {m.mode_b_scale:.2f}" for f, m in final.items()))
                _register(dataset, potential, tag, final, records, relax_settings, inputs, run.info.run_id, args.profile, log_potential_model, family_metadata)
        records = pd.concat(all_records, ignore_index=True)
        table = comparison_table(records)
        with tempfile.TemporaryDirectory() as tmp:
            table.to_csv(Path(tmp) / "comparison.csv", index=False)
            mlflow.log_artifact(str(Path(tmp) / "comparison.csv"))
        print(table.to_string(index=False))
        print(f"uip run {run.info.run_id}")
    return run.info.run_id


def comparison_table(records: pd.DataFrame) -> pd.DataFrame:
    """Per (split, potential, family, ion): test MAE mean ± std over repeats and interval coverage."""
    rows = []
    for (split, potential, method, ion), group in records.groupby(["split", "potential", "method", "ion"], sort=False):
        rows.append({"split": split, "potential": potential, "family": method, "ion": ion, "n_repeats": len(group), "test_mae_mean": round(group["test_mae"].mean(), 4), "test_mae_std": round(bl.repeat_std(group["test_mae"]), 4), "coverage": round(group["test_coverage"].mean(), 3), "n_test": int(group["n_test"].iloc[0])})
    return pd.DataFrame(rows)


def _register(dataset, potential, tag, final, records, relax_settings, inputs, run_id, profile, log_potential_model, family_metadata):
    ions = dataset.ions
    for family, model in final.items():
        ion = ions[0]
        meta = family_metadata(model, potential=potential, registered_name=f"voltage-{family}-{tag}", ions=ions, relax_settings=relax_settings, embedding_dims=inputs.inputs.embedding_dims, metrics={})
        example = pd.concat([input_example(dataset, i) for i in ("Li", "Mg") if i in ions] or [input_example(dataset, ion)], ignore_index=True)
        info = log_potential_model(model, meta, example, name=f"{family}-{tag}")
        repeat0 = records[(records["split"] == "random") & (records["repeat"] == 0) & (records["method"] == family)].set_index("ion")
        for ion in ions:
            if ion not in repeat0.index or not np.isfinite(repeat0.loc[ion].get("val_mae", np.nan)):
                continue
            r = records[(records["split"] == "random") & (records["method"] == family) & (records["ion"] == ion)]
            tags = {
                "method": family,
                "family": family,
                "potential": potential,
                "potential_key": potential_key(potential),
                "ion": ion,
                "dataset_digest": dataset.digest,
                "selection_rule": DEFAULT_SELECTION_RULE,
                "profile": profile,
                "test_mae": f"{repeat0.loc[ion, 'test_mae']:.6f}",
                "test_interval_coverage": f"{repeat0.loc[ion, 'test_coverage']:.4f}",
                "test_mae_mean": f"{r['test_mae'].mean():.6f}",
                "n_repeats": len(r),
                "source_run_id": run_id,
            }
            version, champion = register(info.model_uri, potential_name(ion), float(repeat0.loc[ion, "val_mae"]), tags, description=f"{family} with {potential} for {ion}")
            print(f"registered {potential_name(ion)} version {version} ({family}, {potential}, val MAE {repeat0.loc[ion, 'val_mae']:.3f} V){' -> @champion' if champion else ''}")


if __name__ == "__main__":
    main()
