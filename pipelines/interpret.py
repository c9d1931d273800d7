"""Entry point `interpret`: element and local-environment maps and local voltages of a registered CGCNN
(Zhang et al. 2022, Fig. 3), with the random-forest Gini importances of the ion's baselines run beside them.

Logs, in one run tagged `ion`, `dataset_digest`, `model_uri`:
    element_map.png / element_map.csv              Fig. 3a: PCA of the embedding vectors; PCs vs covalent radius
    local_env_pca.png, local_env_tsne.png          Fig. 3b, Suppl. Fig. 3: oxygen environments coloured by local voltage
    local_voltage_periodic_table.png / local_voltage_by_element.csv   Fig. 3c: median local voltage per element
    oxygen_environments.csv.gz                     every oxygen environment: structure, site, element, local voltage, PCs
    rfr_gini_top20.png / .csv (+ by property)      copied from the latest baselines run of the ion, when there is one
    interpretation.json                            the summary of all of the above
and metrics pc1_covalent_radius_r, pc2_covalent_radius_r, n_oxygen_environments, local_head_fidelity_mae, ...
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from pipelines.common import as_int, main_guard, step_run
from voltmodels import interpretation as interp
from voltmodels import plots, registry
from voltmodels.config import VoltmodelsError, set_torch_threads
from voltmodels.data.dataset import load_dataset
from voltmodels.featurized import dataset_graphs
from voltmodels.tracking import finished_runs, load_cgcnn, registered_version

STEP = "interpret"
GINI_TOP = "importance/rfr_gini_top20.csv"
GINI_ALL = "importance/rfr_gini_all.csv"
GINI_BY_PROPERTY = "importance/rfr_gini_by_property.csv"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ion", default="Li", help="working ion whose electrodes are analysed")
    p.add_argument("--model", default="", help="model URI; empty: models:/voltage-cgcnn-<ion>@champion")
    p.add_argument("--dataset", default="latest", help="curate run id, dataset folder or 'latest'")
    p.add_argument("--max-structures", type=as_int, default=0, help="analyse a random subset of this many structures; 0: all")
    p.add_argument("--seed", type=as_int, default=0)
    p.add_argument("--upstream", default="", help="run ids of the steps that registered the model (recorded; main's reuse key)")
    p.add_argument("--tsne-points", type=as_int, default=3000, help="oxygen environments sampled for t-SNE; 0: skip t-SNE")
    p.add_argument("--bond-tolerance", type=float, default=interp.DEFAULT_BOND_TOLERANCE, help="oxygen neighbour: d <= tolerance x (r_cov + r_cov(O))")
    args = p.parse_args(argv)
    if args.max_structures < 0 or args.tsne_points < 0:
        raise VoltmodelsError("--max-structures and --tsne-points must be >= 0.")
    if args.bond_tolerance <= 0:
        raise VoltmodelsError("--bond-tolerance must be positive.")
    return args


def model_version_info(uri: str) -> dict:
    """Version, run and dataset digest of a `models:/name@alias` or `models:/name/version` URI, when known."""
    try:
        version = registered_version(uri)
    except Exception:  # a store without versions: just less metadata
        return {}
    if version is None:  # a URI form other than models:/name@alias or models:/name/version
        return {}
    return {"name": version.name, "version": str(version.version), "run_id": version.run_id, **{k: version.tags[k] for k in ("ion", "method", "dataset_digest") if k in version.tags}}


def find_gini_importances(ion: str, digest: str) -> tuple[dict, pd.DataFrame | None, pd.DataFrame | None]:
    """The random-forest Gini tables of the latest finished run tagged with this ion (this dataset first).

    Returns (info for the summary, top-20 table or None, per-property table or None).
    """
    base = f"tags.ion = '{ion}'"
    for filter_string, same_dataset in ((f"{base} and tags.dataset_digest = '{digest}'", True), (base, False)):
        runs = finished_runs(filter_string)
        for run in runs:
            names = {f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, "importance")}
            path = GINI_TOP if GINI_TOP in names else GINI_ALL if GINI_ALL in names else None
            if path is None:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                top = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=path, dst_path=tmp)).head(20)
                by_property = None
                if GINI_BY_PROPERTY in names:
                    by_property = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=GINI_BY_PROPERTY, dst_path=tmp))
            info = {"found": True, "run_id": run.info.run_id, "dataset_digest": run.data.tags.get("dataset_digest"), "same_dataset": same_dataset, "artifact": path}
            return info, top, by_property
    note = f"no finished run tagged ion={ion} has {GINI_TOP}; run `mlflow run . -e baselines -P ion={ion}` to add the random-forest Gini importances"
    return {"found": False, "note": note}, None, None


def _plain(value):
    """json.dumps fallback for numpy scalars and arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _log_figure(fig, path: str) -> None:
    mlflow.log_figure(fig, path)
    plots.close(fig)


