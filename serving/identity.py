"""Which model answered: the LoggedModel id from the model's own MLmodel file, and its registered
version read from the registry when the model is loaded (never a version guessed before registration)."""

from __future__ import annotations

from pathlib import Path


def logged_model_id(model_dir: str | Path) -> str:
    from mlflow.models import Model

    try:
        return Model.load(str(Path(model_dir) / "MLmodel")).model_id or ""
    except Exception:  # a folder without an MLmodel (a bare checkpoint): no id to report
        return ""


def registered_version(registered_name: str, model_id: str) -> str:
    """The version of `registered_name` made from LoggedModel `model_id`; "" when the model is not
    registered or no registry is reachable from the serving process."""
    if not (registered_name and model_id):
        return ""
    try:
        from mlflow.tracking import MlflowClient

        versions = MlflowClient().search_model_versions(f"name='{registered_name}'")
    except Exception:  # served without a registry: the id still names the model
        return ""
    # A version registered from a LoggedModel has source models:/<model id> (its model_id field may be empty).
    return next((str(v.version) for v in versions if getattr(v, "model_id", None) == model_id or v.source == f"models:/{model_id}"), "")


def model_dir_of(artifact_path: str | Path) -> Path:
    """The model folder of one of its pyfunc artifacts (<model>/artifacts/<file>)."""
    return Path(artifact_path).resolve().parents[1]


def served_identity(context, artifact: str) -> tuple[str, str, str]:
    """(registered name, version, LoggedModel id) of the pyfunc loading `context`, located by one of its artifacts."""
    model_id = logged_model_id(model_dir_of(context.artifacts[artifact]))
    name = (context.model_config or {}).get("model_name") or ""
    return name, registered_version(name, model_id), model_id
