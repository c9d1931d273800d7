"""The CGCNN pyfunc: structure in, voltage (with a 90 % interval) out; featurizes with the training code."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from serving.inputs import invalid, parse_rows
from voltmodels.graphs.featurize import GraphSettings, structure_to_graph
from voltmodels.config import VoltmodelsError

PACKAGE_DIRS = [str(Path(__file__).resolve().parent.parent / p) for p in ("voltmodels", "serving")]


def pip_requirements() -> list[str]:
    from importlib.metadata import version

    import sklearn
    import torch

    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"pymatgen=={version('pymatgen')}",
        f"scikit-learn=={sklearn.__version__}",
        "pandas<3",
        "numpy",
        "tqdm",
    ]


def graphs_for_rows(structures, settings: GraphSettings):
    """Graphs for validated structures, or one error naming every row that cannot be featurized."""
    graphs, problems = [], []
    for row, structure in enumerate(structures):
        try:
            graphs.append(structure_to_graph(structure, settings))
        except VoltmodelsError as exc:
            problems.append(f"row {row}: {exc}")
    if problems:
        raise invalid("Invalid input: " + "; ".join(problems) + ".")
    return graphs


class CGCNNVoltageModel(mlflow.pyfunc.PythonModel):
    """One ion's CGCNN. Artifacts: `checkpoint` (voltmodels.model.save_checkpoint)."""

    def load_context(self, context):
        from voltmodels.config import set_torch_threads
        from voltmodels.model import load_checkpoint

        set_torch_threads()
        self.model, settings, self.meta = load_checkpoint(context.artifacts["checkpoint"])
        self.settings = GraphSettings.from_dict(settings)
        self.ion = self.meta["ion"]
        config = context.model_config or {}
        self.model_name = config.get("model_name", f"voltage-cgcnn-{self.ion}")
        self.model_version = str(config.get("model_version", ""))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        import torch

        from voltmodels.graphs.batch import collate

        parsed = parse_rows(model_input, [self.ion])
        structures = [s for s, _ in parsed]
        graphs = graphs_for_rows(structures, self.settings)
        with torch.no_grad():
            batch = collate(graphs, self.settings)
            voltage = self.model.predict_volts(batch).numpy().astype(float)
            local = self.model.local_voltages(batch).numpy() if (params or {}).get("local_voltages") else None
        halfwidth = float(self.meta.get("conformal_halfwidth", np.nan))
        out = pd.DataFrame(
            {
                "voltage": voltage,
                "voltage_lower": voltage - halfwidth,
                "voltage_upper": voltage + halfwidth,
                "model_name": self.model_name,
                "model_version": self.model_version,
            }
        )
        if local is not None:
            crystal = batch.crystal_index.numpy()
            out["local_voltages"] = [
                json.dumps([{"site": int(i), "element": s[int(i)].specie.symbol, "local_voltage": round(float(v), 4)} for i, v in enumerate(local[crystal == k])])
                for k, s in enumerate(structures)
            ]
        return out


def log_cgcnn_model(checkpoint: str, ion: str, input_example: pd.DataFrame, registered_name: str, next_version: str):
    """Log the pyfunc (explicit requirements, code of this checkout) and return its ModelInfo."""
    from mlflow.models import infer_signature

    output_example = pd.DataFrame(
        {"voltage": [3.0], "voltage_lower": [2.5], "voltage_upper": [3.5], "model_name": [registered_name], "model_version": ["1"]}
    )
    signature = infer_signature(input_example, output_example, params={"local_voltages": False})
    return mlflow.pyfunc.log_model(
        name=f"cgcnn-{ion}",
        python_model=CGCNNVoltageModel(),
        artifacts={"checkpoint": checkpoint},
        code_paths=PACKAGE_DIRS,
        pip_requirements=pip_requirements(),
        signature=signature,
        input_example=input_example,
        model_config={"model_name": registered_name, "model_version": next_version},
    )
