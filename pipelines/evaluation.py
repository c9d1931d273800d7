"""Evaluate a trained CGCNN, log its plots and pyfunc, register it: shared by train_li and transfer."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from serving.cgcnn_model import log_cgcnn_model
from serving.packaging import example_request
from voltmodels import plots
from voltmodels import registry, tracking
from voltmodels.training import fit_local_head, predict
from voltmodels.metrics import cgcnn_interval, regression_metrics
from voltmodels.model import save_checkpoint


def input_example(dataset, rows: pd.DataFrame, ion: str, n: int = 2) -> pd.DataFrame:
    """The first `n` discharged structures of `rows`: the signature's example request."""
    return example_request([dataset.structures[m] for m in rows["id_discharge"].head(n)], ion)


def evaluate(model, sets, settings) -> tuple[dict, dict]:
    """Metrics per split (`<split>_mae`...) and (true, predicted) pairs for plots."""
    metrics, pairs = {}, {}
    for part, data in sets.items():
        if len(data) == 0:
            continue
        pred = predict(model, data, settings)
        pairs[part] = (data.targets, pred)
        metrics.update({f"{part}_{k}": v for k, v in regression_metrics(data.targets, pred).items()})
    return metrics, pairs


def log_final_model(
    model, ion, sets, settings, dataset, rows, register: bool = True, tags: dict | None = None, method: str = "cgcnn", metric_prefix: str = "",
    selection_val_mae: float | None = None,
) -> str | None:
    """Log metrics, parity plot and the pyfunc of `model`; register it as voltage-cgcnn-<ion>.

    `@champion` is decided on `selection_val_mae` when given (e.g. the method's validation MAE
    averaged over seeded splits: a 13-row validation set alone is too noisy), else this split's.
    """
    local_head_mae = fit_local_head(model, sets["train"], settings)
    metrics, pairs = evaluate(model, sets, settings)
    halfwidth, coverage = cgcnn_interval(pairs.get("calib"), pairs["test"])
    metrics.update({"conformal_halfwidth": halfwidth, "test_interval_coverage": coverage, "local_head_train_mae": local_head_mae})
    mlflow.log_metrics({metric_prefix + k: v for k, v in metrics.items()})
    fig = plots.parity_plot(pairs, f"{ion} {method}")
    mlflow.log_figure(fig, f"parity_{ion}_{method}.png")
    plots.close(fig)
    name = registry.cgcnn_name(ion)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "checkpoint.pt"
        save_checkpoint(model, checkpoint, settings.to_dict(), {"ion": ion, "conformal_halfwidth": halfwidth, "dataset_digest": dataset.digest, "method": method})
        info = log_cgcnn_model(str(checkpoint), f"cgcnn-{ion}-{method}", input_example(dataset, rows, ion), name)
    mlflow.log_metrics(metrics, model_id=info.model_id)
    if not register:
        return None
    version_tags = {
        "ion": ion,
        "method": method,
        "dataset_digest": dataset.digest,
        "test_mae": f"{metrics['test_mae']:.4f}",
        "test_interval_coverage": f"{coverage:.3f}",
        "run_id": mlflow.active_run().info.run_id,
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    selection = metrics["val_mae"] if selection_val_mae is None else selection_val_mae
    version_tags.setdefault("selection_rule", tracking.DEFAULT_SELECTION_RULE)
    version_tags["val_mae_this_split"] = f"{metrics['val_mae']:.4f}"
    version, promoted = tracking.register(info.model_uri, name, selection, version_tags)
    mlflow.set_tags({"registered_model": name, "registered_version": version, "became_champion": str(promoted).lower()})
    return version
