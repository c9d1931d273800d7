"""Models from code: each file builds one pyfunc with `mlflow.models.set_model`; `log_model` stores the
file, not a pickled object, so loading a model runs only this reviewed code (and the bundled packages)."""

from pathlib import Path


def model_code(kind: str) -> str:
    """The path of the models-from-code file of a pyfunc kind: cgcnn, potential, router, baseline."""
    path = Path(__file__).resolve().parent / f"{kind}.py"
    if not path.is_file():
        raise ValueError(f"no models-from-code file for {kind!r}")
    return str(path)
