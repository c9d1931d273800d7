"""The router pyfunc `voltage-predictor`: every ion's champion (a CGCNN or a universal-potential family) behind one endpoint.

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
from serving.inputs import invalid, parse_rows, predict_rows
from serving.limits import DEFAULT_LIMITS, Limits
from serving.model_code import model_code
from voltmodels.config import VoltmodelsError

ARTIFACT_PREFIX = "model_"
#: `mode`: "a" (a potential on both end members), "b" (a potential on the relaxed discharged structure
#: and its derived host), "discharged" (a CGCNN on the discharged structure as given). `relaxation`: in
#: mode (b), whether both relaxations converged within the step cap; "" otherwise.
OUTPUT_COLUMNS = ("voltage", "voltage_lower", "voltage_upper", "model_name", "model_version", "model_id", "working_ion", "mode", "family", "potential", "relaxation")


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
    """Plain-Python router over per-ion predictors: {ion: CGCNNPredictor or PotentialPredictor}."""

    def __init__(self, predictors: dict, limits: Limits = DEFAULT_LIMITS, index=None):
        if not predictors:
            raise VoltmodelsError("the router has no member models")
        self.predictors = dict(predictors)
        self.supported_ions = sorted(self.predictors)
        self.limits = limits
        self.index = index  # serving.structure_index.StructureIndex: rows by material_id
        for predictor in self.predictors.values():
            predictor.limits = limits

    @classmethod
    def from_members(cls, members: dict[str, dict], folders: dict[str, str], limits: Limits = DEFAULT_LIMITS, index=None) -> VoltageRouter:
        """members: {ion: {"name", "version"}}; folders: {ion: the member's MLflow model folder}."""
        return cls({ion: member_predictor(folders[ion], info["name"], info["version"], info.get("model_id", "")) for ion, info in members.items()}, limits, index)

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = model_input.reset_index(drop=True)
        if "material_id" in frame.columns:
            from serving.structure_index import StructureIndex

            frame, problems = (self.index or StructureIndex({}, {}, "none")).resolve(frame)
            if problems:
                raise invalid("Invalid input: " + "; ".join(problems) + ".")
        parsed = parse_rows(frame, self.supported_ions, self.limits)
        structures = [s for s, _ in parsed]
        ions = [ion for _, ion in parsed]
        # Featurize every CGCNN row first (each with its ion's graph settings) so one error names all bad rows.
        graph_rows = [i for i, ion in enumerate(ions) if isinstance(self.predictors[ion], CGCNNPredictor)]
        graphs = dict(zip(graph_rows, graphs_for_rows([structures[i] for i in graph_rows], [self.predictors[ions[i]].settings for i in graph_rows], rows=graph_rows)))
        local = bool((params or {}).get("local_voltages"))
        parts = []
        for ion in dict.fromkeys(ions):  # ions in order of first appearance
            rows = [i for i, x in enumerate(ions) if x == ion]
            predictor = self.predictors[ion]
            if isinstance(predictor, CGCNNPredictor):
                part = predictor.predict_graphs([graphs[i] for i in rows], [structures[i] for i in rows], local_voltages=local)
                part["mode"], part["relaxation"] = "discharged", ""
            else:
                part = predictor.predict(frame.iloc[rows])
            part.index = rows
            parts.append(part)
        out = parts[0] if len(parts) == 1 else pd.concat(parts)
        out = out.sort_index()
        out["working_ion"] = ions
        columns = [*OUTPUT_COLUMNS, *(["local_voltages"] if "local_voltages" in out.columns else [])]
        return out.reindex(columns=columns).reset_index(drop=True)


def member_predictor(model_dir: str | Path, name: str, version: str, model_id: str = ""):
    """The predictor of a member's MLflow model folder: a CGCNN or a universal-potential family."""
    from mlflow.models import Model

    from serving.potential_model import FAMILY_ARTIFACT, REGRESSOR_ARTIFACT, PotentialPredictor

    model_dir = Path(model_dir)
    artifacts = Model.load(str(model_dir / "MLmodel")).flavors.get("python_function", {}).get("artifacts") or {}
    if FAMILY_ARTIFACT in artifacts:
        regressor = artifacts.get(REGRESSOR_ARTIFACT, {}).get("path")
        return PotentialPredictor(model_dir / artifacts[FAMILY_ARTIFACT]["path"], model_dir / regressor if regressor else None, name, version, model_id)
    return CGCNNPredictor(member_checkpoint(model_dir), name, version, model_id)


class VoltageRouterModel(mlflow.pyfunc.PythonModel):
    """Artifacts: `model_<ion>`, each ion's CGCNN model folder. model_config: {"models": {ion: {"name", "version", ...}}}."""

    def load_context(self, context):
        from voltmodels.config import set_torch_threads

        set_torch_threads()
        config = context.model_config or {}
        members = config.get("models") or {}
        folders = {ion: context.artifacts[ARTIFACT_PREFIX + ion] for ion in members}
        from serving.structure_index import ARTIFACT, StructureIndex

        index = StructureIndex.load(context.artifacts[ARTIFACT]) if ARTIFACT in context.artifacts else None
        self.router = VoltageRouter.from_members(members, folders, Limits.from_config(config), index)
        from serving.potential_model import PotentialPredictor

        for predictor in self.router.predictors.values():
            if isinstance(predictor, PotentialPredictor):  # a CGCNN member is ready once loaded
                predictor.warm_up()
        self.supported_ions = self.router.supported_ions
        self.members = members

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return predict_rows(lambda frame: self.router.predict(frame, params), model_input, params, OUTPUT_COLUMNS)


def router_input_example(folders: dict[str, str], per_ion: int = 1) -> pd.DataFrame:
    """Real CIFs: the first rows of each member's own logged input example (one ion per row)."""
    from mlflow.models import Model

    frames = []
    for ion, folder in folders.items():
        example = Model.load(str(Path(folder) / "MLmodel")).load_input_example(folder)
        if isinstance(example, pd.DataFrame) and {"structure", "working_ion"} <= set(example.columns):
            own = example[example["working_ion"] == ion]
            frames.append((own if len(own) else example)[["structure", "working_ion"]].head(per_ion))
    if not frames:
        raise VoltmodelsError("none of the member models has a logged input example with structure and working_ion columns")
    return pd.concat(frames, ignore_index=True)


def log_router_model(members: dict[str, dict], folders: dict[str, str], registered_name: str, name: str = "router", index=None, limits: Limits = DEFAULT_LIMITS):
    """Log the router pyfunc with the members' folders bundled; return its ModelInfo.

    members: {ion: {"name", "version", ...}} (stored as model_config, read at load time);
    folders: {ion: local MLflow model folder of that member}; index: a StructureIndex for rows given
    by material_id (bundled as an artifact); limits: stored in model_config (serving/limits.py).
    """
    import tempfile

    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    from serving import potential_model

    input_example = router_input_example(folders)
    string, double = DataType.string, DataType.double
    signature = ModelSignature(
        inputs=Schema([ColSpec(string, "structure", required=False), ColSpec(string, "working_ion"), ColSpec(string, "structure_charged", required=False), ColSpec(string, "material_id", required=False)]),
        outputs=Schema(
            [ColSpec(double, c) for c in ("voltage", "voltage_lower", "voltage_upper")]
            + [ColSpec(string, c) for c in ("model_name", "model_version", "model_id", "working_ion", "mode")]
            + [ColSpec(string, c, required=False) for c in ("family", "potential", "relaxation", "local_voltages", "error")]
        ),
        params=ParamSchema([ParamSpec("local_voltages", DataType.boolean, False), ParamSpec("on_error", string, "raise")]),
    )
    from serving.structure_index import ARTIFACT

    uses_potential = any(isinstance(member_predictor(f, "", ""), potential_model.PotentialPredictor) for f in folders.values())
    artifacts = {ARTIFACT_PREFIX + ion: str(folder) for ion, folder in folders.items()}
    with tempfile.TemporaryDirectory() as tmp:
        if index is not None:
            artifacts[ARTIFACT] = str(index.save(Path(tmp) / "structure_index.json.gz"))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=model_code("router"),
            artifacts=artifacts,
            code_paths=PACKAGE_DIRS,
            pip_requirements=potential_model.pip_requirements() if uses_potential else pip_requirements(),
            signature=signature,
            input_example=input_example,
            model_config={"router_name": registered_name, "models": members, "limits": limits.to_dict()},
        )
