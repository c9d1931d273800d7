"""Model registry conventions: registered-model names and the `champion` alias (no MLflow here; the
registry rules that talk to MLflow are in :mod:`voltmodels.tracking`)."""

from __future__ import annotations

CHAMPION = "champion"
ROUTER_NAME = "voltage-predictor"


def cgcnn_name(ion: str) -> str:
    return f"voltage-cgcnn-{ion}"


def baseline_name(kind: str, ion: str) -> str:
    return f"voltage-{kind}-{ion}"


def potential_name(ion: str) -> str:
    """Every universal-potential family of one ion competes under this name (the family is a tag)."""
    return f"voltage-uip-{ion}"


_MOVED_TO_TRACKING = ("champion_version", "register", "resolve_model_uri", "next_version")


def __getattr__(name: str):
    # Kept importable for callers not yet updated (pipelines/uip.py, serving/screening.py): import these
    # from voltmodels.tracking; this hook goes when they do.
    if name in _MOVED_TO_TRACKING:
        from voltmodels import tracking

        return getattr(tracking, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
