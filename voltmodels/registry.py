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
