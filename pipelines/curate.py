"""Entry point `curate`: raw electrodes (snapshot or MP) -> versioned curated dataset."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import mlflow

from pipelines.common import as_int, main_guard, step_run
from voltmodels.config import SUPPORTED_IONS, VoltmodelsError, parse_ions
from voltmodels.data.curation import CurationParams, curate
from voltmodels.data.dataset import ARTIFACT_PATH, CURATE_STEP, save_dataset
from voltmodels.data.sources import load_from_mp, load_snapshot

#: What Zhang et al. kept of the full (100 %) data set, for side-by-side reporting.
PAPER_KEPT = {"Li": 2190, "Mg": 387, "Ca": 471, "Zn": 378, "Al": 149, "Na": 287, "K": 125}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--source", choices=["snapshot", "mp"], default="snapshot")
    p.add_argument("--snapshot", default="", help="snapshot folder (default: $VOLTMODELS_SNAPSHOT)")
    p.add_argument("--ions", default="all", help="comma-separated working ions, or 'all'")
    p.add_argument("--seed", type=as_int, default=0)
    p.add_argument("--max-voltage-disagreement", type=float, default=CurationParams.max_voltage_disagreement)
    p.add_argument("--outlier-mad-z", type=float, default=CurationParams.outlier_mad_z)
    p.add_argument("--duplicate-tolerance", type=float, default=CurationParams.duplicate_tolerance)
    return p.parse_args(argv)


def checked_ions(value: str) -> tuple[str, ...]:
    ions = tuple(parse_ions(value))
    unknown = [i for i in ions if i not in SUPPORTED_IONS]
    if unknown:
        raise VoltmodelsError(f"Unknown working ion(s) {', '.join(unknown)}; supported: {', '.join(SUPPORTED_IONS)}.")
    return ions


@main_guard
def main(argv=None) -> str:
    args = parse_args(argv)
    ions = checked_ions(args.ions)
    params = CurationParams(
        max_voltage_disagreement=args.max_voltage_disagreement,
        duplicate_tolerance=args.duplicate_tolerance,
        outlier_mad_z=args.outlier_mad_z,
        seed=args.seed,
        ions=ions,
    )
    started = time.perf_counter()
    raw = load_snapshot(args.snapshot or None) if args.source == "snapshot" else load_from_mp(ions)
    result = curate(raw, params)
    with step_run(CURATE_STEP, {"source": raw.source, **params.to_dict()}) as run:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / ARTIFACT_PATH
            digest = save_dataset(result, folder, raw.source)
            mlflow.log_artifacts(str(folder), ARTIFACT_PATH)
        source = mlflow.get_artifact_uri(f"{ARTIFACT_PATH}/electrodes.csv")
        if source.startswith("mlflow-artifacts:"):
            # A server proxying artifacts (--serve-artifacts): no dataset-source resolver knows this
            # scheme, so record the server's HTTP URL of the file instead.
            # No public MLflow API turns an mlflow-artifacts:/ URI into the server's HTTP URL; this static method is MLflow's own rule.
            from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

            source = MlflowArtifactsRepository.resolve_uri(source, mlflow.get_tracking_uri())
        dataset = mlflow.data.from_pandas(
            result.table, source=source, targets="average_voltage", name=f"mp-electrodes-{digest}", digest=digest
        )
        mlflow.log_input(dataset, context="curated")
        mlflow.set_tag("dataset_digest", digest)
        metrics = {}
        for ion, row in result.counts.iterrows():
            for stage, value in row.items():
                metrics[f"count_{ion}_{stage}"] = int(value)
        mlflow.log_metrics(metrics)
        report = result.counts[["raw", "voltage_outlier"]].rename(columns={"voltage_outlier": "kept"})
        report["paper_kept_full_set"] = [PAPER_KEPT.get(ion) for ion in report.index]
        mlflow.log_table(report.reset_index(), "counts_vs_paper.json")
        mlflow.log_metric("curate_seconds", time.perf_counter() - started)
        print(report.to_string())
        print(f"dropped {len(result.dropped)} rows by rule: {result.dropped['rule'].value_counts().to_dict()}")
        print(f"curated dataset digest {digest}, run {run.info.run_id}")
    return run.info.run_id


if __name__ == "__main__":
    main()
