"""The CGCNN pyfunc: structure in, voltage (with a 90 % interval) out; featurizes with the training code."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd

from serving.inputs import invalid, parse_rows, predict_rows
from serving.limits import DEFAULT_LIMITS, Limits
from serving.model_code import model_code
from serving.packaging import PACKAGE_DIRS, pinned  # noqa: F401 (PACKAGE_DIRS: re-exported for serving/router.py)
from voltmodels.graphs.convert import structure_to_graph
from voltmodels.graphs.graph import GraphSettings
from voltmodels.config import VoltmodelsError

#: Packages the served CGCNN imports (directly or through voltmodels / serving.inputs).
REQUIREMENTS = ("mlflow", "torch", "pymatgen", "scikit-learn", "pandas", "numpy", "tqdm")


def pip_requirements() -> list[str]:
    return pinned(REQUIREMENTS)


def graphs_for_rows(structures, settings, rows=None):
    """Graphs for validated structures, or one error naming every row that cannot be featurized.

    `settings`: one GraphSettings, or one per structure; `rows`: the request row of each structure
    (default 0, 1, ...), so that callers featurizing a subset still name the user's rows.
    """
    rows = range(len(structures)) if rows is None else rows
    per_row = settings if isinstance(settings, (list, tuple)) else [settings] * len(structures)
    graphs, problems = [], []
    for row, structure, row_settings in zip(rows, structures, per_row):
        try:
            graphs.append(structure_to_graph(structure, row_settings))
        except VoltmodelsError as exc:
            problems.append(f"row {row}: {exc}")
    if problems:
        raise invalid("Invalid input: " + "; ".join(problems) + ".")
    return graphs


OUTPUT_COLUMNS = ("voltage", "voltage_lower", "voltage_upper", "model_name", "model_version", "model_id")


class CGCNNPredictor:
    """One ion's CGCNN as plain Python: checkpoint in, voltage table out.

    Shared by the per-ion pyfunc (CGCNNVoltageModel) and the multi-ion router (serving/router.py).
    """

    def __init__(self, checkpoint, model_name: str | None = None, model_version: str = "", model_id: str = ""):
        from voltmodels.model import load_checkpoint

        self.model, settings, self.meta = load_checkpoint(checkpoint)
        self.settings = GraphSettings.from_dict(settings)
        self.ion = self.meta["ion"]
        self.halfwidth = float(self.meta.get("conformal_halfwidth", np.nan))
        self.model_name = model_name or f"voltage-cgcnn-{self.ion}"
        self.model_version = str(model_version or "")
        self.model_id = model_id
        self.limits = DEFAULT_LIMITS

    def predict_graphs(self, graphs, structures, local_voltages: bool = False) -> pd.DataFrame:
        """Voltages, the conformal interval and who answered, for featurized structures (in order),
        `limits.chunk_rows` crystals per forward pass."""
        step = max(1, self.limits.chunk_rows)
        parts = [self._predict_chunk(graphs[i : i + step], structures[i : i + step], local_voltages) for i in range(0, len(graphs), step)]
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)

    def _predict_chunk(self, graphs, structures, local_voltages: bool) -> pd.DataFrame:
        import torch

        from voltmodels.graphs.batch import collate

        with torch.no_grad():
            batch = collate(graphs, self.settings)
            voltage = self.model.predict_volts(batch).numpy().astype(float)
            local = self.model.local_voltages(batch).numpy() if local_voltages else None
        out = pd.DataFrame(
            {
                "voltage": voltage,
                "voltage_lower": voltage - self.halfwidth,
                "voltage_upper": voltage + self.halfwidth,
                "model_name": self.model_name,
                "model_version": self.model_version,
                "model_id": self.model_id,
            }
        )
        if local is not None:
            crystal = batch.crystal_index.numpy()
            out["local_voltages"] = [
                json.dumps([{"site": int(i), "element": s[int(i)].specie.symbol, "local_voltage": round(float(v), 4)} for i, v in enumerate(local[crystal == k])])
                for k, s in enumerate(structures)
            ]
        return out

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        parsed = parse_rows(model_input, [self.ion], self.limits)
        structures = [s for s, _ in parsed]
        graphs = graphs_for_rows(structures, self.settings)
        return self.predict_graphs(graphs, structures, local_voltages=bool((params or {}).get("local_voltages")))


class CGCNNVoltageModel(mlflow.pyfunc.PythonModel):
    """One ion's CGCNN. Artifacts: `checkpoint` (voltmodels.model.save_checkpoint)."""

    def load_context(self, context):
        from serving.identity import served_identity
        from voltmodels.config import set_torch_threads

        set_torch_threads()
        self.predictor = p = CGCNNPredictor(context.artifacts["checkpoint"], *served_identity(context, "checkpoint"))
        p.limits = Limits.from_config(context.model_config)
        # The pre-refactor attributes, for callers that use them.
        self.model, self.settings, self.meta, self.ion = p.model, p.settings, p.meta, p.ion
        self.model_name, self.model_version = p.model_name, p.model_version

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return predict_rows(lambda frame: self.predictor.predict(frame, params), model_input, params, OUTPUT_COLUMNS)


def log_cgcnn_model(checkpoint: str, artifact_name: str, input_example: pd.DataFrame, registered_name: str):
    """Log the pyfunc (explicit requirements, code of this checkout) and return its ModelInfo."""
    from mlflow.models import infer_signature

    output_example = pd.DataFrame(
        {"voltage": [3.0], "voltage_lower": [2.5], "voltage_upper": [3.5], "model_name": [registered_name], "model_version": ["1"], "model_id": ["m-0"]}
    )
    signature = infer_signature(input_example, output_example, params={"local_voltages": False, "on_error": "raise"})
    return mlflow.pyfunc.log_model(
        name=artifact_name,
        python_model=model_code("cgcnn"),
        artifacts={"checkpoint": checkpoint},
        code_paths=PACKAGE_DIRS,
        pip_requirements=pip_requirements(),
        signature=signature,
        input_example=input_example,
        model_config={"model_name": registered_name},
    )
