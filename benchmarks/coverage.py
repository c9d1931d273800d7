"""Test-split coverage of the 90 % conformal intervals, per ion, for the registered champions.

Usage: python benchmarks/coverage.py [--tracking-uri URI]

For every `voltage-cgcnn-<ion>@champion` (and the members the `voltage-predictor@champion` router serves,
if they differ) prints the empirical coverage of the split-conformal interval on the test split, its
half-width, the test MAE and the test-set size, with a 95 % binomial band around the nominal 0.90 so a
reader can tell a real miss from test-set noise. Values come from the version tags that
pipelines/evaluation.py writes, else the logged model's / run's metrics.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from voltmodels.tracking import results_run  # noqa: E402

NOMINAL = 0.90


def _metric(client, version, key: str):
    """A version tag, else the logged model's metric, else the run's metric (None if nowhere)."""
    if key in version.tags:
        try:
            return float(version.tags[key])
        except ValueError:
            pass
    model_id = getattr(version, "model_id", None)
    if model_id:
        try:
            for m in client.get_logged_model(model_id).metrics or []:
                if m.key == key:
                    return float(m.value)
        except Exception:  # older stores without logged models
            pass
    if version.run_id:
        try:
            metrics = client.get_run(version.run_id).data.metrics
        except Exception:
            return None
        if key in metrics:
            return float(metrics[key])
        suffixed = [v for k, v in metrics.items() if k.endswith("_" + key)]  # e.g. a prefixed transfer metric
        if len(suffixed) == 1:
            return float(suffixed[0])
    return None


def coverage_rows(client=None) -> list[dict]:
    """One dict per served (name, version): ion, coverage, half-width, test MAE, n_test, served_by_router."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from voltmodels import registry, tracking

    client = client or MlflowClient()
    prefix = registry.cgcnn_name("")
    wanted = {}
    for model in client.search_registered_models(filter_string=f"name LIKE '{prefix}%'", max_results=1000):
        version = tracking.champion_version(model.name)
        if version is not None:
            wanted[(model.name, str(version.version))] = {"alias": "champion"}
    router = tracking.champion_version(registry.ROUTER_NAME)
    if router is not None:
        for key, value in router.tags.items():
            if key.startswith("member_") and ":" in value:
                name, number = value.rsplit(":", 1)
                wanted.setdefault((name, number), {"alias": ""})["router"] = f"v{router.version}"
    rows = []
    for (name, number), info in sorted(wanted.items()):
        try:
            version = client.get_model_version(name, number)
        except MlflowException:
            continue
        n_test = _metric(client, version, "n_test")
        coverage = _metric(client, version, "test_interval_coverage")
        band = 1.96 * math.sqrt(NOMINAL * (1 - NOMINAL) / n_test) if n_test else None
        rows.append(
            {
                "ion": name[len(prefix) :],
                "model": f"{name} v{number}",
                "champion": info.get("alias") == "champion",
                "router": info.get("router", ""),
                "method": version.tags.get("method", ""),
                "test_interval_coverage": coverage,
                "conformal_halfwidth": _metric(client, version, "conformal_halfwidth"),
                "test_mae": _metric(client, version, "test_mae"),
                "n_test": int(n_test) if n_test else None,
                "nominal_band": band,
            }
        )
    return rows


def format_rows(rows: list[dict]) -> str:
    def f(value, fmt):
        return "-" if value is None else format(value, fmt)

    lines = [
        "| ion | model | champion | in router | method | test coverage | nominal 0.90 +- 95 % band | half-width (V) | test MAE (V) | n_test |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        band = f"{NOMINAL - r['nominal_band']:.3f}-{min(1.0, NOMINAL + r['nominal_band']):.3f}" if r["nominal_band"] else "-"
        flag = ""
        if r["test_interval_coverage"] is not None and r["nominal_band"]:
            flag = " (low)" if r["test_interval_coverage"] < NOMINAL - r["nominal_band"] else ""
        lines.append(
            f"| {r['ion']} | {r['model']} | {'yes' if r['champion'] else 'no'} | {r['router'] or '-'} | {r['method'] or '-'} | "
            f"{f(r['test_interval_coverage'], '.3f')}{flag} | {band} | {f(r['conformal_halfwidth'], '.3f')} | {f(r['test_mae'], '.3f')} | {f(r['n_test'], 'd')} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    import mlflow

    from voltmodels.config import default_tracking_uri

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or the project's mlflow.db")
    args = parser.parse_args(argv)
    mlflow.set_tracking_uri(args.tracking_uri or default_tracking_uri())
    rows = coverage_rows()
    print(f"Interval coverage on the test split ({mlflow.get_tracking_uri()})")
    print(format_rows(rows) if rows else "no voltage-cgcnn-<ion>@champion registered")


if __name__ == "__main__":
    with results_run("coverage"):
        main()
