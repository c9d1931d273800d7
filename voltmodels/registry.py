"""Model registry conventions: names, the `champion` alias, metrics shown on each version."""

from __future__ import annotations

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from voltmodels.config import VoltmodelsError

CHAMPION = "champion"
ROUTER_NAME = "voltage-predictor"


def cgcnn_name(ion: str) -> str:
    return f"voltage-cgcnn-{ion}"


def baseline_name(kind: str, ion: str) -> str:
    return f"voltage-{kind}-{ion}"


def potential_name(ion: str) -> str:
    """Every universal-potential family of one ion competes under this name (the family is a tag)."""
    return f"voltage-uip-{ion}"


def champion_version(name: str):
    """The version behind `name@champion`, or None when the model or alias does not exist yet."""
    try:
        return MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def register(model_uri: str, name: str, val_mae: float, tags: dict, description: str = "") -> tuple[str, bool]:
    """Register a version; move `@champion` to it only if its validation MAE beats the champion's.

    Returns (version, became_champion). Metrics go into version tags so the registry UI lists them.
    """
    client = MlflowClient()
    current = champion_version(name)
    version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    if description:
        client.update_model_version(name, version.version, description=description)
    client.set_model_version_tag(name, version.version, "val_mae", f"{val_mae:.6f}")
    current_mae = float(current.tags.get("val_mae", "inf")) if current is not None else float("inf")
    # Validation MAEs are comparable only on the same curated data: a champion of another dataset
    # digest is replaced, not compared.
    comparable = current is None or current.tags.get("dataset_digest") == str(tags.get("dataset_digest", current.tags.get("dataset_digest")))
    promote = val_mae < current_mae or not comparable
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version.version)
    client.set_model_version_tag(name, version.version, "champion_at_registration", str(promote).lower())
    return version.version, promote


def resolve_model_uri(uri: str) -> str:
    """Check that a `models:/...` URI exists; raise one clear sentence otherwise."""
    if uri.startswith("models:/") and "@" in uri:
        name, alias = uri[len("models:/") :].split("@", 1)
        try:
            MlflowClient().get_model_version_by_alias(name, alias)
        except MlflowException:
            raise VoltmodelsError(f"Model {uri} does not exist in the registry at {mlflow.get_tracking_uri()}; train it first (e.g. mlflow run . -e train_li).") from None
    return uri


def next_version(name: str) -> str:
    """The version number the next registration of `name` will get (served models report it)."""
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return "1"
    return str(max((int(v.version) for v in versions), default=0) + 1)
