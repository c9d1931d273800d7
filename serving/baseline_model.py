"""The conventional-ML baselines (SVR, KRR, RFR) as MLflow pyfunc models.

Same request as the CGCNN pyfunc: a DataFrame with `structure` (CIF text or pymatgen Structure JSON)
and `working_ion`, validated by :func:`serving.inputs.parse_rows`. The model featurizes each structure
with :func:`voltmodels.baselines.featurize_structures` -- the code that built the training features --
and returns a DataFrame with `voltage` (V) and `model_name`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from serving.model_code import model_code
from serving.packaging import PACKAGE_DIRS, example_request, pinned

PIPELINE_ARTIFACT = "pipeline"
META_ARTIFACT = "meta"
#: Packages the served model imports (directly or through voltmodels.baselines / serving.inputs).
REQUIREMENTS = ("mlflow", "scikit-learn", "skops", "matminer", "pymatgen", "pandas", "numpy", "scipy")


class BaselineVoltageModel(mlflow.pyfunc.PythonModel):
    """A fitted sklearn Pipeline over matminer features of one working ion."""

    def load_context(self, context) -> None:
        from serving.packaging import load_estimator
        from voltmodels.baselines import FEATURE_VERSION, feature_names, feature_set_key

        self.pipeline = load_estimator(context.artifacts[PIPELINE_ARTIFACT])
        self.meta = json.loads(Path(context.artifacts[META_ARTIFACT]).read_text())
        if self.meta["feature_version"] != FEATURE_VERSION or self.meta["feature_names"] != feature_names():
            raise mlflow.exceptions.MlflowException(
                f"Model {self.meta['model_name']} was trained on baseline feature set {self.meta['feature_set_key']}, "
                f"but the bundled voltmodels computes {feature_set_key()}; re-log the model with this code."
            )
        self.ion = self.meta["ion"]
        self.model_name = self.meta["model_name"]

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from serving.inputs import predict_rows

        return predict_rows(self._predict, model_input, params, ("voltage", "model_name"))

    def _predict(self, model_input: pd.DataFrame) -> pd.DataFrame:
        from serving.inputs import parse_rows
        from voltmodels.baselines import featurize_structures

        rows = parse_rows(model_input, [self.ion])
        features = featurize_structures([structure for structure, _ in rows])
        voltage = np.asarray(self.pipeline.predict(features), dtype=np.float64)
        return pd.DataFrame({"voltage": voltage, "model_name": [self.model_name] * len(voltage)})


def pip_requirements() -> list[str]:
    return pinned(REQUIREMENTS)


def log_baseline_model(pipeline, *, method: str, ion: str, model_name: str, example_structure, hyperparameters: dict, name: str | None = None):
    """Log a fitted baseline pipeline as a pyfunc model in the active run; returns MLflow's ModelInfo."""
    from mlflow.models import infer_signature

    from serving.packaging import save_estimator

    from voltmodels.baselines import FEATURE_VERSION, feature_names, feature_set_key

    example = example_request([example_structure], ion)
    meta = {
        "method": method,
        "ion": ion,
        "model_name": model_name,
        "feature_version": FEATURE_VERSION,
        "feature_set_key": feature_set_key(),
        "feature_names": feature_names(),
        "hyperparameters": hyperparameters,
    }
    with tempfile.TemporaryDirectory() as tmp:
        pipeline_path = save_estimator(pipeline, Path(tmp) / "pipeline.skops")
        meta_path = Path(tmp) / "meta.json"
        meta_path.write_text(json.dumps(meta, indent=2))
        artifacts = {PIPELINE_ARTIFACT: str(pipeline_path), META_ARTIFACT: str(meta_path)}
        # The example output comes from the real model, so the signature matches what serving returns.
        from voltmodels.baselines import featurize_structures

        example_output = pd.DataFrame(
            {"voltage": pipeline.predict(featurize_structures([example_structure])).astype(np.float64), "model_name": [model_name]}
        )
        return mlflow.pyfunc.log_model(
            name=name or method,
            python_model=model_code("baseline"),
            artifacts=artifacts,
            code_paths=PACKAGE_DIRS,
            pip_requirements=pip_requirements(),
            signature=infer_signature(example, example_output, params={"on_error": "raise"}),
            input_example=example,
        )
