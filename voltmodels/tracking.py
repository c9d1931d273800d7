"""Lookups in the MLflow tracking store shared by the steps (imported lazily: the training library
itself never needs MLflow)."""

from __future__ import annotations


def finished_runs(filter_string: str, max_results: int | None = None) -> list:
    """Finished runs of every experiment matching `filter_string`, newest first."""
    import mlflow

    kwargs = {"max_results": max_results} if max_results else {}
    return mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"{filter_string} and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
        **kwargs,
    )