def interpret(args) -> dict:
    """The whole analysis inside the active run; returns the summary logged as interpretation.json."""
    started = time.perf_counter()
    uri = args.model or f"models:/{registry.cgcnn_name(args.ion)}@{registry.CHAMPION}"
    dataset = load_dataset(args.dataset)
    rows = dataset.rows(args.ion)  # one clear sentence for an ion the dataset lacks
    model, settings = load_cgcnn(uri)
    version = model_version_info(uri)
    mlflow.set_tags({"ion": args.ion, "dataset_digest": dataset.digest, "model_uri": uri, **({"model_version": version["version"]} if "version" in version else {})})

    graphs, errors = dataset_graphs(dataset, args.ion, settings, progress=False)
    ids = sorted(graphs)
    if args.max_structures and len(ids) > args.max_structures:
        ids = sorted(np.random.default_rng(args.seed).choice(ids, args.max_structures, replace=False).tolist())
    graphs = {i: graphs[i] for i in ids}
    if len(graphs) < 2:
        raise VoltmodelsError(f"Working ion {args.ion} has {len(graphs)} featurizable structures in dataset {dataset.digest}; interpretation needs at least two.")
    ion_label = f"{args.ion} ({uri.removeprefix('models:/')}, {len(graphs)} structures)"
    metrics: dict[str, float] = {"n_structures": len(graphs), "n_graph_errors": len(errors)}
    summary: dict = {
        "ion": args.ion,
        "model_uri": uri,
        "model_version": version,
        "dataset_digest": dataset.digest,
        "n_electrodes": len(rows),
        "n_structures": len(graphs),
        "max_structures": args.max_structures,
        "seed": args.seed,
    }
    if version.get("dataset_digest") and version["dataset_digest"] != dataset.digest:
        summary["warning"] = f"the model was trained on dataset {version['dataset_digest']}, analysed here on {dataset.digest}"

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        # -- Fig. 3a: element representations -----------------------------------------------------
        present = np.unique(np.concatenate([g.atomic_numbers for g in graphs.values()]))
        emap = interp.element_map(model, present, seed=args.seed)
        r = emap.pc_radius_r
        metrics.update({k: v for k, v in r.items() if np.isfinite(v)})
        metrics.update({"n_elements": len(emap.table), "element_pc1_variance": float(emap.explained_variance[0]), "element_pc2_variance": float(emap.explained_variance[1])})
        emap.table.to_csv(out / "element_map.csv", index=False, float_format="%.6g")
        _log_figure(interp.element_map_figure(emap, f"Element representations after the embedding layer, PCA:\n{ion_label}"), "element_map.png")
        summary["element_map"] = {
            "n_elements": len(emap.table),
            "explained_variance": emap.explained_variance.round(4).tolist(),
            **{k: round(v, 4) for k, v in r.items()},
            "abs_r_note": "the sign of a principal component is arbitrary; compare |r|",
            "elements": emap.table["element"].tolist(),
        }

        # -- local environments and local voltages -------------------------------------------------
        env = interp.atom_environments(model, graphs, settings, bond_tolerance=args.bond_tolerance)
        loose = sum(int(interp.oxygen_environment_mask(g, None).sum()) for g in graphs.values())
        oxygen = env.oxygen_atoms
        fidelity = interp.local_head_fidelity(env.crystals)
        metrics.update(
            {
                "n_atoms": len(env.atoms),
                "n_oxygen_environments": env.n_oxygen_environments,
                "n_oxygen_environments_any_graph_neighbour": loose,
                "local_head_fidelity_mae": fidelity,
                "local_voltage_median": float(env.atoms["local_voltage"].median()),
            }
        )
        summary["oxygen_environments"] = {
            "definition": interp.OXYGEN_ENVIRONMENT_DEFINITION.format(min_oxygen=env.min_oxygen, tolerance=args.bond_tolerance),
            "count": env.n_oxygen_environments,
            "count_any_graph_neighbour": loose,
            "paper_count_full_dataset": 23022,
            "n_atoms": len(env.atoms),
        }
        summary["local_voltages"] = {
            "source": "model.local_voltages (paper Eq. 2 head, the one the serving pyfunc returns)",
            "fidelity_mae_mean_local_vs_prediction": round(fidelity, 5),
        }
        if env.n_oxygen_environments >= 2:
            coords, ratio = interp.pca_2d(env.vectors, seed=args.seed)
            oxygen = oxygen.assign(pc1=coords[:, 0], pc2=coords[:, 1])
            volts = oxygen["local_voltage"].to_numpy()
            env_r = {"env_pc1_local_voltage_r": interp.pearson(coords[:, 0], volts), "env_pc2_local_voltage_r": interp.pearson(coords[:, 1], volts)}
            metrics.update({k: v for k, v in env_r.items() if np.isfinite(v)})
            metrics.update({"env_pc1_variance": float(ratio[0]), "env_pc2_variance": float(ratio[1])})
            _log_figure(
                interp.environment_figure(coords, volts, oxygen["element"], f"Oxygen environments after the last convolution, PCA:\n{ion_label}",
                                          (f"Dimension 1 (PC1, {ratio[0]:.0%})", f"Dimension 2 (PC2, {ratio[1]:.0%})")),
                "local_env_pca.png",
            )
            summary["local_environment_pca"] = {"explained_variance": ratio.round(4).tolist(), **{k: round(v, 4) for k, v in env_r.items()}}
            if args.tsne_points and env.n_oxygen_environments >= 5:
                t0 = time.perf_counter()
                embedded, index = interp.tsne_2d(env.vectors, max_points=args.tsne_points, seed=args.seed)
                tsne_seconds = time.perf_counter() - t0
                oxygen.loc[index, "tsne1"], oxygen.loc[index, "tsne2"] = embedded[:, 0], embedded[:, 1]
                _log_figure(
                    interp.environment_figure(embedded, volts[index], oxygen["element"].to_numpy()[index],
                                              f"Oxygen environments after the last convolution, t-SNE of {len(index)} of {env.n_oxygen_environments}:\n{ion_label}", ("t-SNE 1", "t-SNE 2")),
                    "local_env_tsne.png",
                )
                metrics.update({"tsne_points": len(index), "tsne_seconds": tsne_seconds})
                summary["local_environment_tsne"] = {"points": len(index), "seconds": round(tsne_seconds, 1)}
        oxygen.to_csv(out / "oxygen_environments.csv.gz", index=False, float_format="%.5g")

        medians = interp.median_local_voltages(oxygen)
        medians.to_csv(out / "local_voltage_by_element.csv", index=False, float_format="%.5g")
        if len(medians):
            _log_figure(
                interp.periodic_table_figure(medians, f"Median local voltage (Eq. 2) of the atoms in oxygen environments: {ion_label}"),
                "local_voltage_periodic_table.png",
            )
        summary["local_voltages"]["median_by_element"] = {row.element: round(float(row.median), 3) for row in medians.itertuples()}
        summary["local_voltages"]["n_by_element"] = {row.element: int(row.n) for row in medians.itertuples()}

        # -- random-forest Gini importances beside them ----------------------------------------------
        gini_info, top, by_property = find_gini_importances(args.ion, dataset.digest)
        if top is not None:
            top.to_csv(out / "rfr_gini_top20.csv", index=False)
            if by_property is not None:
                by_property.to_csv(out / "rfr_gini_by_property.csv", index=False)
                gini_info["top_properties"] = {str(r.property): round(float(r.importance), 4) for r in by_property.head(5).itertuples()}
            gini_info["top20"] = top[["feature", "importance"]].assign(importance=top["importance"].round(4)).to_dict("records")
            _log_figure(interp.importance_figure(top, f"{args.ion}: random-forest Gini importances (top 20, run {gini_info['run_id'][:8]})"), "rfr_gini_top20.png")
        summary["rfr_gini_importances"] = gini_info
        mlflow.set_tag("rfr_gini_importances", "found" if top is not None else "absent")

        metrics["interpret_seconds"] = time.perf_counter() - started
        summary["metrics"] = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items()}
        mlflow.log_artifacts(tmp)
    mlflow.log_metrics(metrics)
    summary = json.loads(json.dumps(summary, default=_plain))
    mlflow.log_dict(summary, "interpretation.json")
    return summary


@main_guard
def main(argv=None) -> str:
    args = parse_args(argv)
    set_torch_threads()
    with step_run(STEP, vars(args)) as run:
        summary = interpret(args)
        m = summary["metrics"]
        print(
            f"interpret {args.ion}: {m['n_elements']} elements, PC1/PC2 vs covalent radius r = "
            f"{m.get('pc1_covalent_radius_r', float('nan')):+.3f} / {m.get('pc2_covalent_radius_r', float('nan')):+.3f}; "
            f"{m['n_oxygen_environments']} oxygen environments in {m['n_structures']} structures; "
            f"local-head fidelity MAE {m['local_head_fidelity_mae']:.3f} V; Gini importances "
            f"{'from run ' + summary['rfr_gini_importances']['run_id'] if summary['rfr_gini_importances']['found'] else 'absent'}"
        )
        print(f"interpret run {run.info.run_id}")
    return run.info.run_id


if __name__ == "__main__":
    main()
