"""The router pyfunc `voltage-predictor`: every ion's champion CGCNN behind one endpoint.

Rows are validated together (serving/inputs.py), dispatched by `working_ion` to that ion's
CGCNNPredictor (serving/cgcnn_model.py) and put back in request order; each row says which registered
model name and version answered. The member models' MLflow folders are bundled as artifacts, so a
served router needs no tracking server: the registry is read once, when the router is built.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd

from serving.cgcnn_model import PACKAGE_DIRS, CGCNNPredictor, graphs_for_rows, pip_requirements
from serving.inputs import parse_rows
from voltmodels.config import VoltmodelsError

ARTIFACT_PREFIX = "model_"
OUTPUT_COLUMNS = ("voltage", "voltage_lower", "voltage_upper", "model_name", "model_version", "working_ion")


def member_checkpoint(model_dir: str | Path) -> Path:
    """The CGCNN checkpoint inside a logged CGCNNVoltageModel folder (read from its MLmodel file)."""
    from mlflow.models import Model

    model_dir = Path(model_dir)
    flavor = Model.load(str(model_dir / "MLmodel")).flavors.get("python_function", {})
    checkpoint = (flavor.get("artifacts") or {}).get("checkpoint", {}).get("path")
    if not checkpoint or not (model_dir / checkpoint).is_file():
        raise VoltmodelsError(f"{model_dir} is not a CGCNN voltage model (its pyfunc flavor has no `checkpoint` artifact)")
    return model_dir / checkpoint


class VoltageRouter:
    """Plain-Python router over per-ion predictors: {ion: CGCNNPredictor}."""

    def __init__(self, predictors: dict[str, CGCNNPredictor]):
        if not predictors:
            raise VoltmodelsError("the router has no member models")
        self.predictors = dict(predictors)
        self.supported_ions = sorted(self.predictors)

    @classmethod
    def from_members(cls, members: dict[str, dict], folders: dict[str, str]) -> VoltageRouter:
        """members: {ion: {"name", "version"}}; folders: {ion: the member's MLflow model folder}."""
        return cls({ion: CGCNNPredictor(member_checkpoint(folders[ion]), info["name"], info["version"]) for ion, info in members.items()})

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        parsed = parse_rows(model_input, self.supported_ions)
        structures = [s for s, _ in parsed]
        ions = [ion for _, ion in parsed]
        # Featurize every row first (each with its ion's graph settings) so one error names all bad rows.
        graphs = graphs_for_rows(structures, [self.predictors[ion].settings for ion in ions])
        local = bool((params or {}).get("local_voltages"))
        parts = []
        for ion in dict.fromkeys(ions):  # ions in order of first appearance
            rows = [i for i, x in enumerate(ions) if x == ion]
            part = self.predictors[ion].predict_graphs([graphs[i] for i in rows], [structures[i] for i in rows], local_voltages=local)
            part.index = rows
            parts.append(part)
        out = parts[0] if len(parts) == 1 else pd.concat(parts)
        out = out.sort_index()
        out["working_ion"] = ions
        return out.reset_index(drop=True)


class VoltageRouterModel(mlflow.pyfunc.PythonModel):
    """Artifacts: `model_<ion>`, each ion's CGCNN model folder. model_config: {"models": {ion: {"name", "version", ...}}}."""

    def load_context(self, context):
        from voltmodels.config import set_torch_threads

        set_torch_threads()
        config = context.model_config or {}
        members = config.get("models") or {}
        folders = {ion: context.artifacts[ARTIFACT_PREFIX + ion] for ion in members}
        self.router = VoltageRouter.from_members(members, folders)
        self.supported_ions = self.router.supported_ions
        self.members = members

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return self.router.predict(model_input, params)


def router_input_example(folders: dict[str, str], per_ion: int = 1) -> pd.DataFrame:
    """Real CIFs: the first rows of each member's own logged input example (one ion per row)."""
    from mlflow.models import Model

    frames = []
    for ion, folder in folders.items():
        example = Model.load(str(Path(folder) / "MLmodel")).load_input_example(folder)
        if isinstance(example, pd.DataFrame) and {"structure", "working_ion"} <= set(example.columns):
            frames.append(example[["structure", "working_ion"]].head(per_ion))
    if not frames:
        raise VoltmodelsError("none of the member models has a logged input example with structure and working_ion columns")
    return pd.concat(frames, ignore_index=True)


def log_router_model(members: dict[str, dict], folders: dict[str, str], registered_name: str, next_version: str, name: str = "router"):
    """Log the router pyfunc with the members' folders bundled; return its ModelInfo.

    members: {ion: {"name", "version", ...}} (stored as model_config, read at load time);
    folders: {ion: local MLflow model folder of that member}.
    """
    from mlflow.models import infer_signature

    input_example = router_input_example(folders)
    output_example = pd.DataFrame(
        {"voltage": [3.0], "voltage_lower": [2.5], "voltage_upper": [3.5], "model_name": ["voltage-cgcnn-Li"], "model_version": ["1"], "working_ion": ["Li"]}
    )
    signature = infer_signature(input_example, output_example, params={"local_voltages": False})
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=VoltageRouterModel(),
        artifacts={ARTIFACT_PREFIX + ion: str(folder) for ion, folder in folders.items()},
        code_paths=PACKAGE_DIRS,
        pip_requirements=pip_requirements(),
        signature=signature,
        input_example=input_example,
        model_config={"router_name": registered_name, "router_version": next_version, "models": members},
    )
